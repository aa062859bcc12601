import { describe, expect, it } from "vitest"
import { Cluster, text } from "./harness.ts"

describe("crashes and restarts (what the disk kept is all there is)", () => {
  it("a leader that crashes before its own fsync: the entry two followers persisted survives", () => {
    const c = new Cluster()
    c.elect(1)
    c.node(1).holdPersist = true
    c.propose(1, "a")
    c.deliver((m) => m.to !== 1)
    c.deliver((m) => m.to === 1)
    expect(c.node(1).committed).toBe(3)
    // Crash: the leader's write of "a" is lost.
    c.restart(1)
    expect(c.node(1).lastIndex).toBe(2)
    expect([c.node(1).role, c.node(1).term]).toEqual(["follower", 2])
    const leader = c.runUntilLeader(100)
    expect(leader).not.toBe(1)
    c.run(3)
    for (const n of c.nodes.values()) expect(n.applied.map(text), `node ${n.id}`).toContain("a")
  })

  it("a follower that crashes before its fsync never acknowledged, and is caught up again", () => {
    const c = new Cluster()
    c.elect(1)
    c.node(3).holdPersist = true
    c.propose(1, "a", "b")
    c.deliver((m) => m.to === 3)
    expect(c.node(3).lastIndex).toBe(4)
    expect(c.queued("AppendEntriesResponse")).toEqual([])
    c.restart(3)
    expect(c.node(3).lastIndex).toBe(2)
    expect(c.node(1).state.progress.get(3)?.match).toBe(2)
    c.run(3)
    expect(c.node(3).lastIndex).toBe(4)
    expect(c.node(3).applied.map(text)).toEqual([null, null, "a", "b"])
  })

  it("a restarted node keeps its term and vote, and replays committed entries from its log", () => {
    const c = new Cluster()
    c.elect(1)
    c.propose(1, "a")
    c.run(2)
    const before = c.node(2)
    c.restart(2)
    const after = c.node(2)
    expect(after).not.toBe(before)
    expect([after.term, after.state.vote, after.lastIndex]).toEqual([before.term, before.state.vote, before.lastIndex])
    // The commit hint on disk is only written with a term or vote change: replay starts there.
    expect(after.committed).toBe(after.disk.hardState.commit)
    c.run(2)
    expect(after.applied.map(text)).toEqual([null, null, "a"])
    expect(c.leaders()).toEqual([1])
  })
})
