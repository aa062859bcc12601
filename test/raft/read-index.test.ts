import { describe, expect, it } from "vitest"
import type { Message } from "../../src/raft/messages.ts"
import { Cluster } from "./harness.ts"

const isVote = (m: Message) => m._tag === "RequestVote" || m._tag === "RequestVoteResponse"

describe("ReadIndex", () => {
  it("is not served before the leader has committed an entry of its term", () => {
    const c = new Cluster()
    c.step(1, { _tag: "Campaign" })
    while (c.node(1).role !== "leader") c.deliver(isVote)
    expect(c.node(1).committed).toBe(0)
    const ready = c.step(1, { _tag: "ReadIndex", ids: [7] })
    expect(ready.events).toEqual([])
    expect(ready.messages).toEqual([]) // no quorum round yet: the commit index may be stale
    // The barrier commits; then the read goes through a heartbeat round and is served.
    c.stabilize()
    expect(c.node(1).eventsOf("ReadReady")).toEqual([{ _tag: "ReadReady", id: 7, index: 2 }])
  })

  it("is served at the commit index after a quorum answers a heartbeat round", () => {
    const c = new Cluster()
    c.elect(1)
    c.propose(1, "a")
    c.stabilize()
    const ready = c.step(1, { _tag: "ReadIndex", ids: [1, 2] })
    expect(ready.events).toEqual([])
    const beats = ready.messages.filter((m) => m._tag === "Heartbeat")
    expect(beats.map((m) => [m.to, m._tag === "Heartbeat" && m.context > 0])).toEqual([
      [2, true],
      [3, true]
    ])
    // A later proposal does not move the index the reads must wait for.
    c.propose(1, "b")
    c.take((m) => m._tag === "AppendEntries")
    c.deliver((m) => m.to === 2 && m._tag === "Heartbeat")
    expect(c.node(1).eventsOf("ReadReady")).toEqual([])
    c.deliver((m) => m.to === 1 && m._tag === "HeartbeatResponse")
    expect(c.node(1).eventsOf("ReadReady")).toEqual([
      { _tag: "ReadReady", id: 1, index: 3 },
      { _tag: "ReadReady", id: 2, index: 3 }
    ])
  })

  it("an answer to an older round does not confirm a newer read", () => {
    const c = new Cluster()
    c.elect(1)
    c.step(1, { _tag: "ReadIndex", ids: [1] })
    const firstRound = c.take((m) => m._tag === "Heartbeat" && m.to === 2)
    c.take()
    c.step(1, { _tag: "ReadIndex", ids: [2] })
    c.take()
    for (const m of firstRound) c.step(2, { _tag: "Message", message: m })
    c.deliver((m) => m.to === 1)
    expect(c.node(1).eventsOf("ReadReady").map((e) => e.id)).toEqual([1])
    // The next tick's heartbeat carries the newest round and serves the second read.
    c.tick(1)
    c.deliver((m) => m.to === 2)
    c.deliver((m) => m.to === 1)
    expect(c.node(1).eventsOf("ReadReady").map((e) => e.id)).toEqual([1, 2])
  })

  it("a standby's answer does not count", () => {
    const c = new Cluster({
      members: [
        { id: 1, role: "voter" },
        { id: 2, role: "voter" },
        { id: 3, role: "standby" }
      ]
    })
    c.elect(1)
    c.step(1, { _tag: "ReadIndex", ids: [1] })
    c.deliver((m) => m.to === 3)
    c.deliver((m) => m.to === 1)
    expect(c.node(1).eventsOf("ReadReady")).toEqual([])
    c.deliver((m) => m.to === 2)
    c.deliver((m) => m.to === 1)
    expect(c.node(1).eventsOf("ReadReady").map((e) => e.id)).toEqual([1])
  })

  it("a single-node cluster serves reads at once", () => {
    const c = new Cluster({ ids: [1] })
    c.elect(1)
    c.propose(1, "a")
    const ready = c.step(1, { _tag: "ReadIndex", ids: [5] })
    expect(ready.events).toEqual([{ _tag: "ReadReady", id: 5, index: 3 }])
    expect(c.queue).toEqual([])
  })

  it("a deposed leader rejects its pending reads with not-leader", () => {
    const c = new Cluster()
    c.elect(1)
    c.isolate(1)
    c.step(1, { _tag: "ReadIndex", ids: [1, 2] })
    c.step(1, { _tag: "ReadIndex", ids: [3] })
    // The reads wait, unconfirmed, until check-quorum deposes the leader.
    c.tick(1, 20)
    expect(c.node(1).role).toBe("follower")
    const rejected = c.node(1).eventsOf("Rejected")
    expect(rejected.map((e) => [e.id, e.reason])).toEqual([
      [1, "not-leader"],
      [2, "not-leader"],
      [3, "not-leader"]
    ])
    expect(c.node(1).eventsOf("ReadReady")).toEqual([])
  })

  it("reads waiting for the first commit are rejected too when leadership is lost", () => {
    const c = new Cluster()
    c.step(1, { _tag: "Campaign" })
    while (c.node(1).role !== "leader") c.deliver(isVote)
    c.step(1, { _tag: "ReadIndex", ids: [9] })
    c.queue = []
    c.step(1, { _tag: "Message", message: { _tag: "AppendEntriesResponse", from: 2, to: 1, term: 99, success: false, index: 0, hintIndex: 0, hintTerm: 0 } })
    expect(c.node(1).eventsOf("Rejected").map((e) => [e.id, e.reason])).toEqual([[9, "not-leader"]])
  })

  it("a follower asks its leader for a read index and serves at it (a heartbeat round confirms it)", () => {
    const c = new Cluster()
    c.elect(1)
    c.propose(1, "a")
    c.stabilize()
    const ready = c.step(2, { _tag: "ReadIndex", ids: [4, 5] })
    expect(ready.events).toEqual([])
    expect(ready.messages.map((m) => [m._tag, m.to])).toEqual([["ReadIndexRequest", 1]])
    c.deliver((m) => m._tag === "ReadIndexRequest")
    // Without the driver's lease confirmation the leader runs a round before it answers.
    expect(c.queue.filter((m) => m._tag === "ReadIndexResponse")).toEqual([])
    c.stabilize()
    expect(c.node(2).eventsOf("ReadReady")).toEqual([
      { _tag: "ReadReady", id: 4, index: 3 },
      { _tag: "ReadReady", id: 5, index: 3 }
    ])
  })

  it("under the lease the leader answers a follower's request at once", () => {
    const c = new Cluster({ config: { readMode: "lease" } })
    // In lease mode a node refuses votes for its first election timeout.
    c.tickAll(10)
    c.queue = []
    c.elect(1)
    c.run(2)
    c.step(3, { _tag: "ReadIndex", ids: [8] })
    const [request] = c.take((m) => m._tag === "ReadIndexRequest")
    const answer = c.step(1, { _tag: "Message", message: request!, lease: true })
    expect(answer.messages).toEqual([{ _tag: "ReadIndexResponse", from: 1, to: 3, term: c.node(1).term, context: 1, index: c.node(1).committed, refused: null, indexTerm: c.node(1).term }])
  })

  it("a follower whose entry at the read index has the leader's term commits up to it from the answer", () => {
    const c = new Cluster({ config: { readMode: "lease" } })
    c.tickAll(10)
    c.queue = []
    c.elect(1)
    c.run(2)
    // An entry reaches nodes 2 and 3 and commits on 1; 3 hears nothing of the commit.
    c.propose(1, "x")
    c.deliver((m) => m._tag === "AppendEntries")
    c.deliver((m) => m.to === 1)
    c.take((m) => m.to === 3)
    const committed = c.node(1).committed
    expect(c.node(3).committed).toBeLessThan(committed)
    c.step(3, { _tag: "ReadIndex", ids: [9] })
    const [request] = c.take((m) => m._tag === "ReadIndexRequest")
    const [answer] = c.step(1, { _tag: "Message", message: request!, lease: true }).messages
    expect(answer).toMatchObject({ _tag: "ReadIndexResponse", index: committed, indexTerm: c.node(1).term })
    // A term that is not its entry's proves nothing: no commit from it (the read is served at
    // the index all the same, once applied).
    c.step(3, { _tag: "Message", message: { ...(answer as Extract<typeof answer, { _tag: "ReadIndexResponse" }>), indexTerm: c.node(1).term + 1 } })
    expect(c.node(3).committed).toBeLessThan(committed)
    c.step(3, { _tag: "ReadIndex", ids: [10] })
    const [second] = c.take((m) => m._tag === "ReadIndexRequest")
    const [again] = c.step(1, { _tag: "Message", message: second!, lease: true }).messages
    c.step(3, { _tag: "Message", message: again! })
    expect(c.node(3).committed).toBe(committed)
    expect(c.node(3).eventsOf("ReadReady")).toEqual([{ _tag: "ReadReady", id: 9, index: committed }, { _tag: "ReadReady", id: 10, index: committed }])
  })

  it("a heartbeat vouches for the leader's commit index only under its lease; the follower keeps it for bounded reads", () => {
    const c = new Cluster({ config: { readMode: "lease" } })
    c.tickAll(10)
    c.queue = []
    c.elect(1)
    // Before a quorum has answered a round of this term there is no lease: nothing vouched.
    const early = c.step(1, { _tag: "Tick" }).messages.filter((m) => m._tag === "Heartbeat")
    expect(early.length).toBeGreaterThan(0)
    expect(early.every((m) => m._tag === "Heartbeat" && m.leaderCommit === undefined)).toBe(true)
    c.run(2)
    c.propose(1, "a")
    c.stabilize()
    const beats = c.step(1, { _tag: "Tick" }).messages.filter((m) => m._tag === "Heartbeat")
    expect(beats.map((m) => (m._tag === "Heartbeat" ? m.leaderCommit : null))).toEqual([c.node(1).committed, c.node(1).committed])
    c.stabilize()
    expect(c.node(2).state.leaderCommit).toBe(c.node(1).committed)
    // A new term forgets it.
    c.step(2, { _tag: "Message", message: { _tag: "Heartbeat", from: 3, to: 2, term: 9, commit: 0, context: 0 } })
    expect(c.node(2).state.leaderCommit).toBe(0)
  })

  it("a follower's forwarded reads fail when its term changes, and a refusal fails them too", () => {
    const c = new Cluster()
    c.elect(1)
    c.step(2, { _tag: "ReadIndex", ids: [1] })
    c.take((m) => m._tag === "ReadIndexRequest")
    // A newer term: the old leader will never answer for it.
    c.step(2, { _tag: "Message", message: { _tag: "Heartbeat", from: 3, to: 2, term: 9, commit: 0, context: 0 } })
    expect(c.node(2).eventsOf("Rejected").map((e) => [e.id, e.reason])).toEqual([[1, "not-leader"]])
    // Asked of a node that does not lead (the old leader, behind in term): refused, and the
    // follower fails the read at once.
    c.step(2, { _tag: "ReadIndex", ids: [2] })
    const [request] = c.take((m) => m._tag === "ReadIndexRequest")
    expect(request!.to).toBe(3)
    const refusal = c.step(1, { _tag: "Message", message: { ...request!, to: 1 } })
    // (It carries a newer term, so it leaves once that is durable.)
    const [answer] = [...refusal.messages, ...refusal.messagesAfterPersist].filter((m) => m._tag === "ReadIndexResponse")
    expect(answer).toMatchObject({ to: 2, refused: "not-leader", term: 9 })
    c.step(2, { _tag: "Message", message: answer! })
    expect(c.node(2).eventsOf("Rejected").map((e) => [e.id, e.reason])).toEqual([[1, "not-leader"], [2, "not-leader"]])
  })

  it("a node without a leader, and a spare, refuse reads; the follower's queue is bounded", () => {
    const lone = new Cluster()
    expect(lone.step(2, { _tag: "ReadIndex", ids: [4] }).events).toEqual([{ _tag: "Rejected", id: 4, reason: "not-leader", leader: null, detail: "no leader known" }])
    const c = new Cluster({
      members: [
        { id: 1, role: "voter" },
        { id: 2, role: "voter" },
        { id: 3, role: "spare" }
      ],
      config: { readsPendingMax: 2 }
    })
    c.elect(1)
    c.stabilize()
    c.step(3, { _tag: "Message", message: { _tag: "Heartbeat", from: 1, to: 3, term: c.node(1).term, commit: 0, context: 0 } })
    expect(c.step(3, { _tag: "ReadIndex", ids: [6] }).events.map((e) => (e._tag === "Rejected" ? e.detail : e._tag))).toEqual(["this node holds no copy of the data"])
    const ready = c.step(2, { _tag: "ReadIndex", ids: [1, 2, 3] })
    expect(ready.events.map((e) => (e._tag === "Rejected" ? [e.id, e.reason] : e._tag))).toEqual([
      [1, "overloaded"],
      [2, "overloaded"],
      [3, "overloaded"]
    ])
    c.step(2, { _tag: "ReadIndex", ids: [4, 5] })
    c.stabilize()
    expect(c.node(2).eventsOf("ReadReady").map((e) => e.id)).toEqual([4, 5])
  })

  it("readsPendingMax bounds the reads waiting for a round", () => {
    const c = new Cluster({ config: { readsPendingMax: 2 } })
    c.elect(1)
    const ready = c.step(1, { _tag: "ReadIndex", ids: [1, 2, 3] })
    expect(ready.events.map((e) => (e._tag === "Rejected" ? [e.id, e.reason] : e._tag))).toEqual([[3, "overloaded"]])
    c.stabilize()
    expect(c.node(1).eventsOf("ReadReady").map((e) => e.id)).toEqual([1, 2])
  })
})
