// The core's entry cache: at most entryCacheBytesMax bytes of durable command data in memory,
// read-backs (Ready.loads → EntriesLoaded) for a follower far behind or the applier, and the
// bookkeeping kept right through truncation, compaction and snapshots.
import { describe, expect, it } from "vitest"
import { cacheProblem, lastIndex } from "../../src/raft/log.ts"
import type { Entry } from "../../src/raft/types.ts"
import { Cluster, text } from "./harness.ts"

const payload = (i: number) => `entry-${String(i).padStart(4, "0")}` // 10 bytes each

/** Every node's cache bookkeeping is right and within its bound (entries not yet durable may
 * exceed it; the harness persists at once unless a node holds persistence). */
function checkCaches(c: Cluster, bytesMax: number): void {
  for (const node of c.nodes.values()) {
    expect(cacheProblem(node.state.log), `node ${node.id}`).toBeNull()
    if (!node.holdPersist) expect(node.state.log.residentBytes, `node ${node.id}`).toBeLessThanOrEqual(bytesMax)
  }
}

const appliedTexts = (entries: ReadonlyArray<Entry>) => entries.map(text).filter((t): t is string => t !== null)

describe("entry cache", () => {
  it("a follower far behind is caught up from entries evicted from the leader's memory", () => {
    const bytesMax = 50
    const c = new Cluster({ config: { entryCacheBytesMax: bytesMax, entryLoadBytesMax: 200 } })
    c.elect(1)
    c.isolate(3)
    const count = 300
    for (let i = 0; i < count; i += 10) {
      c.propose(1, ...Array.from({ length: 10 }, (_, k) => payload(i + k)))
      c.stabilize()
      checkCaches(c, bytesMax)
    }
    const leader = c.node(1)
    // Only the newest 5 entries' data (5 × 10 bytes) stay; the others are metadata.
    expect(leader.state.log.residentBytes).toBe(50)
    expect(leader.state.log.entries.filter((e) => e.kind === "evicted").length).toBeGreaterThan(count - 10)
    const asked = leader.loadsAsked
    c.heal()
    for (let round = 0; round < 200 && c.node(3).state.log.applied < lastIndex(leader.state.log); round++) {
      c.run(1)
      checkCaches(c, bytesMax)
    }
    const follower = c.node(3)
    expect(follower.state.log.applied).toBe(lastIndex(leader.state.log))
    expect(appliedTexts(follower.applied)).toEqual(Array.from({ length: count }, (_, i) => payload(i)))
    expect(appliedTexts(follower.applied)).toEqual(appliedTexts(leader.applied))
    // Catching up took many bounded read-backs (200 bytes ≈ 4 entries of 42 bytes each).
    expect(leader.loadsAsked - asked).toBeGreaterThan(count / 5)
  })

  it("a stale or mismatched read-back is dropped, and the entries are asked for again after a tick", () => {
    const c = new Cluster({ config: { entryCacheBytesMax: 10, entryLoadBytesMax: 1000 } })
    c.elect(1)
    c.isolate(3)
    c.propose(1, "a1", "a2", "a3", "a4", "a5", "a6", "a7", "a8")
    c.stabilize()
    const leader = c.node(1)
    leader.holdLoads = true
    c.heal()
    c.run(2)
    const [load] = leader.loads
    expect(load).toBeDefined()
    if (load === undefined) return
    leader.loads = []
    // An answer with the wrong sequence number changes nothing.
    const right = leader.disk.entries.filter((e) => e.index >= load.lo && e.index <= load.hi)
    c.step(1, { _tag: "EntriesLoaded", seq: load.seq + 100, entries: right })
    expect(leader.state.entryLoad?.seq).toBe(load.seq)
    // Entries whose term does not match the log (a read of another log) are not used.
    const wrong = right.map((e) => ({ ...e, term: e.term + 1 }))
    const sent = c.queue.length
    c.step(1, { _tag: "EntriesLoaded", seq: load.seq, entries: wrong })
    expect(c.queue.length).toBe(sent)
    expect(leader.state.entryLoad).toBeNull()
    // Not asked again before a tick (no busy loop on a store that cannot answer)...
    c.step(1, { _tag: "Drain" })
    expect(leader.loads).toEqual([])
    // ...then asked again, and served.
    c.tick(1)
    expect(leader.loads.length).toBe(1)
    leader.holdLoads = false
    c.serveLoads(1)
    for (let i = 0; i < 20; i++) c.run(1)
    expect(c.node(3).state.log.applied).toBe(lastIndex(leader.state.log))
    expect(appliedTexts(c.node(3).applied)).toEqual(["a1", "a2", "a3", "a4", "a5", "a6", "a7", "a8"])
  })

  it("an applier at its in-flight bound is fed no read-back it cannot take: none is asked for until it reports progress", () => {
    // 42-byte entries: the applier takes a few, then waits (as while it takes a snapshot).
    const c = new Cluster({ config: { entryCacheBytesMax: 10, entryLoadBytesMax: 1000, applyInflightBytesMax: 150 } })
    c.elect(1)
    const follower = c.node(2)
    // Past the leader's barrier first, its applier reporting; then it stops reporting.
    follower.reportApplied = true
    c.propose(1, payload(0))
    c.stabilize()
    follower.reportApplied = false
    follower.holdLoads = true
    const count = 12
    c.propose(1, ...Array.from({ length: count - 1 }, (_, i) => payload(i + 1)))
    c.stabilize()
    const handed = follower.appliedIndex
    expect(handed).toBeLessThan(follower.state.log.committed)
    // Whatever it asked is served, and it steps on: it asks for nothing more (before the fix,
    // one read-back per step, each dropped unused: a busy loop).
    let asked = 0
    for (let round = 0; round < 20; round++) {
      const before = follower.loadsAsked
      c.serveLoads(2)
      c.step(2, { _tag: "Drain" })
      asked += follower.loadsAsked - before
    }
    // The read-back it was waiting for fed the applier up to its bound; nothing more was asked.
    expect(asked).toBeLessThanOrEqual(1)
    expect(follower.state.applyInflightBytes).toBeGreaterThanOrEqual(150)
    expect(follower.appliedIndex).toBeLessThan(follower.state.log.committed)
    // Progress reported: the rest is read back and applied, in order.
    follower.reportApplied = true
    c.step(2, { _tag: "Applied", index: follower.appliedIndex })
    for (let round = 0; round < 100 && follower.appliedIndex < follower.state.log.committed; round++) {
      c.serveLoads(2)
      c.step(2, { _tag: "Drain" })
    }
    expect(follower.appliedIndex).toBe(follower.state.log.committed)
    expect(appliedTexts(follower.applied)).toEqual(Array.from({ length: count }, (_, i) => payload(i)))
  })

  it("a read-back that is never answered is asked for again after entryLoadTimeoutTicks", () => {
    const c = new Cluster({ config: { entryCacheBytesMax: 4, entryLoadTimeoutTicks: 5 } })
    c.elect(1)
    c.isolate(3)
    c.propose(1, "b1", "b2", "b3", "b4")
    c.stabilize()
    const leader = c.node(1)
    leader.holdLoads = true
    c.heal()
    c.run(1)
    const first = leader.loads[0]
    expect(first).toBeDefined()
    leader.loads = [] // lost
    c.tick(1, 4)
    expect(leader.loads).toEqual([])
    c.tick(1, 1)
    expect(leader.loads.length).toBe(1)
    expect(leader.loads[0]?.seq).toBeGreaterThan(first?.seq ?? 0)
  })

  it("evicted entries that a new leader's log conflicts with are truncated with their bookkeeping", () => {
    const c = new Cluster({ config: { entryCacheBytesMax: 4, checkQuorum: false, preVote: false } })
    c.elect(1)
    // Entries only the old leader holds (persisted, so evicted, never committed).
    c.isolate(1)
    c.propose(1, "x1", "x2", "x3", "x4", "x5")
    c.stabilize()
    expect(c.node(1).state.log.entries.some((e) => e.kind === "evicted" && e.index > c.node(1).state.log.committed)).toBe(true)
    c.heal()
    c.isolate(1)
    c.elect(2)
    c.propose(2, "y1", "y2")
    c.stabilize()
    c.heal()
    for (let i = 0; i < 30; i++) c.run(1)
    checkCaches(c, 4)
    for (const id of [1, 2, 3]) {
      expect(appliedTexts(c.node(id).applied)).toEqual(["y1", "y2"])
    }
  })

  it("compaction and a snapshot install keep the bookkeeping right", () => {
    const c = new Cluster({ config: { entryCacheBytesMax: 20, snapshotTrailingEntries: 2 } })
    c.elect(1)
    c.isolate(3)
    for (let i = 0; i < 30; i++) c.propose(1, payload(i))
    c.stabilize()
    c.takeSnapshot(1)
    c.takeSnapshot(2)
    checkCaches(c, 20)
    c.heal()
    for (let i = 0; i < 60; i++) c.run(1)
    checkCaches(c, 20)
    expect(c.node(3).state.log.applied).toBe(lastIndex(c.node(1).state.log))
  })

  it("a restarted node holds no more than its cache of what it recovered", () => {
    const c = new Cluster({ config: { entryCacheBytesMax: 30 } })
    c.elect(1)
    c.propose(1, ...Array.from({ length: 20 }, (_, i) => payload(i)))
    c.stabilize()
    const node = c.restart(2)
    expect(cacheProblem(node.state.log)).toBeNull()
    expect(node.state.log.residentBytes).toBe(30)
    c.run(20)
    expect(node.state.log.applied).toBe(lastIndex(c.node(1).state.log))
    expect(appliedTexts(node.applied)).toEqual(Array.from({ length: 20 }, (_, i) => payload(i)))
  })
})
