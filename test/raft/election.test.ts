import { describe, expect, it } from "vitest"
import { defaultRaftConfig } from "../../src/raft/config.ts"
import { bootstrap, initialState, step } from "../../src/raft/core.ts"
import type { RequestVote, RequestVoteResponse } from "../../src/raft/messages.ts"
import type { Entry } from "../../src/raft/types.ts"
import { Cluster } from "./harness.ts"

const three = { members: [1, 2, 3].map((id) => ({ id, address: `node${id}`, role: "voter" as const })) }

describe("leader election", () => {
  it("a 3-node cluster elects exactly one leader, and everyone agrees on it", () => {
    const c = new Cluster()
    const leader = c.runUntilLeader(100)
    c.run(30)
    expect(c.leaders()).toEqual([leader])
    const term = c.node(leader).term
    for (const n of c.nodes.values()) {
      expect(n.term).toBe(term)
      expect(n.state.leader).toBe(leader)
    }
    // The new leader's barrier (an entry of its term) is committed and applied everywhere.
    for (const n of c.nodes.values()) {
      expect(n.committed).toBe(2)
      expect(n.applied.map((e) => [e.kind, e.term])).toEqual([["config", 1], ["barrier", term]])
    }
  })

  it("the randomized timeout is drawn from [electionTicks, 2 × electionTicks) and depends on the seed", () => {
    const timeouts = new Set<number>()
    for (let seed = 1; seed <= 200; seed++) {
      const s = initialState({ ...defaultRaftConfig(1, seed), electionTicks: 7 }, bootstrap(three))
      expect(s.randomizedElectionTimeout).toBeGreaterThanOrEqual(7)
      expect(s.randomizedElectionTimeout).toBeLessThan(14)
      timeouts.add(s.randomizedElectionTimeout)
    }
    // Every value of the range shows up: the jitter is not stuck.
    expect([...timeouts].sort((a, b) => a - b)).toEqual([7, 8, 9, 10, 11, 12, 13])
    // The same seed gives the same timeout (the generator is data, not Math.random).
    const again = (seed: number) => initialState(defaultRaftConfig(1, seed), bootstrap(three)).randomizedElectionTimeout
    expect(again(42)).toBe(again(42))
  })

  it("a follower campaigns exactly when its randomized timeout elapses, and draws a new one", () => {
    const c = new Cluster()
    const n = c.node(1)
    const timeout = n.state.randomizedElectionTimeout
    c.tick(1, timeout - 1)
    expect(n.role).toBe("follower")
    c.tick(1)
    expect(n.role).toBe("preCandidate")
    expect(c.queued("RequestVote").map((m) => [m.to, m.pre, m.term])).toEqual([
      [2, true, 2],
      [3, true, 2]
    ])
    // The timer restarted with a fresh draw.
    expect(n.state.electionElapsed).toBe(0)
    const draws = new Set<number>()
    for (let i = 0; i < 20; i++) {
      c.tick(1, n.state.randomizedElectionTimeout)
      draws.add(n.state.randomizedElectionTimeout)
    }
    expect(draws.size).toBeGreaterThan(1)
  })

  it("a candidate whose log is behind is refused, and cannot win", () => {
    const c = new Cluster({ config: { preVote: false, checkQuorum: false } })
    c.elect(1)
    c.isolate(3)
    c.propose(1, "x")
    c.stabilize()
    c.heal()
    expect(c.node(3).lastIndex).toBe(2)
    expect(c.node(2).lastIndex).toBe(3)
    c.step(3, { _tag: "Campaign" })
    const term = c.node(3).term
    c.stabilize()
    const requests = c.node(3).readies
      .flatMap((r) => r.messagesAfterPersist)
      .filter((m): m is RequestVote => m._tag === "RequestVote" && m.term === term)
    expect(requests.map((m) => [m.to, m.lastIndex])).toEqual([
      [1, 2],
      [2, 2]
    ])
    expect(collectResponses(c, 3, term)).toEqual([
      [1, false],
      [2, false]
    ])
    expect(c.node(3).role).not.toBe("leader")
    expect(c.node(3).state.vote).toBe(3)
  })

  it("up-to-dateness compares last term first, then last index", () => {
    // The voter's log: 1 (term 1), 2 (term 2), 3 (term 2); its term is 2.
    const entries: Entry[] = [
      { kind: "config", term: 1, index: 1, config: three },
      { kind: "barrier", term: 2, index: 2 },
      { kind: "barrier", term: 2, index: 3 }
    ]
    const cases: Array<{ lastTerm: number; lastIndex: number; granted: boolean }> = [
      { lastTerm: 2, lastIndex: 3, granted: true },
      { lastTerm: 2, lastIndex: 9, granted: true },
      { lastTerm: 2, lastIndex: 2, granted: false },
      { lastTerm: 3, lastIndex: 1, granted: true },
      { lastTerm: 1, lastIndex: 9, granted: false }
    ]
    for (const cs of cases) {
      // Strict reads: a lease-mode node refuses every vote in its first election timeout.
      const s = initialState({ ...defaultRaftConfig(2), readMode: "readIndex" }, { hardState: { term: 2, vote: null, commit: 1 }, base: { index: 0, term: 0 }, entries, snapshot: null })
      const vote: RequestVote = { _tag: "RequestVote", from: 1, to: 2, term: 3, pre: false, lastIndex: cs.lastIndex, lastTerm: cs.lastTerm, transfer: false }
      const { ready } = step(s, { _tag: "Message", message: vote })
      const answer = ready.messagesAfterPersist.find((m): m is RequestVoteResponse => m._tag === "RequestVoteResponse")
      expect(answer?.granted, JSON.stringify(cs)).toBe(cs.granted)
      expect(s.vote, JSON.stringify(cs)).toBe(cs.granted ? 1 : null)
      expect(s.term).toBe(3)
    }
  })

  it("only votes from voters count", () => {
    // 1 and 2 are voters (quorum 2); 3 and 4 are standbys whose grants must not elect 1.
    const c = new Cluster({
      ids: [1, 2, 3, 4],
      members: [
        { id: 1, role: "voter" },
        { id: 2, role: "voter" },
        { id: 3, role: "standby" },
        { id: 4, role: "standby" }
      ],
      config: { preVote: false }
    })
    c.step(1, { _tag: "Campaign" })
    const term = c.node(1).term
    // Requests go to voters only.
    expect(c.take().map((m) => [m._tag, m.to])).toEqual([["RequestVote", 2]])
    for (const from of [3, 4]) {
      c.step(1, { _tag: "Message", message: { _tag: "RequestVoteResponse", from, to: 1, term, pre: false, granted: true } })
    }
    expect(c.node(1).role).toBe("candidate")
    c.step(1, { _tag: "Message", message: { _tag: "RequestVoteResponse", from: 2, to: 1, term, pre: false, granted: true } })
    expect(c.node(1).role).toBe("leader")
  })

  it("a standby never campaigns, however long it waits", () => {
    const c = new Cluster({
      members: [
        { id: 1, role: "voter" },
        { id: 2, role: "voter" },
        { id: 3, role: "standby" }
      ]
    })
    c.tick(3, 200)
    c.step(3, { _tag: "Campaign" })
    expect(c.node(3).role).toBe("follower")
    expect(c.node(3).term).toBe(1)
    expect(c.queue).toEqual([])
  })

  it("a single voter elects itself at once", () => {
    const c = new Cluster({ ids: [1] })
    c.step(1, { _tag: "Campaign" })
    expect(c.node(1).role).toBe("leader")
    expect(c.node(1).term).toBe(2)
    expect(c.node(1).committed).toBe(2) // its barrier, once persisted
  })
})

describe("votes are durable before they are announced", () => {
  it("the vote is in the Ready's hard state and its response waits in messagesAfterPersist", () => {
    const c = new Cluster({ config: { preVote: false } })
    c.node(2).holdPersist = true
    c.step(1, { _tag: "Campaign" })
    // The candidate's own vote for itself is durable before it asks anyone.
    const campaign = c.node(1).readies[0]
    expect(campaign?.hardState).toEqual({ term: 2, vote: 1, commit: 0 })
    expect(campaign?.messages).toEqual([])
    expect(campaign?.messagesAfterPersist.map((m) => m._tag)).toEqual(["RequestVote", "RequestVote"])

    c.deliver((m) => m.to === 2)
    const ready = c.node(2).readies[c.node(2).readies.length - 1]
    expect(ready?.hardState).toEqual({ term: 2, vote: 1, commit: 0 })
    expect(ready?.messages).toEqual([])
    expect(ready?.messagesAfterPersist).toEqual([{ _tag: "RequestVoteResponse", from: 2, to: 1, term: 2, pre: false, granted: true }])
    // Not on the wire until the disk has it.
    expect(c.queued("RequestVoteResponse", (m) => m.from === 2)).toEqual([])
    expect(c.node(2).disk.hardState.vote).toBe(null)
    c.persist(2)
    expect(c.node(2).disk.hardState).toEqual({ term: 2, vote: 1, commit: 0 })
    expect(c.queued("RequestVoteResponse", (m) => m.from === 2)).toHaveLength(1)
  })

  it("a restarted node remembers its vote and refuses a second candidate in the same term", () => {
    const c = new Cluster({ config: { preVote: false, checkQuorum: false } })
    c.step(1, { _tag: "Campaign" })
    c.deliver((m) => m.to === 3)
    c.restart(3)
    expect(c.node(3).state.vote).toBe(1)
    const vote: RequestVote = { _tag: "RequestVote", from: 2, to: 3, term: 2, pre: false, lastIndex: 1, lastTerm: 1, transfer: false }
    const ready = c.step(3, { _tag: "Message", message: vote })
    expect(ready.messagesAfterPersist).toEqual([{ _tag: "RequestVoteResponse", from: 3, to: 2, term: 2, pre: false, granted: false }])
  })

  it("the doubleVote bug grants that second vote (so the test above can fail)", () => {
    const c = new Cluster({ config: { preVote: false, checkQuorum: false, bugs: { doubleVote: true } } })
    c.step(1, { _tag: "Campaign" })
    c.deliver((m) => m.to === 3)
    const vote: RequestVote = { _tag: "RequestVote", from: 2, to: 3, term: 2, pre: false, lastIndex: 1, lastTerm: 1, transfer: false }
    const ready = c.step(3, { _tag: "Message", message: vote })
    expect(ready.messagesAfterPersist).toEqual([{ _tag: "RequestVoteResponse", from: 3, to: 2, term: 2, pre: false, granted: true }])
  })
})

function collectResponses(c: Cluster, candidate: number, term: number): Array<[number, boolean]> {
  return [...c.nodes.values()]
    .flatMap((n) => n.readies.flatMap((r) => r.messagesAfterPersist))
    .filter((m): m is RequestVoteResponse => m._tag === "RequestVoteResponse" && m.to === candidate && !m.pre && m.term === term)
    .map((m): [number, boolean] => [m.from, m.granted])
    .sort((a, b) => a[0] - b[0])
}
