import { describe, expect, it } from "vitest"
import type { RequestVote } from "../../src/raft/messages.ts"
import { Cluster } from "./harness.ts"

describe("pre-vote", () => {
  it("a partitioned follower ticking for a long time does not raise its term", () => {
    const c = new Cluster()
    c.elect(1)
    const term = c.node(1).term
    c.isolate(3)
    c.run(200)
    expect(c.node(3).term).toBe(term)
    expect(c.node(3).role).toBe("preCandidate")
    // It did try, many times: the pre-votes went out (and were dropped).
    expect(c.dropped.filter((m) => m._tag === "RequestVote" && m.from === 3 && m.pre).length).toBeGreaterThan(10)
    expect(c.dropped.some((m) => m._tag === "RequestVote" && m.from === 3 && !m.pre)).toBe(false)
  })

  it("after the partition heals, the leader is still the leader in the same term", () => {
    const c = new Cluster()
    c.elect(1)
    const term = c.node(1).term
    c.isolate(3)
    c.run(100)
    c.propose(1, "while 3 was away")
    c.stabilize()
    c.heal()
    c.run(50)
    expect(c.leaders()).toEqual([1])
    for (const n of c.nodes.values()) {
      expect(n.term).toBe(term)
      expect(n.state.leader).toBe(1)
      expect(n.committed).toBe(3)
    }
    expect(c.node(3).role).toBe("follower")
  })

  it("without pre-vote the same partition raises the follower's term (so the tests above can fail)", () => {
    const c = new Cluster({ config: { preVote: false } })
    c.elect(1)
    const term = c.node(1).term
    c.isolate(3)
    c.run(200)
    expect(c.node(3).term).toBeGreaterThan(term + 5)
  })

  it("granting a pre-vote changes neither the voter's term nor its vote, and needs no fsync", () => {
    const c = new Cluster()
    c.elect(1)
    c.isolate(1)
    // Node 2 stops hearing from the leader for an election timeout: its lease is over.
    c.tick(2, 10)
    const term = c.node(2).term
    const pre: RequestVote = { _tag: "RequestVote", from: 3, to: 2, term: term + 1, pre: true, lastIndex: 2, lastTerm: term, transfer: false }
    const ready = c.step(2, { _tag: "Message", message: pre })
    expect(ready.hardState).toBe(null)
    expect(ready.messagesAfterPersist).toEqual([{ _tag: "RequestVoteResponse", from: 2, to: 3, term: term + 1, pre: true, granted: true }])
    expect([c.node(2).term, c.node(2).state.vote]).toEqual([term, 1])
  })

  it("a pre-candidate that wins the pre-vote runs the real election at term + 1", () => {
    const c = new Cluster()
    c.step(2, { _tag: "Campaign" })
    expect([c.node(2).role, c.node(2).term]).toEqual(["preCandidate", 1])
    c.deliver((m) => m.to === 1) // node 1 grants the pre-vote
    c.deliver((m) => m.to === 2) // a pre-vote quorum: the real campaign starts
    expect([c.node(2).role, c.node(2).term, c.node(2).state.vote]).toEqual(["candidate", 2, 2])
    c.stabilize()
    expect(c.leaders()).toEqual([2])
  })
})

describe("check-quorum", () => {
  it("an isolated leader steps down within two election timeouts; the majority elects another", () => {
    const c = new Cluster()
    c.elect(1)
    const term = c.node(1).term
    c.isolate(1)
    c.tick(1, 9)
    expect(c.node(1).role).toBe("leader")
    c.tick(1, 11)
    expect(c.node(1).role).toBe("follower")
    expect(c.node(1).term).toBe(term)
    expect(c.node(1).state.leader).toBe(null)
    // Meanwhile the majority side elects a new leader; when the old one is back it follows.
    const leader = c.runUntilLeader(100)
    expect(leader).not.toBe(1)
    c.heal()
    c.run(20)
    expect(c.leaders()).toEqual([leader])
    expect(c.node(1).state.leader).toBe(leader)
  })

  it("without check-quorum the isolated leader stays leader forever (so the test above can fail)", () => {
    const c = new Cluster({ config: { checkQuorum: false } })
    c.elect(1)
    c.isolate(1)
    c.tick(1, 500)
    expect(c.node(1).role).toBe("leader")
  })

  it("a leader that hears from its quorum never steps down", () => {
    const c = new Cluster()
    c.elect(1)
    const changes = c.node(1).eventsOf("StateChanged").length
    c.isolate(3) // one follower lost: 1 and 2 are still a quorum
    c.run(300)
    expect(c.leaders()).toEqual([1])
    expect(c.node(1).eventsOf("StateChanged")).toHaveLength(changes)
  })

  it("a follower that heard from its leader within an election timeout ignores a RequestVote of a higher term", () => {
    const c = new Cluster()
    c.elect(1)
    const term = c.node(1).term
    const vote: RequestVote = { _tag: "RequestVote", from: 3, to: 2, term: term + 5, pre: false, lastIndex: 99, lastTerm: term, transfer: false }
    c.tick(2, 9) // still within the lease
    const ignored = c.step(2, { _tag: "Message", message: vote })
    expect([ignored.messages, ignored.messagesAfterPersist, ignored.hardState]).toEqual([[], [], null])
    expect([c.node(2).term, c.node(2).state.leader]).toEqual([term, 1])
    // The leader itself ignores it too.
    const atLeader = c.step(1, { _tag: "Message", message: { ...vote, to: 1 } })
    expect(atLeader.messagesAfterPersist).toEqual([])
    expect(c.node(1).role).toBe("leader")
    // Once the lease has run out, the request is heard (and granted: the candidate is up to date).
    c.tick(2, 1)
    const heard = c.step(2, { _tag: "Message", message: vote })
    expect(heard.hardState).toEqual({ term: term + 5, vote: 3, commit: 2 })
    expect(c.node(2).term).toBe(term + 5)
  })

  it("a vote requested by a leadership transfer skips the lease", () => {
    const c = new Cluster()
    c.elect(1)
    const term = c.node(1).term
    const vote: RequestVote = { _tag: "RequestVote", from: 3, to: 2, term: term + 1, pre: false, lastIndex: 2, lastTerm: term, transfer: true }
    const ready = c.step(2, { _tag: "Message", message: vote })
    expect(ready.messagesAfterPersist).toEqual([{ _tag: "RequestVoteResponse", from: 2, to: 3, term: term + 1, pre: false, granted: true }])
  })

  it("without pre-vote, a rejoining node with a higher term is ignored by followers in their lease", () => {
    const c = new Cluster({ config: { preVote: false } })
    c.elect(1)
    const term = c.node(1).term
    c.isolate(3)
    c.run(60)
    c.propose(1, "while 3 was away")
    c.stabilize()
    expect(c.node(3).term).toBeGreaterThan(term)
    c.heal()
    // Deliver only 3's election traffic, with a fresh campaign at its (higher) term.
    c.step(3, { _tag: "Campaign" })
    const requests = c.take((m) => m._tag === "RequestVote")
    expect(requests.length).toBe(2)
    for (const m of requests) c.step(m.to, { _tag: "Message", message: m })
    expect([c.node(1).role, c.node(1).term, c.node(2).term]).toEqual(["leader", term, term])
    expect(c.queued("RequestVoteResponse")).toEqual([])
    // Its answer to the leader's next heartbeat carries its term and makes the leader step down
    // (as in etcd: the node could otherwise never rejoin; pre-vote is what prevents this, see
    // above). A node with the complete log then wins; node 3, behind, cannot.
    c.tick(1)
    c.deliver((m) => m._tag === "Heartbeat" && m.to === 3)
    c.deliver((m) => m.to === 1)
    expect([c.node(1).role, c.node(1).term]).toEqual(["follower", c.node(3).term])
    c.run(60)
    const leaders = c.leaders()
    expect(leaders.length).toBe(1)
    expect(leaders[0]).not.toBe(3)
    expect(c.node(3).committed).toBe(c.node(leaders[0] ?? 0).committed)
  })
})
