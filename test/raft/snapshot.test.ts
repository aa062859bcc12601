import { describe, expect, it } from "vitest"
import type { InstallSnapshot } from "../../src/raft/messages.ts"
import { snapshotMetaAt } from "../../src/raft/core.ts"
import { Cluster, text } from "./harness.ts"

const payloads = (n: number, prefix = "p") => Array.from({ length: n }, (_, i) => `${prefix}${i}`)

/** Leader 1 with 10 committed commands (indexes 3..12) that node 3 missed. */
function behind(trailing = 2) {
  const c = new Cluster({ config: { snapshotTrailingEntries: trailing } })
  c.elect(1)
  c.isolate(3)
  for (const p of payloads(10)) c.propose(1, p)
  c.stabilize()
  expect([c.node(1).committed, c.node(1).appliedIndex, c.node(3).lastIndex]).toEqual([12, 12, 2])
  return c
}

describe("snapshots", () => {
  it("SnapshotTaken compacts the log, keeping snapshotTrailingEntries below the snapshot", () => {
    const c = behind(2)
    const meta = c.takeSnapshot(1, 12)
    const ready = c.node(1).readies[c.node(1).readies.length - 1]
    expect(meta).toMatchObject({ index: 12, term: 2 })
    expect(meta.config.members.map((m) => m.id)).toEqual([1, 2, 3])
    expect(ready?.compactUpTo).toEqual({ index: 10, term: 2 })
    expect(c.node(1).state.log.base).toEqual({ index: 10, term: 2 })
    expect(c.node(1).state.log.entries.map((e) => e.index)).toEqual([11, 12])
    expect(c.node(1).disk.base).toEqual({ index: 10, term: 2 })
    expect(c.node(1).disk.entries.map((e) => e.index)).toEqual([11, 12])
  })

  it("SnapshotTaken's keepFrom keeps the entries the state machine's files need, down to snapshotKeepForReplayEntriesMax", () => {
    const compactedTo = (keepFrom: number | undefined, keepMax: number) => {
      const c = new Cluster({ config: { snapshotTrailingEntries: 2, snapshotKeepForReplayEntriesMax: keepMax } })
      c.elect(1)
      for (const p of payloads(10)) c.propose(1, p)
      c.stabilize()
      const meta = snapshotMetaAt(c.node(1).state, 12)
      c.step(1, { _tag: "SnapshotTaken", meta, ...(keepFrom !== undefined ? { keepFrom } : {}) })
      return [c.node(1).state.log.base.index, c.node(1).disk.base.index]
    }
    // The files need entries from 6 on: 1..5 go, not 1..10.
    expect(compactedTo(6, 100)).toEqual([5, 5])
    // They need nothing the trailing entries do not keep anyway.
    expect(compactedTo(12, 100)).toEqual([10, 10])
    // Far behind: kept only down to the bound below the snapshot (12 − 4).
    expect(compactedTo(1, 4)).toEqual([8, 8])
    // A bound of 0 keeps nothing more; no keepFrom, as before.
    expect(compactedTo(1, 0)).toEqual([10, 10])
    expect(compactedTo(undefined, 100)).toEqual([10, 10])
  })

  it("an older or equal snapshot changes nothing; a small one may compact nothing", () => {
    const c = behind(2)
    c.takeSnapshot(1, 12)
    c.step(1, { _tag: "SnapshotTaken", meta: { index: 8, term: 2, config: c.membership } })
    expect(c.node(1).state.snapshot?.index).toBe(12)
    expect(c.node(1).state.log.base.index).toBe(10)
    // Another node, trailing 64: a snapshot at 12 keeps everything.
    const d = behind(64)
    d.takeSnapshot(2)
    const ready = d.node(2).readies[d.node(2).readies.length - 1]
    expect(ready?.compactUpTo).toBe(null)
    expect(d.node(2).state.snapshot?.index).toBe(12)
    expect(d.node(2).state.log.base.index).toBe(0)
  })

  it("a snapshot of an index not yet applied is a defect", () => {
    const c = behind()
    expect(() => c.step(1, { _tag: "SnapshotTaken", meta: { index: 13, term: 2, config: c.membership } })).toThrow(/beyond applied/)
  })

  it("a follower behind the compaction point gets InstallSnapshot, restores, and replication continues", () => {
    const c = behind(2)
    const meta = c.takeSnapshot(1, 12)
    c.heal()
    c.run(3)
    const installs = c.node(1).readies.flatMap((r) => r.messages).filter((m): m is InstallSnapshot => m._tag === "InstallSnapshot")
    expect(installs.map((m) => [m.to, m.meta])).toEqual([[3, meta]])
    // Node 3 replaced its log with the snapshot's position (the Ready says so, and its disk).
    const restored = c.node(3).readies.filter((r) => r.snapshot !== null)
    expect(restored.map((r) => r.snapshot)).toEqual([meta])
    expect(restored[0]?.entries).toEqual([])
    expect(c.node(3).disk.snapshot).toEqual(meta)
    expect(c.node(3).state.log.base).toEqual({ index: 12, term: 2 })
    expect([c.node(3).committed, c.node(3).state.log.applied]).toEqual([12, 12])
    expect(c.node(3).applied.map((e) => e.index)).toEqual([1, 2]) // the rest came as the snapshot
    // New entries flow to it as appends after the snapshot, and commit with its help.
    c.isolate(2)
    c.propose(1, "after")
    c.stabilize()
    expect(c.node(3).state.log.entries.map((e) => e.index)).toEqual([13])
    expect(c.node(1).committed).toBe(13)
    c.run(1)
    expect(c.node(3).applied.map(text)).toEqual([null, null, "after"])
  })

  it("a follower that is only slightly behind gets entries, not a snapshot", () => {
    const c = new Cluster({ config: { snapshotTrailingEntries: 4 } })
    c.elect(1)
    for (const p of payloads(4)) c.propose(1, p)
    c.stabilize()
    c.run(1)
    c.isolate(3)
    c.propose(1, "a", "b")
    c.stabilize()
    c.takeSnapshot(1, 8)
    expect(c.node(1).state.log.base.index).toBe(4)
    c.heal()
    c.run(3)
    expect(c.node(1).readies.some((r) => r.messages.some((m) => m._tag === "InstallSnapshot"))).toBe(false)
    expect(c.node(3).committed).toBe(8)
  })

  it("a lost InstallSnapshot is offered again after snapshotRetryTicks", () => {
    const c = new Cluster({ config: { snapshotTrailingEntries: 0, snapshotRetryTicks: 5 } })
    c.elect(1)
    c.isolate(3)
    for (const p of payloads(3)) c.propose(1, p)
    c.stabilize()
    c.takeSnapshot(1)
    c.heal()
    const lost = (m: { _tag: string }) => m._tag === "InstallSnapshot"
    c.filters.push(lost)
    c.run(3)
    const sent = () => c.node(1).readies.flatMap((r) => r.messages).filter((m) => m._tag === "InstallSnapshot").length
    expect(sent()).toBe(1)
    expect(c.node(1).state.progress.get(3)?.state).toBe("snapshot")
    c.heal()
    c.run(1)
    expect(sent()).toBe(1) // still waiting for the answer
    c.run(5)
    expect(sent()).toBe(2)
    expect(c.node(3).committed).toBe(5)
  })

  it("an InstallSnapshot at or below the follower's commit is ignored (answered with its commit)", () => {
    const c = behind()
    c.run(1)
    const ready = c.step(2, { _tag: "Message", message: { _tag: "InstallSnapshot", from: 1, to: 2, term: 2, meta: { index: 10, term: 2, config: c.membership } } })
    expect(ready.snapshot).toBe(null)
    expect(ready.messagesAfterPersist).toEqual([{ _tag: "InstallSnapshotResponse", from: 2, to: 1, term: 2, index: 12 }])
    expect(c.node(2).state.log.base.index).toBe(0)
  })

  it("a follower that already holds the snapshot's entries keeps its log and only commits", () => {
    const c = new Cluster()
    c.elect(1)
    // Node 2 receives 3..12 but has not heard that they committed.
    c.propose(1, ...payloads(10))
    c.deliver((m) => m.to === 2)
    c.queue = []
    const committedBefore = c.node(2).committed
    const ready = c.step(2, { _tag: "Message", message: { _tag: "InstallSnapshot", from: 1, to: 2, term: 2, meta: { index: 12, term: 2, config: c.membership } } })
    expect(committedBefore).toBeLessThan(12)
    expect(ready.snapshot).toBe(null)
    expect(c.node(2).committed).toBe(12)
    expect(c.node(2).lastIndex).toBe(12)
    expect(c.node(2).state.log.base.index).toBe(0)
  })

  it("a node restarted from a compacted disk keeps working", () => {
    const c = behind(2)
    c.takeSnapshot(1, 12)
    c.heal()
    c.run(3)
    c.restart(1)
    expect(c.node(1).state.log.base).toEqual({ index: 10, term: 2 })
    expect(c.node(1).state.snapshot?.index).toBe(12)
    const leader = c.runUntilLeader(100)
    c.propose(leader, "later")
    c.run(3)
    for (const n of c.nodes.values()) expect(n.committed).toBe(c.node(leader).lastIndex)
  })
})
