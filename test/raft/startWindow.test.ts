// The start-up window of lease mode (a node refuses votes until it has ticked an election
// timeout, since before a crash it may have acknowledged a leader whose lease still counts on
// it), and the vote requests it defers meanwhile: answered when the window ends, as if they had
// arrived then, so a whole-cluster restart elects without waiting out another election timeout.
// The mutation `deferredVotesEarly` answers them inside the window: a voter that restarted right
// after acknowledging the leader then elects a second leader while the first one's lease holds.
import { describe, expect, it } from "vitest"
import { leaseHolds } from "../../src/raft/lease.ts"
import type { RaftBugs } from "../../src/raft/config.ts"
import { Cluster } from "./harness.ts"

/** n1 leads with a lease that n2 and n3 acknowledged; n1 is then cut off, n3 restarts (it forgot
 * the acknowledgement) and n2 campaigns. Tick by tick: when n2 wins, and whether n1's lease
 * still held at that moment. */
function restartAfterAcknowledging(bugs: RaftBugs = {}) {
  const c = new Cluster({ config: { readMode: "lease", checkQuorum: true, bugs } })
  // Past every node's own start-up window, without campaigning meanwhile.
  for (let t = 0; t < 10; t++) {
    for (const id of [1, 2, 3]) {
      c.node(id).state.electionElapsed = 0
      c.tick(id)
    }
  }
  c.queue = []
  c.elect(1)
  c.propose(1, "x")
  c.stabilize()
  c.tick(1)
  c.stabilize()
  expect(leaseHolds(c.node(1).state)).toBe(true)
  c.isolate(1)
  c.restart(3)
  c.step(2, { _tag: "Campaign" })
  c.stabilize()
  const deferredAtStart = c.node(3).state.deferredVotes.length
  for (let tick = 1; tick <= 12; tick++) {
    for (const id of [1, 2, 3]) c.tick(id)
    c.stabilize()
    if (c.node(2).role === "leader") return { wonAtTick: tick, firstLeaseHeld: leaseHolds(c.node(1).state), deferredAtStart }
  }
  return { wonAtTick: null, firstLeaseHeld: false, deferredAtStart }
}

describe("the start-up window and its deferred votes", () => {
  it("a restarted voter keeps the request and answers it when its window ends: the candidate wins then, after the old lease ran out", () => {
    const outcome = restartAfterAcknowledging()
    expect(outcome.deferredAtStart).toBe(1)
    // n3's window is 10 of its ticks; n2 wins on that tick, not an election timeout later.
    expect(outcome.wonAtTick).toBe(10)
    expect(outcome.firstLeaseHeld).toBe(false)
  })

  it("the mutation (deferred votes answered inside the window) elects a second leader while the first one's lease holds", () => {
    const outcome = restartAfterAcknowledging({ deferredVotesEarly: true })
    expect(outcome.wonAtTick).not.toBeNull()
    expect(outcome.wonAtTick!).toBeLessThan(10)
    expect(outcome.firstLeaseHeld).toBe(true)
  })
})
