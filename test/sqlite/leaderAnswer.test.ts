// How a committed write reaches its client on the leader: the writer proposes from the fiber that
// drives its core and learns the applied result by callback in the applier's turn (RaftNode
// proposeNow), so its worker fiber is not resumed to propose nor to hear the outcome; and a batch
// that already holds every client answered after the last entry closes without a flush. Counted with
// a Supervisor (as `npm run bench -- opcount` does) over sequential single-statement writes on a
// 3-node cluster in simulated time.
import { Effect, FiberRef, HashMap } from "effect"
import { counted, FiberCounts } from "../fiberCounts.ts"
import { afterAll, describe, expect, it } from "vitest"
import { countedInserts, makeCluster, simulate } from "./clusterHelpers.ts"
import { tempDirectory } from "./helpers.ts"

const dirs: Array<{ remove(): void }> = []
afterAll(() => dirs.forEach((d) => d.remove()))

const writes = 30

/** Sequential single-statement writes from one session: resumptions of the writer's fibers per
 * write, and the rows they left. */
function writerResumptionsPerWrite(proposeNow: boolean): { perWrite: number; entries: number; rows: unknown } {
  const dir = tempDirectory("tqlite-leader-answer-")
  dirs.push(dir)
  // The leader's writer fibers: those with the `writer` log annotation.
  const counter = new FiberCounts(["writer"], (fiber) => (HashMap.has(fiber.getFiberRef(FiberRef.currentLogAnnotations), "writer") ? "writer" : null))
  const result = simulate(
    counted(counter, Effect.gen(function*() {
      // Without proposeNow the writer proposes through its worker (the shell's other path, kept
      // for a full mailbox, a delayed retry or a large entry).
      const cluster = makeCluster(dir.path, proposeNow ? {} : { databasesBugs: { proposeThroughWorker: true } })
      yield* cluster.bootstrap([1, 2, 3])
      const leader = yield* cluster.awaitLeader()
      const { entries, rows } = yield* countedInserts(leader, counter, writes)
      yield* cluster.shutdown()
      return { entries, rows }
    }))
  )
  return { perWrite: counter.resumptions.writer / writes, entries: result.entries, rows: result.rows }
}

describe("the leader answers a committed write", () => {
  it("without resuming the writer's worker to propose it or to hear it was applied", () => {
    const now = writerResumptionsPerWrite(true)
    const throughWorker = writerResumptionsPerWrite(false)
    // Every write is its own entry, and all of them committed.
    expect(now.entries).toBe(writes)
    expect(now.rows).toEqual([[BigInt(writes)]])
    expect(throughWorker.entries).toBe(writes)
    expect(throughWorker.rows).toEqual([[BigInt(writes)]])
    // One client in a loop: its next statement is back in the batch before the batch closes, so
    // no flush (which woke the worker and yielded: 2 resumptions a write); proposed now, the
    // applied result comes by callback: no resumption of the worker at all (0 measured). Through
    // the worker it is woken to propose and resumed when the entry is applied (2 measured).
    expect(now.perWrite).toBeLessThanOrEqual(0.5)
    expect(throughWorker.perWrite - now.perWrite).toBeGreaterThanOrEqual(1.5)
  })
})
