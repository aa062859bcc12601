import { describe, expect, it } from "vitest"
import type { RequestVote } from "../../src/raft/messages.ts"
import { Cluster } from "./harness.ts"

/** Node 1 leads; node 3 missed three entries while cut off and is back. */
function laggingTarget() {
  const c = new Cluster()
  c.elect(1)
  c.isolate(3)
  c.propose(1, "a")
  c.propose(1, "b")
  c.propose(1, "c")
  c.stabilize()
  c.heal()
  expect([c.node(1).lastIndex, c.node(3).lastIndex]).toEqual([5, 2])
  return c
}

describe("leadership transfer", () => {
  it("catches the target up first, then sends TimeoutNow; the target wins term + 1 without pre-vote", () => {
    const c = laggingTarget()
    const term = c.node(1).term
    const ready = c.step(1, { _tag: "TransferLeadership", id: 1, to: 3 })
    expect(ready.events).toEqual([])
    expect(ready.messages.some((m) => m._tag === "TimeoutNow")).toBe(false)
    // Run until the TimeoutNow is on the wire: by then the target holds the whole log.
    let timeoutNow = false
    for (let tick = 0; tick < 20 && !timeoutNow; tick++) {
      c.tickAll()
      while (c.queue.length > 0 && !timeoutNow) {
        timeoutNow = c.queue.some((m) => m._tag === "TimeoutNow")
        if (!timeoutNow) c.deliver()
      }
    }
    expect(timeoutNow).toBe(true)
    expect(c.node(3).lastIndex).toBe(c.node(1).lastIndex)
    expect(c.node(3).state.log.stable).toBe(c.node(1).lastIndex)
    c.stabilize()
    expect(c.leaders()).toEqual([3])
    expect(c.node(3).term).toBe(term + 1)
    const requests = c.node(3).readies.flatMap((r) => r.messagesAfterPersist).filter((m): m is RequestVote => m._tag === "RequestVote")
    expect(requests.map((m) => [m.to, m.pre, m.transfer, m.term])).toEqual([
      [1, false, true, term + 1],
      [2, false, true, term + 1]
    ])
    c.run(5)
    expect(c.leaders()).toEqual([3])
    expect(c.node(1).state.leader).toBe(3)
  })

  it("a caught-up target gets TimeoutNow at once", () => {
    const c = new Cluster()
    c.elect(1)
    const ready = c.step(1, { _tag: "TransferLeadership", id: 1, to: 2 })
    expect(ready.messages).toEqual([{ _tag: "TimeoutNow", from: 1, to: 2, term: 2 }])
    c.stabilize()
    expect(c.leaders()).toEqual([2])
  })

  it("to: null picks the most caught-up voter", () => {
    const c = laggingTarget()
    const ready = c.step(1, { _tag: "TransferLeadership", id: 1, to: null })
    expect(ready.messages.filter((m) => m._tag === "TimeoutNow").map((m) => m.to)).toEqual([2])
  })

  it("proposals and membership changes during a transfer are rejected with transferring", () => {
    const c = laggingTarget()
    c.isolate(3)
    c.step(1, { _tag: "TransferLeadership", id: 1, to: 3 })
    const proposed = c.propose(1, "late")
    expect(proposed.events.map((e) => (e._tag === "Rejected" ? e.reason : e._tag))).toEqual(["transferring"])
    expect(proposed.entries).toEqual([])
    const changed = c.step(1, { _tag: "ChangeMembership", id: 2, change: { kind: "add", node: 4, address: "node4", role: "spare" } })
    expect(changed.events.map((e) => (e._tag === "Rejected" ? e.reason : e._tag))).toEqual(["transferring"])
  })

  it("an unreachable target: TransferAborted after an election timeout, and proposals flow again", () => {
    const c = laggingTarget()
    c.isolate(3)
    c.step(1, { _tag: "TransferLeadership", id: 1, to: 3 })
    c.run(9)
    expect(c.node(1).eventsOf("TransferAborted")).toEqual([])
    c.run(1)
    expect(c.node(1).eventsOf("TransferAborted")).toEqual([{ _tag: "TransferAborted", to: 3 }])
    expect(c.leaders()).toEqual([1])
    expect(c.propose(1, "again").events.map((e) => e._tag)).toEqual(["Accepted"])
  })

  it("refuses a target that is not a voter, itself, or unknown; followers refuse with not-leader", () => {
    const c = new Cluster({
      members: [
        { id: 1, role: "voter" },
        { id: 2, role: "voter" },
        { id: 3, role: "standby" }
      ]
    })
    c.elect(1)
    for (const to of [3, 1, 9]) {
      const ready = c.step(1, { _tag: "TransferLeadership", id: to, to })
      expect(ready.events.map((e) => (e._tag === "Rejected" ? e.reason : e._tag)), `to ${to}`).toEqual(["invalid"])
    }
    expect(c.node(1).state.transferee).toBe(null)
    const atFollower = c.step(2, { _tag: "TransferLeadership", id: 5, to: 2 })
    expect(atFollower.events).toEqual([{ _tag: "Rejected", id: 5, reason: "not-leader", leader: 1, detail: "not the leader" }])
  })

  // A successful transfer must not be reported as aborted: RaftActor fails the caller's transfer
  // on TransferAborted. The old leader steps down on the target's vote request (transfer flag)…
  it("a successful transfer is not reported as aborted (old leader deposed by the target's vote request)", () => {
    const c = new Cluster()
    c.elect(1)
    c.step(1, { _tag: "TransferLeadership", id: 1, to: 2 })
    c.stabilize()
    expect(c.leaders()).toEqual([2])
    expect(c.node(1).eventsOf("TransferAborted")).toEqual([])
    c.run(2)
    expect(c.node(1).eventsOf("StateChanged").slice(-1)).toEqual([{ _tag: "StateChanged", role: "follower", term: 3, leader: 2 }])
  })

  // …or, when that request is lost, by the new leader's first append.
  it("a successful transfer is not reported as aborted (old leader learns from the new leader's append)", () => {
    const c = new Cluster()
    c.elect(1)
    c.step(1, { _tag: "TransferLeadership", id: 1, to: 2 })
    c.deliver((m) => m._tag === "TimeoutNow")
    c.take((m) => m._tag === "RequestVote" && m.to === 1)
    c.stabilize()
    expect(c.leaders()).toEqual([2])
    expect(c.node(1).role).toBe("follower")
    expect(c.node(1).eventsOf("TransferAborted")).toEqual([])
  })
})
