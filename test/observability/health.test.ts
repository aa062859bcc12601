// The /health verdict on its own: each reason a node is unavailable, in the order they are
// checked, and the role filter.
import { describe, expect, it } from "vitest"
import type { NodeCondition, NodeStatus } from "../../src/actors/RaftActor.ts"
import type { HealthInput } from "../../src/observability/health.ts"
import { evaluateHealth, leaderQuorumContact, parseWantedRole } from "../../src/observability/health.ts"
import type { NodeId } from "../../src/raft/types.ts"

const limits = { appliedLagMax: 10, contactMaxMs: 1000, stallMaxMs: 3000 }
const members = [1, 2, 3].map((id) => ({ id, address: `127.0.0.1:${9000 + id}`, role: "voter" as const }))

const status = (overrides: Partial<NodeStatus> = {}): NodeStatus => ({
  id: 2,
  role: "follower",
  term: 4,
  leader: 1,
  commitIndex: 100,
  appliedIndex: 100,
  lastIndex: 100,
  membership: { members },
  peers: [],
  ...overrides
})

const input = (s: NodeStatus, heard: Record<number, number> = { 1: 9_500 }, want: HealthInput["want"] = null): HealthInput => ({
  status: s,
  nowMs: 10_000,
  lastHeardMs: (peer: NodeId) => heard[peer] ?? null,
  want
})

describe("evaluateHealth", () => {
  it("is ok for a caught-up follower that heard its leader recently", () => {
    const report = evaluateHealth(input(status()), limits)
    expect(report).toMatchObject({ status: "ok", reason: null, nodeId: 2, leaderId: 1, leaderContactAgeMs: 500 })
  })

  it("reports what the state machine applied (a snapshot counts once installed), else the core's applied index", () => {
    expect(evaluateHealth(input(status({ appliedIndex: 100, machineAppliedIndex: 40 })), limits)).toMatchObject({ appliedIndex: 100, machineAppliedIndex: 40 })
    expect(evaluateHealth(input(status({ appliedIndex: 100 })), limits).machineAppliedIndex).toBe(100)
  })

  it("is unavailable for a node outside the configuration", () => {
    const report = evaluateHealth(input(status({ membership: { members: members.filter((m) => m.id !== 2) } })), limits)
    expect(report.status).toBe("unavailable")
    expect(report.reason).toBe("not a member of the cluster configuration")
  })

  it("is unavailable without a known leader", () => {
    expect(evaluateHealth(input(status({ leader: null, role: "preCandidate" })), limits).reason).toBe("no known leader (role preCandidate, term 4)")
  })

  it("is unavailable for a follower whose leader went quiet, or was never heard", () => {
    expect(evaluateHealth(input(status(), { 1: 8_999 }), limits).reason).toBe("leader 1 last heard 1001 ms ago (limit 1000 ms)")
    expect(evaluateHealth(input(status(), { 1: 9_000 }), limits).status).toBe("ok")
    expect(evaluateHealth(input(status(), {}), limits).reason).toBe("leader 1 last heard never (limit 1000 ms)")
  })

  it("is unavailable for a leader that has not heard a quorum of voters", () => {
    const leader = status({ id: 1, role: "leader", leader: 1 })
    expect(evaluateHealth(input(leader, { 2: 9_900 }), limits).status).toBe("ok")
    expect(evaluateHealth(input(leader, { 2: 8_000, 3: 8_500 }), limits).reason).toBe("leader heard from 1 of 3 voters within 1000 ms, not a quorum")
    // A single-voter cluster is its own quorum.
    const alone = status({ id: 1, role: "leader", leader: 1, membership: { members: [members[0]!] } })
    expect(evaluateHealth(input(alone, {}), limits).status).toBe("ok")
  })

  it("is unavailable while the applied index trails the commit index past the bound", () => {
    expect(evaluateHealth(input(status({ appliedIndex: 90 })), limits).status).toBe("ok")
    expect(evaluateHealth(input(status({ appliedIndex: 89 })), limits).reason).toBe("applied index 89 trails commit index 100 by 11 (limit 10)")
  })

  it("filters by role when asked", () => {
    expect(evaluateHealth(input(status(), undefined, "leader"), limits).reason).toBe("role is follower, not leader")
    expect(evaluateHealth(input(status(), undefined, "follower"), limits).status).toBe("ok")
    const leader = status({ id: 1, role: "leader", leader: 1 })
    expect(evaluateHealth(input(leader, { 2: 9_900 }, "leader"), limits).status).toBe("ok")
    expect(evaluateHealth(input(leader, { 2: 9_900 }, "follower"), limits).reason).toBe("role is leader, not follower")
  })

  describe("the node's machinery (issue 13)", () => {
    const healthy: NodeCondition = { diskFull: [], stopped: [], raftActiveMs: 9_990, applierActiveMs: 9_990 }
    const leader = status({ id: 1, role: "leader", leader: 1 })
    const withCondition = (s: NodeStatus, condition: NodeCondition): HealthInput => ({ ...input(s, { 2: 9_900 }), condition })

    it("is ok when every part runs", () => {
      expect(evaluateHealth(withCondition(leader, healthy), limits).status).toBe("ok")
    })

    it("is unavailable once an actor gave up, even for a node that still looks like a leader", () => {
      const report = evaluateHealth(withCondition(leader, { ...healthy, stopped: ["raft-1/log-writer gave up after 0 restarts"] }), limits)
      expect(report.status).toBe("unavailable")
      expect(report.reason).toBe("stopped: raft-1/log-writer gave up after 0 restarts")
    })

    it("is unavailable for a leader that cannot open its SQLite, saying why; ok once it is not set", () => {
      const reason = "cannot lead: cannot open database main (SqliteError: file is not a database)"
      const report = evaluateHealth(withCondition(leader, { ...healthy, cannotLead: reason }), limits)
      expect(report.status).toBe("unavailable")
      expect(report.reason).toBe(reason)
      expect(evaluateHealth(withCondition(leader, { ...healthy, cannotLead: null }), limits).status).toBe("ok")
    })

    it("says disk full, naming the part and the path", () => {
      const episode = { part: "log" as const, path: "/data/log/log-1.seg", op: "write", sinceMs: 7_000, attempts: 5 }
      expect(evaluateHealth(withCondition(leader, { ...healthy, diskFull: [episode] }), limits).reason)
        .toBe("disk full: the log cannot write (write /data/log/log-1.seg) for 3000 ms")
    })

    it("is unavailable when the Raft loop has finished no batch for longer than the stall bound", () => {
      expect(evaluateHealth(withCondition(leader, { ...healthy, raftActiveMs: 7_000 }), limits).status).toBe("ok")
      expect(evaluateHealth(withCondition(leader, { ...healthy, raftActiveMs: 6_999 }), limits).reason)
        .toBe("the Raft loop has made no progress for 3001 ms (limit 3000 ms)")
    })

    it("is unavailable when the applier trails the commit index and has not advanced for longer than the bound", () => {
      const behind = status({ id: 1, role: "leader", leader: 1, appliedIndex: 95 })
      expect(evaluateHealth(withCondition(behind, { ...healthy, applierActiveMs: 6_000 }), limits).reason)
        .toBe("the applier has not advanced for 4000 ms (applied 95, committed 100; limit 3000 ms)")
      // Caught up: an idle applier is fine.
      expect(evaluateHealth(withCondition(leader, { ...healthy, applierActiveMs: 1_000 }), limits).status).toBe("ok")
    })
  })

  it("parses the role parameter", () => {
    expect(parseWantedRole(undefined)).toEqual({ ok: true, want: null })
    expect(parseWantedRole("leader")).toEqual({ ok: true, want: "leader" })
    expect(parseWantedRole("Leader").ok).toBe(false)
  })
})

describe("leaderQuorumContact", () => {
  const peer = (id: number, silentMs: number) => ({ id, matchIndex: 100, silentMs, replication: "replicate" as const })
  it("counts the leader and the voters heard within the window; none on a follower", () => {
    const leader = (peers: NodeStatus["peers"]) => status({ id: 1, role: "leader", leader: 1, peers })
    expect(leaderQuorumContact(leader([peer(2, 100), peer(3, 900)]), 500)).toEqual({ heard: 2, voters: 3, quorum: true })
    expect(leaderQuorumContact(leader([peer(2, 600), peer(3, 900)]), 500)).toEqual({ heard: 1, voters: 3, quorum: false })
    // A voter the leader has no progress for (just added) is not heard.
    expect(leaderQuorumContact(leader([peer(2, 100)]), 500)).toEqual({ heard: 2, voters: 3, quorum: true })
    expect(leaderQuorumContact(leader([]), 500)).toEqual({ heard: 1, voters: 3, quorum: false })
    expect(leaderQuorumContact(status(), 500)).toBeNull()
  })
})

