import { describe, expect, it } from "vitest"
import { applyPending, snapshotMetaAt } from "../../src/raft/core.ts"
import type { Entry } from "../../src/raft/types.ts"
import { entryHeaderBytes, entrySizeBytes } from "../../src/raft/types.ts"
import { Cluster, text } from "./harness.ts"

describe("handing committed entries to the state machine", () => {
  it("applyEntriesMax bounds each Ready; Drain hands out the rest, in order", () => {
    const c = new Cluster({ ids: [1], config: { applyEntriesMax: 3 } })
    c.elect(1)
    const sizes: number[] = []
    c.observer = (_id, _input, ready) => {
      if (ready.committed.length > 0) sizes.push(ready.committed.length)
    }
    c.propose(1, ...Array.from({ length: 10 }, (_, i) => `p${i}`))
    expect(c.node(1).committed).toBe(12)
    expect(sizes).toEqual([3])
    expect(applyPending(c.node(1).state)).toBe(true)
    while (applyPending(c.node(1).state)) c.step(1, { _tag: "Drain" })
    expect(sizes).toEqual([3, 3, 3, 1])
    expect(c.node(1).applied.map((e) => e.index)).toEqual(Array.from({ length: 12 }, (_, i) => i + 1))
    expect(c.node(1).applied.slice(2).map(text)).toEqual(Array.from({ length: 10 }, (_, i) => `p${i}`))
  })

  it("snapshotMetaAt names the configuration in effect at the index", () => {
    const c = new Cluster({ ids: [1] })
    c.elect(1)
    c.step(1, { _tag: "ChangeMembership", id: 1, change: { kind: "add", node: 2, address: "node2", role: "spare" } })
    c.propose(1, "a")
    const s = c.node(1).state
    expect(snapshotMetaAt(s, 2).config.members.map((m) => m.id)).toEqual([1])
    expect(snapshotMetaAt(s, 3).config.members.map((m) => m.id)).toEqual([1, 2])
    expect(snapshotMetaAt(s, 4)).toMatchObject({ index: 4, term: 2 })
    expect(() => snapshotMetaAt(s, 5)).toThrow(/not yet applied/)
  })

  it("entry sizes count payload plus a fixed header", () => {
    const entries: Entry[] = [
      { kind: "command", term: 1, index: 1, data: new Uint8Array(100) },
      { kind: "barrier", term: 1, index: 2 },
      { kind: "config", term: 1, index: 3, config: { members: [{ id: 1, address: "abc", role: "voter" }] } }
    ]
    expect(entries.map(entrySizeBytes)).toEqual([entryHeaderBytes + 100, entryHeaderBytes, entryHeaderBytes + 16 + 3])
  })

  it("initialState validates its configuration", () => {
    expect(() => new Cluster({ config: { heartbeatTicks: 10, electionTicks: 10 } })).toThrow(/heartbeatTicks must be smaller/)
  })
})

describe("applyInflightBytesMax", () => {
  it("a slow applier holds back the hand-out until it reports Applied; all entries arrive in order", () => {
    const bytesMax = 100
    const c = new Cluster({ ids: [1], config: { applyInflightBytesMax: bytesMax } })
    const node = c.node(1)
    node.reportApplied = true
    c.elect(1)
    node.reportApplied = false // from here the applier is slow: nothing is reported
    c.propose(1, ...Array.from({ length: 10 }, (_, i) => `p${i}`)) // 34 bytes each
    expect(node.committed).toBe(12)
    const handed = () => node.applied.length
    const first = handed()
    expect(first).toBeLessThan(12)
    // Without progress from the applier, draining hands out nothing more.
    c.step(1, { _tag: "Drain" })
    expect(handed()).toBe(first)
    expect(node.state.applyInflightBytes).toBeLessThan(bytesMax + 34)
    // Each report releases the next batch, never more than the bound (plus one entry) at once.
    for (let round = 0; round < 20 && handed() < 12; round++) {
      const before = handed()
      c.step(1, { _tag: "Applied", index: node.appliedIndex })
      expect(handed()).toBeGreaterThan(before)
      expect(node.state.applyInflightBytes).toBeLessThan(bytesMax + 34)
    }
    expect(node.applied.map((e) => e.index)).toEqual(Array.from({ length: 12 }, (_, i) => i + 1))
    expect(node.applied.slice(2).map(text)).toEqual(Array.from({ length: 10 }, (_, i) => `p${i}`))
  })
})
