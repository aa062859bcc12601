// The driver's lease on the node's monotonic clock, in the full simulator's cluster: a leader
// answers a read at once while its lease holds, and when its timers stall (its ticks stop, as in
// a blocked event loop) it stops doing so once its clock says the lease is over, although its
// tick count still says it holds. The read then goes through a ReadIndex round and still answers.
import type { Duration } from "effect"
import { Clock, Effect, Exit, Fiber } from "effect"
import { describe, expect, it } from "vitest"
import type { NodeId } from "../../src/raft/types.ts"
import { SafetyChecker } from "./checkers/safety.ts"
import { FullCluster, tickMs } from "./full/FullCluster.ts"
import { runSimulated } from "./full/SimRuntime.ts"
import { encodeCommand } from "./kv.ts"
import { Prng } from "./Prng.ts"

/** A node's clock whose sleeps never end while `stalled` (time itself goes on). */
class StallableClock implements Clock.Clock {
  readonly [Clock.ClockTypeId]: Clock.ClockTypeId = Clock.ClockTypeId
  stalled = false
  constructor(private readonly base: Clock.Clock) {}
  unsafeCurrentTimeMillis(): number {
    return this.base.unsafeCurrentTimeMillis()
  }
  readonly currentTimeMillis = Effect.sync(() => this.base.unsafeCurrentTimeMillis())
  unsafeCurrentTimeNanos(): bigint {
    return this.base.unsafeCurrentTimeNanos()
  }
  readonly currentTimeNanos = Effect.sync(() => this.base.unsafeCurrentTimeNanos())
  sleep(duration: Duration.Duration): Effect.Effect<void> {
    return Effect.suspend(() => (this.stalled ? Effect.never : this.base.sleep(duration)))
  }
}

describe("the lease on the node's clock", () => {
  it("serves reads at once while it holds, and not once the clock says it is over though ticks stopped", () => {
    const clocks = new Map<NodeId, StallableClock>()
    const outcome = runSimulated(
      Effect.gen(function*() {
        const knobs = { dropProbability: 0, delayTicksMax: 1, snapshotEveryEntries: 1000, clockDriftMax: 0 }
        const cluster = new FullCluster(new Prng(1), knobs, new SafetyChecker(), () => {}, null, (id, clock) => {
          const stallable = new StallableClock(clock)
          clocks.set(id, stallable)
          return stallable
        })
        const step = Effect.gen(function*() {
          cluster.tick++
          yield* cluster.deliverDue()
          yield* Effect.sleep(tickMs)
        })
        yield* cluster.bootstrap([1, 2, 3])
        const leaderNow = Effect.gen(function*() {
          for (const node of cluster.up()) if ((yield* node.raft.status).role === "leader") return node
          return undefined
        })
        let leader = yield* leaderNow
        for (let t = 0; t < 200 && leader === undefined; t++) {
          yield* step
          leader = yield* leaderNow
        }
        if (leader === undefined) return yield* Effect.dieMessage("no leader")
        const write = yield* Effect.fork(leader.raft.propose(encodeCommand({ op: 1, kind: "write", key: "k", value: "v1" })))
        for (let t = 0; t < 20 && write.unsafePoll() === null; t++) yield* step
        expect(Exit.isSuccess(yield* Fiber.await(write))).toBe(true)
        for (let t = 0; t < 3; t++) yield* step

        /** Starts a read and says whether it answered without any time passing. */
        const readAtOnce = Effect.gen(function*() {
          const read = yield* Effect.fork(leader.raft.read((sm) => sm.read("k")))
          yield* Effect.yieldNow()
          const immediate = read.unsafePoll() !== null
          for (let t = 0; t < 30 && read.unsafePoll() === null; t++) yield* step
          return { immediate, value: yield* Fiber.join(read) }
        })
        const healthy = yield* readAtOnce
        // The leader's timers stall: no more ticks (nor heartbeats), while time goes on past the
        // lease (8 ticks) but not past the followers' election timeout (10 ticks).
        clocks.get(leader.id)!.stalled = true
        for (let t = 0; t < 9; t++) yield* step
        const statusStalled = yield* leader.raft.status
        clocks.get(leader.id)!.stalled = false
        const stalledRead = yield* readAtOnce
        return { healthy, statusStalled, stalledRead }
      }),
      { tasksPerInstantMax: 1_000_000 }
    )
    if (Exit.isFailure(outcome)) throw new Error(String(outcome.cause))
    const { healthy, statusStalled, stalledRead } = outcome.value
    expect(healthy).toEqual({ immediate: true, value: "v1" })
    expect(statusStalled.role).toBe("leader")
    // Its tick count alone still held the lease; its clock did not: a ReadIndex round answered.
    expect(stalledRead).toEqual({ immediate: false, value: "v1" })
  })
})
