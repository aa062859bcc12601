// What one committed entry costs the appliers in Effect operations and fiber resumptions: their
// fibers (the `actor` log annotation ending in "/applier"), counted with a Supervisor as `npm run
// bench -- opcount` counts a node's actors, over sequential single-statement writes on a 3-node
// SQLite cluster in simulated time. The leader's applier marks its own entries committed, the
// followers' write pages and fdatasync them every few entries; the steady state is plain code,
// so what is left per batch is the mailbox's wake-up of the applier's fiber.
import { Effect } from "effect"
import { actorOf, counted, FiberCounts } from "../fiberCounts.ts"
import { afterAll, describe, expect, it } from "vitest"
import { contentOf, countedInserts, filesOf, makeCluster, simulate } from "../sqlite/clusterHelpers.ts"
import { tempDirectory } from "../sqlite/helpers.ts"

const dirs: Array<{ remove(): void }> = []
afterAll(() => dirs.forEach((d) => d.remove()))

const writes = 40

describe("the applier: the cost of a committed entry", () => {
  it("costs the three nodes' appliers at most 40 Effect operations and 4 resumptions an entry", () => {
    const dir = tempDirectory("tqlite-applier-cost-")
    dirs.push(dir)
    // The appliers' fibers: the `actor` annotation ending in "/applier".
    const counter = new FiberCounts(["applier"], (fiber) => (actorOf(fiber)?.endsWith("/applier") ? "applier" : null))
    const result = simulate(
      counted(counter, Effect.gen(function*() {
        // Followers fdatasync their pages every 8 entries: the sync's Effect path is counted too.
        const cluster = makeCluster(dir.path, { syncEveryEntries: 8 })
        yield* cluster.bootstrap([1, 2, 3])
        const leader = yield* cluster.awaitLeader()
        const { entries, rows } = yield* countedInserts(leader, counter, writes)
        // Every node applied them: each file holds the same rows once all is applied.
        expect(yield* cluster.awaitConverged()).toBe(true)
        const contents = filesOf(cluster).map((file) => contentOf(file.path))
        yield* cluster.shutdown()
        return { entries, rows, contents }
      }))
    )
    expect(result.rows).toEqual([[BigInt(writes)]])
    expect(result.entries).toBe(writes)
    expect(result.contents[0]!.length).toBeGreaterThan(100)
    expect(new Set(result.contents).size).toBe(1)
    // Measured 31.5 operations and 3.0 resumptions an entry: 15 for the three mailbox wake-ups
    // (one resumption each), 16.5 for the followers' syncs (each ~66, every 8 entries). Before the
    // plain path: 160 and 6.0 (an Effect.gen per batch, an Effect per entry, a semaphore per sync).
    expect(counter.ops.applier / writes).toBeGreaterThan(2)
    expect(counter.ops.applier / writes).toBeLessThanOrEqual(40)
    expect(counter.resumptions.applier / writes).toBeLessThanOrEqual(4)
  })
})
