// bench/stallCauses.ts: each slow small write is charged to what overlapped it (made-up stamps).
import { describe, expect, it } from "vitest"
import type { Stamp } from "../../bench/stallCauses.ts"
import { attributeStalls, memoryPeaks } from "../../bench/stallCauses.ts"

const ms = 1e6
const w = (fromMs: number, toMs: number) => ({ startNs: fromMs * ms, endNs: toMs * ms })

describe("stall attribution", () => {
  it("separates waits behind a load transaction from checkpoints, snapshots, applies and GCs", () => {
    const leader: Array<Stamp> = [
      ["snapshot.take.start", 2_000 * ms, 10],
      ["snapshot.take.end", 2_500 * ms, 10],
      ["writer.checkpoint.ms", 3_150 * ms, 100], // ran 3050..3150
      ["loop.held", 3_160 * ms, 120],
      ["loop.held.cpu", 3_160 * ms, 15],
      ["mem.rss", 3_200 * ms, 250],
      ["mem.rss", 3_300 * ms, 280]
    ]
    const follower: Array<Stamp> = [
      ["machine.apply.ms", 4_100 * ms, 80],
      ["machine.apply.ms", 4_400 * ms, 5],
      ["gc.ms", 5_050 * ms, 30],
      // An append whose fsync took 200 ms (an index covered by a later sync), and a quick one.
      ["log.write", 7_000 * ms, 41],
      ["log.write", 7_010 * ms, 42],
      ["log.synced", 7_200 * ms, 42],
      ["log.write", 7_300 * ms, 43],
      ["log.synced", 7_305 * ms, 43]
    ]
    const writes = [
      w(0, 10), // fast
      w(1_000, 1_400), // behind the load transaction
      w(2_100, 2_300), // during the snapshot
      w(3_000, 3_200), // during the checkpoint
      w(4_020, 4_150), // during a long apply
      w(4_390, 4_500), // a short apply (under the 20 ms floor): nothing known
      w(5_000, 5_120), // a GC
      w(6_000, 6_050), // fast, no load
      w(7_050, 7_250), // the slow fsync
      w(7_290, 7_410) // the quick fsync: nothing known
    ]
    const a = attributeStalls(writes, [w(900, 1_300)], new Map([["n1", leader], ["n2", follower]]))
    expect(a.slowCount).toBe(8)
    expect(a.byCause.load).toEqual({ count: 1, maxMs: 400 })
    expect(a.byCause.snapshot).toEqual({ count: 1, maxMs: 200 })
    expect(a.byCause.checkpoint).toEqual({ count: 1, maxMs: 200 })
    expect(a.byCause.apply).toEqual({ count: 1, maxMs: 130 })
    expect(a.byCause.gc).toEqual({ count: 1, maxMs: 120 })
    expect(a.byCause.fsync).toEqual({ count: 1, maxMs: 200 })
    expect(a.byCause.none).toEqual({ count: 2, maxMs: 120 })
    expect(a.noLoad).toEqual({ withSnapshotOrCheckpointMaxMs: 200, withoutMaxMs: 200, writes: 9 })
    expect(a.slowest[0]!.ms).toBe(400)
    const checkpointed = a.slowest.find((s) => s.causes.includes("checkpoint"))!
    expect(checkpointed.heldBy).toEqual({ node: "n1", ms: 120, cpuMs: 15, inside: "writer.checkpoint.ms[100]" })
    expect(memoryPeaks(leader)).toEqual({ rss: 280 })
    // One hold of n1 (120 ms, 15 ms of CPU: waiting), none on n2.
    expect(a.holds).toEqual({ n1: { count: 1, maxMs: 120, computingMaxMs: 0, computingCount: 0 }, n2: { count: 0, maxMs: 0, computingMaxMs: 0, computingCount: 0 } })
  })
})
