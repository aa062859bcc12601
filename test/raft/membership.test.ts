import { describe, expect, it } from "vitest"
import { emptyRecovered } from "../../src/raft/core.ts"
import type { MembershipChange } from "../../src/raft/membership.ts"
import type { Ready } from "../../src/raft/state.ts"
import type { Membership, NodeId, Role } from "../../src/raft/types.ts"
import { Cluster, text } from "./harness.ts"

const roles = (m: Membership) => m.members.map((x) => `${x.id}:${x.role}`).join(" ")
const outcome = (ready: Ready) => ready.events.map((e) => (e._tag === "Rejected" ? e.reason : e._tag))
const change = (c: Cluster, leader: NodeId, ch: MembershipChange) => c.step(leader, { _tag: "ChangeMembership", id: 1, change: ch })
const withRoles = (...members: Array<[NodeId, Role]>) => members.map(([id, role]) => ({ id, role }))
const messagesTo = (c: Cluster, id: NodeId) =>
  [...c.nodes.values()].flatMap((n) => n.readies.flatMap((r) => [...r.messages, ...r.messagesAfterPersist])).filter((m) => m.to === id)

describe("membership changes, one server at a time", () => {
  it("a spare is a member that receives nothing", () => {
    const c = new Cluster()
    c.elect(1)
    c.addNode(4, emptyRecovered)
    const ready = change(c, 1, { kind: "add", node: 4, address: "node4", role: "spare" })
    expect(outcome(ready)).toEqual(["Accepted"])
    c.run(20)
    expect(roles(c.node(1).state.membership)).toBe("1:voter 2:voter 3:voter 4:spare")
    expect(c.node(1).committed).toBe(3)
    expect(c.node(1).state.progress.has(4)).toBe(false)
    expect(messagesTo(c, 4)).toEqual([])
    expect(c.node(4).lastIndex).toBe(0)
  })

  it("a standby is caught up from an empty log and tracked, but its acks never commit", () => {
    // Voters 1 and 2; node 3 joins as a spare, then becomes a standby.
    const c = new Cluster({ ids: [1, 2], members: withRoles([1, "voter"], [2, "voter"]) })
    c.elect(1)
    c.addNode(3, emptyRecovered)
    change(c, 1, { kind: "add", node: 3, address: "node3", role: "spare" })
    c.stabilize()
    change(c, 1, { kind: "assign", node: 3, role: "standby" })
    c.run(5)
    expect(c.node(3).lastIndex).toBe(c.node(1).lastIndex)
    expect(roles(c.node(3).state.membership)).toBe("1:voter 2:voter 3:standby")
    expect(c.node(3).committed).toBe(c.node(1).committed)
    // Voter 2 is down: leader + standby hold the entry, but that is not a quorum of voters.
    c.isolate(2)
    c.propose(1, "a")
    c.stabilize()
    const last = c.node(1).lastIndex
    expect(c.node(1).state.progress.get(3)?.match).toBe(last)
    expect(c.node(1).committed).toBe(last - 1)
    c.heal()
    c.run(2)
    expect(c.node(1).committed).toBe(last)
    expect(c.node(3).applied.map(text)).toContain("a")
  })

  it("one voter and a standby: the voter commits alone", () => {
    const c = new Cluster({ members: withRoles([1, "voter"], [2, "standby"], [3, "spare"]) })
    c.elect(1)
    c.isolate(2)
    c.propose(1, "a")
    expect(c.node(1).committed).toBe(3)
    // The spare is not replicated, the standby is.
    expect([...c.node(1).state.progress.keys()]).toEqual([2])
  })

  it("promoting a standby makes it count: two of three voters commit", () => {
    const c = new Cluster({ members: withRoles([1, "voter"], [2, "voter"], [3, "standby"]) })
    c.elect(1)
    expect(outcome(change(c, 1, { kind: "assign", node: 3, role: "voter" }))).toEqual(["Accepted"])
    c.stabilize()
    expect(roles(c.node(3).state.membership)).toBe("1:voter 2:voter 3:voter")
    c.isolate(2)
    c.propose(1, "a")
    c.stabilize()
    expect(c.node(1).committed).toBe(4)
    // And the new voter can now be elected.
    c.heal()
    c.run(2)
    c.step(1, { _tag: "TransferLeadership", id: 2, to: 3 })
    c.stabilize()
    expect(c.leaders()).toEqual([3])
  })

  it("removing a voter changes the quorum: 1 and 2 alone commit once 4 is gone", () => {
    const c = new Cluster({ ids: [1, 2, 3, 4] })
    c.elect(1)
    c.isolate(3)
    c.isolate(4)
    // Four voters: 1 and 2 are not a quorum.
    c.propose(1, "a")
    c.stabilize()
    expect(c.node(1).committed).toBe(2)
    // The removal itself needs a quorum of the new configuration {1, 2, 3}: 1 and 2 are one.
    expect(outcome(change(c, 1, { kind: "remove", node: 4 }))).toEqual(["Accepted"])
    expect(roles(c.node(1).state.membership)).toBe("1:voter 2:voter 3:voter")
    c.stabilize()
    expect(c.node(1).committed).toBe(4)
    expect(c.node(1).state.progress.has(4)).toBe(false)
    expect(c.node(1).applied.map(text)).toContain("a")
  })

  it("a second change while one is uncommitted is rejected with config-pending", () => {
    const c = new Cluster()
    c.elect(1)
    c.isolate(2)
    c.isolate(3)
    expect(outcome(change(c, 1, { kind: "add", node: 4, address: "node4", role: "spare" }))).toEqual(["Accepted"])
    expect(outcome(change(c, 1, { kind: "add", node: 5, address: "node5", role: "spare" }))).toEqual(["config-pending"])
    c.heal()
    c.run(2)
    expect(outcome(change(c, 1, { kind: "add", node: 5, address: "node5", role: "spare" }))).toEqual(["Accepted"])
  })

  it("a new leader may not change membership before it commits an entry of its term", () => {
    const c = new Cluster()
    c.step(1, { _tag: "Campaign" })
    while (c.node(1).role !== "leader") c.deliver((m) => m._tag === "RequestVote" || m._tag === "RequestVoteResponse")
    expect(outcome(change(c, 1, { kind: "remove", node: 3 }))).toEqual(["config-pending"])
  })

  it("invalid changes and changes asked of a follower are rejected", () => {
    const c = new Cluster()
    c.elect(1)
    expect(outcome(change(c, 1, { kind: "add", node: 2, address: "x", role: "voter" }))).toEqual(["invalid"])
    expect(outcome(change(c, 1, { kind: "remove", node: 9 }))).toEqual(["invalid"])
    expect(outcome(change(c, 2, { kind: "remove", node: 3 }))).toEqual(["not-leader"])
    expect(c.node(1).lastIndex).toBe(2)
  })

  it("a leader that removes itself keeps leading until the change commits, then steps down", () => {
    const c = new Cluster()
    c.elect(1)
    change(c, 1, { kind: "remove", node: 1 })
    // In effect at once: the leader no longer counts itself (its own persisted copy is not a
    // vote for commit), and is still leader.
    expect(roles(c.node(1).state.membership)).toBe("2:voter 3:voter")
    expect(c.node(1).role).toBe("leader")
    expect(c.node(1).state.log.stable).toBe(3)
    c.deliver((m) => m.to === 2)
    c.deliver((m) => m.to === 1)
    expect(c.node(1).committed).toBe(2) // one of the two remaining voters is not a quorum
    expect(c.node(1).role).toBe("leader")
    c.deliver((m) => m.to === 3)
    c.deliver((m) => m.to === 1)
    expect(c.node(1).role).toBe("follower")
    expect(c.node(1).committed).toBe(3)
    // The others elect a leader between them; node 1 never campaigns again.
    const changes = c.node(1).eventsOf("StateChanged").length
    const leader = c.runUntilLeader(100)
    expect([2, 3]).toContain(leader)
    c.run(100)
    expect(c.node(1).eventsOf("StateChanged").slice(changes)).toEqual([])
    expect(c.node(1).state.leader).toBe(null)
  })

  it("truncating an uncommitted configuration entry reverts the membership", () => {
    const c = new Cluster({ ids: [1, 2, 3, 4, 5], config: { preVote: false, checkQuorum: false } })
    c.elect(1)
    // Leader 1 appends "add 6"; only node 2 receives it.
    change(c, 1, { kind: "add", node: 6, address: "node6", role: "standby" })
    c.deliver((m) => m.to === 2)
    c.queue = []
    expect(roles(c.node(2).state.membership)).toContain("6:standby")
    // Node 3 wins term 3 with 4 and 5 and overwrites index 3 everywhere it reaches.
    c.isolate(1)
    c.step(3, { _tag: "Campaign" })
    c.deliver((m) => m._tag === "RequestVote" && m.to !== 2)
    c.stabilize()
    expect(c.node(3).role).toBe("leader")
    const truncations = c.node(2).readies.flatMap((r) => (r.truncateFrom === null ? [] : [r.truncateFrom]))
    expect(truncations).toEqual([3])
    expect(roles(c.node(2).state.membership)).toBe("1:voter 2:voter 3:voter 4:voter 5:voter")
    expect(c.node(2).state.membershipIndex).toBe(1)
    // The old leader, back, loses its entry and its view of the change too.
    expect(roles(c.node(1).state.membership)).toContain("6:standby")
    c.heal()
    c.run(3)
    expect(roles(c.node(1).state.membership)).toBe("1:voter 2:voter 3:voter 4:voter 5:voter")
    expect(c.node(1).role).toBe("follower")
  })

  it("a follower's configuration takes effect when appended, before it commits", () => {
    const c = new Cluster()
    c.elect(1)
    change(c, 1, { kind: "assign", node: 3, role: "standby" })
    c.deliver((m) => m.to === 3)
    expect(c.node(3).committed).toBe(2)
    expect(roles(c.node(3).state.membership)).toBe("1:voter 2:voter 3:standby")
    // As a standby it no longer campaigns, even after a long silence.
    c.isolate(3)
    c.tick(3, 100)
    expect(c.node(3).role).toBe("follower")
  })

  it("demoting a member to spare stops its replication", () => {
    const c = new Cluster()
    c.elect(1)
    change(c, 1, { kind: "assign", node: 3, role: "spare" })
    c.stabilize()
    expect(c.node(1).state.progress.has(3)).toBe(false)
    const sentBefore = messagesTo(c, 3).length
    c.run(10)
    c.propose(1, "a")
    c.stabilize()
    expect(messagesTo(c, 3).length).toBe(sentBefore)
    expect(c.node(1).committed).toBe(4)
  })
})
