import { describe, expect, it } from "vitest"
import type { RaftBugs } from "../../src/raft/config.ts"
import type { Message } from "../../src/raft/messages.ts"
import { Cluster, text } from "./harness.ts"

/** Raft paper, figure 8, on five nodes. Returns the cluster in state (c): node 1 leads term 4;
 * its entry 3 (term 2, "x") is on nodes 1, 2, 3 and 4 — a majority — while its barrier 4 (term
 * 4) is on node 1 only. Node 5 leads... nothing any more, but holds entry 3 of term 3. */
function figure8(bugs: RaftBugs = {}) {
  const c = new Cluster({ ids: [1, 2, 3, 4, 5], config: { preVote: false, checkQuorum: false, appendEntriesMax: 1, bugs } })
  const isVote = (m: Message) => m._tag === "RequestVote" || m._tag === "RequestVoteResponse"
  // (a) node 1 leads term 2 and commits its barrier (index 2) everywhere; "x" (index 3) reaches node 2 only.
  c.elect(1)
  c.propose(1, "x")
  c.deliver((m) => m.to === 2)
  c.deliver((m) => m.to === 1)
  c.queue = []
  // (b) node 5 wins term 3 with the votes of 3 and 4 and appends its barrier at index 3; then it
  // is cut off (its appends are lost).
  c.step(5, { _tag: "Campaign" })
  while (c.node(5).role !== "leader") c.deliver(isVote)
  expect(c.node(5).term).toBe(3)
  c.queue = []
  c.isolate(5)
  // (c) node 1 wins term 4 (2, 3 and 4 vote for it) and replicates index 3, but its term-4
  // barrier (index 4) is lost from every append that carries it (the network delivers the
  // append without it, which is what a leader with a smaller batch bound would have sent).
  c.step(1, { _tag: "Campaign" })
  while (c.node(1).role !== "leader") c.deliver(isVote)
  expect(c.node(1).term).toBe(4)
  const withoutBarrier = (m: Message): Message => (m._tag === "AppendEntries" ? { ...m, entries: m.entries.filter((e) => e.index < 4) } : m)
  const loseBarrier = () => {
    while (c.queue.length > 0) {
      c.queue = c.queue.map(withoutBarrier)
      c.deliver()
    }
  }
  loseBarrier()
  for (const id of [1, 2, 3, 4]) expect(c.node(id).state.log.entries[2]?.term, `node ${id}`).toBe(2)
  expect([c.node(1).lastIndex, c.node(1).state.log.stable]).toEqual([4, 4])
  return { c, loseBarrier }
}

describe("commit rule: only entries of the current term commit by counting (figure 8)", () => {
  it("an entry of an earlier term on a majority is not committed by counting", () => {
    const { c, loseBarrier } = figure8()
    const leader = c.node(1)
    expect([2, 3, 4].map((id) => leader.state.progress.get(id)?.match)).toEqual([3, 3, 3])
    expect(leader.committed).toBe(2)
    // Heartbeats bring more acks, but still only for index 3: nothing commits.
    c.tick(1, 3)
    loseBarrier()
    expect(leader.committed).toBe(2)
  })

  it("it commits together with the first entry of the current term", () => {
    const { c } = figure8()
    // The followers' next heartbeat answers show them behind; the barrier is sent again.
    c.run(3)
    expect(c.node(1).committed).toBe(4)
    for (const id of [2, 3, 4]) expect(c.node(id).committed).toBe(4)
    expect(c.node(1).applied.map(text)).toContain("x")
  })

  it("it was right not to: node 5 can still be elected and overwrite it", () => {
    const { c } = figure8()
    // Node 1 crashes; node 5 restarts (a follower of term 3).
    c.heal()
    c.isolate(1)
    c.restart(5)
    // Node 5 (last term 3) is more up to date than 2, 3, 4 (last term 2): it wins term 5.
    for (let attempt = 0; attempt < 3 && c.node(5).role !== "leader"; attempt++) {
      c.step(5, { _tag: "Campaign" })
      c.stabilize()
    }
    expect(c.node(5).role).toBe("leader")
    for (const id of [2, 3, 4, 5]) {
      expect(c.node(id).state.log.entries[2]?.term, `node ${id}`).toBe(3)
      expect(c.node(id).applied.map(text)).not.toContain("x")
    }
  })

  it("the commitOldTerm bug commits it by counting (so the tests above can fail)", () => {
    const { c } = figure8({ commitOldTerm: true })
    expect(c.node(1).committed).toBe(3)
    expect(c.node(1).applied.map(text)).toContain("x")
  })
})

describe("asynchronous persistence", () => {
  function leaderHoldingPersistence() {
    const c = new Cluster()
    c.elect(1)
    c.node(1).holdPersist = true
    const ready = c.propose(1, "a")
    return { c, ready }
  }

  it("the leader sends new entries before its own fsync", () => {
    const { c, ready } = leaderHoldingPersistence()
    expect(ready.entries.map((e) => e.index)).toEqual([3])
    expect(ready.messages.filter((m) => m._tag === "AppendEntries").map((m) => m.to)).toEqual([2, 3])
    expect(ready.messagesAfterPersist).toEqual([])
    expect(c.queued("AppendEntries").length).toBe(2)
    expect(c.node(1).disk.entries.length).toBe(2)
    expect(c.node(1).state.log.stable).toBe(2)
  })

  it("leader unpersisted + one follower is not a quorum; persisting makes it one", () => {
    const { c } = leaderHoldingPersistence()
    c.deliver((m) => m.to === 2)
    c.deliver((m) => m.to === 1)
    expect(c.node(1).state.progress.get(2)?.match).toBe(3)
    expect(c.node(1).committed).toBe(2)
    c.persist(1)
    expect(c.node(1).committed).toBe(3)
    expect(c.node(1).applied.map(text)).toEqual([null, null, "a"])
  })

  it("two followers are a quorum without the leader, but the leader applies only what it persisted", () => {
    const { c } = leaderHoldingPersistence()
    c.deliver((m) => m.to !== 1)
    c.deliver((m) => m.to === 1)
    expect(c.node(1).committed).toBe(3)
    expect(c.node(1).applied.map((e) => e.index)).toEqual([1, 2])
    // The Ready that answers the Persisted input hands the entry out.
    c.persist(1)
    const last = c.node(1).readies[c.node(1).readies.length - 1]
    expect(last?.committed.map(text)).toEqual(["a"])
  })

  it("a follower acknowledges only after its fsync, and applies only what it persisted", () => {
    const c = new Cluster()
    c.elect(1)
    c.node(3).holdPersist = true
    c.propose(1, "a")
    c.deliver((m) => m.to !== 1)
    // 3's acknowledgement waits for its disk.
    expect(c.queued("AppendEntriesResponse").map((m) => m.from)).toEqual([2])
    c.deliver((m) => m.to === 1)
    expect(c.node(1).committed).toBe(3)
    // The commit reaches 3 (the leader's append carrying it), but 3 has not persisted entry 3.
    c.deliver((m) => m.to === 3)
    expect(c.node(3).committed).toBe(3)
    expect(c.node(3).applied.map((e) => e.index)).toEqual([1, 2])
    c.persist(3)
    expect(c.node(3).applied.map(text)).toEqual([null, null, "a"])
  })

  it("a Persisted for entries a truncation replaced does not count", () => {
    const c = new Cluster({ config: { preVote: false, checkQuorum: false } })
    c.elect(1)
    // Node 1 appends "a" at 3 in term 2; nobody hears of it and its write is slow.
    c.node(1).holdPersist = true
    c.isolate(1)
    c.propose(1, "a")
    c.heal()
    // Node 2 wins term 3; its first append replaces 1's entry 3 with its own barrier.
    c.elect(2)
    expect(c.node(1).state.log.entries[2]?.term).toBe(3)
    expect(c.node(1).jobs.map((j) => [j.truncateFrom, j.entries.map((e) => e.term)])).toEqual([
      [null, [2]],
      [null, []],
      [3, [3]]
    ])
    // The old write finishes: its Persisted names an entry that no longer exists.
    c.persist(1, 1)
    expect(c.node(1).disk.entries.map((e) => e.term)).toEqual([1, 2, 2])
    expect(c.node(1).state.log.stable).toBe(2)
    c.persist(1)
    expect(c.node(1).state.log.stable).toBe(3)
    c.run(2)
    expect(c.node(1).disk.entries.map((e) => e.term)).toEqual([1, 2, 3])
    expect(c.node(1).applied.map((e) => e.term)).toEqual([1, 2, 3])
  })
})
