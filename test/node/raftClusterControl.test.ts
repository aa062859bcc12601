// The gateway's cluster requests over the Raft node: who leads, as a member sees it.
import { describe, expect, it } from "vitest"
import { leaderOf } from "../../src/node/raftClusterControl.ts"

describe("leaderOf", () => {
  const membership = {
    members: [
      { id: 1, address: "a:1", role: "voter" as const },
      { id: 2, address: "b:2", role: "voter" as const },
      { id: 3, address: "c:3", role: "standby" as const }
    ]
  }
  const status = (id: number, role: "leader" | "follower", leader: number | null) =>
    ({ id, role, leader, term: 1, commitIndex: 1, appliedIndex: 1, lastIndex: 1, membership, peers: [] })
  it("names the leader from any member that knows it (a standby too); nobody when unknown or not a member", () => {
    expect(leaderOf(status(1, "leader", 1))).toEqual({ id: 1, address: "a:1" })
    expect(leaderOf(status(2, "follower", 1))).toEqual({ id: 1, address: "a:1" })
    expect(leaderOf(status(2, "follower", null))).toBeNull()
    expect(leaderOf(status(3, "follower", 1))).toEqual({ id: 1, address: "a:1" })
    expect(leaderOf(status(3, "follower", null))).toBeNull()
    expect(leaderOf(status(9, "follower", 1))).toBeNull()
  })
})
