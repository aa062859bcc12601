// Three SqlNodes in this process on loopback, each serving /metrics and /health on a free port:
// the expositions parse strictly, the role gauges name the leader, writes move proposals, commit
// index and latency histograms, a bad statement sent through the dqlite client is counted by its
// error code, and /health follows the cluster: 200 when caught up, 503 on a node cut off from
// its peers and while no leader is known, 200 again once a quorum is back.
import { describe, expect, it } from "@effect/vitest"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Duration, Effect, Exit, Logger, LogLevel, Scope } from "effect"
import { make as makeClient } from "../../src/net/client/Client.ts"
import type { SqlNode } from "../../src/node/SqlNode.ts"
import * as SqlNodes from "../../src/node/SqlNode.ts"
import { Disk } from "../../src/storage/Disk.ts"
import type { Family } from "./exposition.ts"
import { parseExposition, sampleValue, samplesOf } from "./exposition.ts"
import { freePort } from "../freePort.ts"

const tickMs = 50

interface Running {
  readonly sql: SqlNode
  readonly scope: Scope.CloseableScope
  readonly dataDir: string
  readonly address: string
  readonly id: string
  readonly metrics: string
}

const startNode = (dataDir: string, address: string, join: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    // Role rounds every 100 ms: joiners come in as spares and are promoted by the leader.
    const sql = yield* SqlNodes.start({ dataDir, address, join, tickMs, metrics: "127.0.0.1:0", roles: { intervalMs: 100 } }).pipe(
      Scope.extend(scope),
      Effect.provide(Disk.layerNode),
      // The nodes' fibers inherit the level: only warnings and errors reach the test output.
      Effect.provide(Logger.minimumLogLevel(LogLevel.Warning)),
      Effect.onError(() => Scope.close(scope, Exit.void))
    )
    return { sql, scope, dataDir, address, id: String(sql.node.identity.nodeId), metrics: sql.metricsAddress! } satisfies Running
  })

const startCluster = Effect.gen(function*() {
  const base = fs.mkdtempSync(path.join(os.tmpdir(), "tqlite-obs-"))
  const addresses = [`127.0.0.1:${yield* freePort}`, `127.0.0.1:${yield* freePort}`, `127.0.0.1:${yield* freePort}`]
  const nodes: Running[] = [yield* startNode(path.join(base, "n1"), addresses[0]!, [])]
  for (const i of [1, 2]) nodes.push(yield* startNode(path.join(base, `n${i + 1}`), addresses[i]!, [addresses[0]!]))
  yield* Effect.addFinalizer(() => Effect.forEach(nodes, (n) => Scope.close(n.scope, Exit.void), { discard: true }))
  // Joiners are spares until the leader's role manager has made them voters.
  for (let i = 0; i < 400; i++) {
    const statuses = yield* Effect.forEach(nodes, (n) => n.sql.node.raft.status)
    if (statuses.every((st) => st.membership.members.filter((m) => m.role === "voter").length === 3)) return nodes
    yield* Effect.sleep(Duration.millis(50))
  }
  return yield* Effect.dieMessage("the joiners did not become voters within 20 s")
})

const get = (address: string, pathAndQuery: string) =>
  Effect.tryPromise({
    try: async (signal) => {
      const response = await fetch(`http://${address}${pathAndQuery}`, { signal })
      return { status: response.status, contentType: response.headers.get("content-type"), body: await response.text() }
    },
    catch: (cause) => new Error(`GET ${address}${pathAndQuery}: ${String(cause)}`)
  }).pipe(Effect.timeoutFail({ duration: Duration.seconds(5), onTimeout: () => new Error(`GET ${address}${pathAndQuery} timed out`) }))

const scrape = (node: Running) =>
  Effect.gen(function*() {
    const response = yield* get(node.metrics, "/metrics")
    expect(response.status).toBe(200)
    expect(response.contentType).toBe("text/plain; version=0.0.4; charset=utf-8")
    const families = parseExposition(response.body)
    // Only this node's series are served, although three nodes share Effect's registry.
    for (const family of families.values()) {
      for (const sample of family.samples) if ("node_id" in sample.labels) expect(sample.labels.node_id).toBe(node.id)
    }
    return families
  })

const health = (node: Running, query = "") =>
  Effect.map(get(node.metrics, `/health${query}`), (r) => ({ status: r.status, body: JSON.parse(r.body) as { status: string; reason: string | null; leaderId: number | null; role: string; commitIndex: number; appliedIndex: number } }))

/** Retries `check` (real time, every 50 ms) until it holds or `timeoutMs` passes. */
const eventually = <A>(what: string, check: Effect.Effect<A | null, unknown>, timeoutMs = 15_000) =>
  Effect.gen(function*() {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const result = yield* Effect.orElseSucceed(check, () => null)
      if (result !== null) return result
      if (Date.now() > deadline) return yield* Effect.dieMessage(`timed out waiting for ${what}`)
      yield* Effect.sleep(Duration.millis(50))
    }
  })

const allHealthy = (nodes: ReadonlyArray<Running>) =>
  eventually("every node healthy", Effect.map(Effect.forEach(nodes, (n) => health(n)), (rs) => (rs.every((r) => r.status === 200) ? rs : null)))

const value = (families: Map<string, Family>, name: string, labels: Record<string, string> = {}) => sampleValue(families, name, labels)

describe("metrics and health of a three-node cluster", () => {
  it.live("serves Prometheus text whose values follow roles, writes and errors", () =>
    Effect.gen(function*() {
      const nodes = yield* startCluster
      yield* allHealthy(nodes)
      const leaderId = (yield* nodes[0]!.sql.node.raft.status).leader
      const leader = nodes.find((n) => n.id === String(leaderId))!
      const followers = nodes.filter((n) => n !== leader)

      for (const node of nodes) {
        const families = yield* scrape(node)
        const isLeader = node === leader
        expect(value(families, "tqlite_raft_role", { role: "leader" })).toBe(isLeader ? 1 : 0)
        expect(value(families, "tqlite_raft_role", { role: "follower" })).toBe(isLeader ? 0 : 1)
        expect(value(families, "tqlite_raft_role", { role: "candidate" })).toBe(0)
        expect(value(families, "tqlite_raft_leader_known")).toBe(1)
        expect(value(families, "tqlite_raft_leader_id")).toBe(Number(leader.id))
        expect(value(families, "tqlite_raft_member")).toBe(1)
        expect(value(families, "tqlite_raft_voters")).toBe(3)
        expect(value(families, "tqlite_raft_term")).toBeGreaterThanOrEqual(1)
        expect(value(families, "tqlite_log_size_bytes")).toBeGreaterThan(0)
        expect(families.get("tqlite_log_persist_seconds")?.type).toBe("histogram")
        expect(value(families, "tqlite_log_persist_seconds_count")).toBeGreaterThan(0)
        const peers = samplesOf(families, "tqlite_peer_connected")
        expect(peers.map((s) => s.labels.peer_id).sort()).toEqual(nodes.filter((n) => n !== node).map((n) => n.id).sort())
        // Links dial when they have something to send: the leader's to each follower and each
        // follower's to the leader are up; a follower's link to another follower may be idle.
        for (const peer of peers) if (isLeader || peer.labels.peer_id === leader.id) expect(peer.value).toBe(1)
      }

      const before = yield* scrape(leader)
      const followerBefore = yield* scrape(followers[0]!)
      const writes = yield* Effect.scoped(
        Effect.gen(function*() {
          const client = yield* makeClient({ servers: nodes.map((n) => n.address), database: "obs" })
          yield* client.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
          for (let i = 0; i < 20; i++) yield* client.exec("INSERT INTO t (v) VALUES (?)", [`row ${i}`])
          const failed = yield* Effect.flip(client.exec("SELEC nothing FROM nowhere"))
          expect(failed._tag).toBe("ServerFailure")
          return { code: (failed as { code: number }).code }
        })
      )
      expect(writes.code).toBe(1) // SQLITE_ERROR: a syntax error
      const after = yield* scrape(leader)

      const proposals = value(after, "tqlite_proposals_total") - value(before, "tqlite_proposals_total")
      expect(proposals).toBeGreaterThanOrEqual(1)
      // Each successful proposal is one committed entry and one commit-latency observation.
      const failures = samplesOf(after, "tqlite_proposal_failures_total").reduce((sum, s) => sum + s.value, 0) -
        samplesOf(before, "tqlite_proposal_failures_total").reduce((sum, s) => sum + s.value, 0)
      expect(value(after, "tqlite_commit_seconds_count") - value(before, "tqlite_commit_seconds_count")).toBe(proposals - failures)
      expect(value(after, "tqlite_raft_commit_index") - value(before, "tqlite_raft_commit_index")).toBeGreaterThanOrEqual(proposals - failures)
      expect(value(after, "tqlite_commit_seconds_sum")).toBeGreaterThan(value(before, "tqlite_commit_seconds_sum"))
      expect(value(after, "tqlite_client_errors_total", { code: "1" }) - (samplesOf(before, "tqlite_client_errors_total", { code: "1" })[0]?.value ?? 0)).toBe(1)
      expect(value(after, "tqlite_client_requests_total", { type: "execSql" }) - (samplesOf(before, "tqlite_client_requests_total", { type: "execSql" })[0]?.value ?? 0))
        .toBeGreaterThanOrEqual(22)
      expect(value(after, "tqlite_database_size_bytes")).toBeGreaterThan(0)

      // Followers persist the same entries and apply up to the leader's commit index.
      const target = value(after, "tqlite_raft_commit_index")
      const followerAfter = yield* eventually("a follower to apply the writes", Effect.map(scrape(followers[0]!), (f) => (value(f, "tqlite_raft_applied_index") >= target ? f : null)))
      expect(value(followerAfter, "tqlite_log_persist_seconds_count")).toBeGreaterThan(value(followerBefore, "tqlite_log_persist_seconds_count"))
      expect(value(followerAfter, "tqlite_proposals_total")).toBe(value(followerBefore, "tqlite_proposals_total"))

      // /health?role=… picks the leader out; anything else is refused.
      expect((yield* health(leader, "?role=leader")).status).toBe(200)
      expect((yield* health(leader, "?role=follower")).status).toBe(503)
      for (const follower of followers) {
        const asLeader = yield* health(follower, "?role=leader")
        expect(asLeader.status).toBe(503)
        expect(asLeader.body.reason).toBe("role is follower, not leader")
        expect((yield* health(follower, "?role=follower")).status).toBe(200)
      }
      expect((yield* health(leader, "?role=king")).status).toBe(400)
      expect((yield* get(leader.metrics, "/nothing")).status).toBe(404)
    }).pipe(Effect.scoped), 60_000)

  it.live("answers 503 on a node cut off from its peers and before a leader is known, 200 once caught up", () =>
    Effect.gen(function*() {
      const nodes = yield* startCluster
      const healthy = yield* allHealthy(nodes)
      for (const r of healthy) {
        expect(r.body.status).toBe("ok")
        expect(r.body.reason).toBeNull()
        expect(r.body.leaderId).not.toBeNull()
        expect(r.body.commitIndex - r.body.appliedIndex).toBeLessThanOrEqual(100)
      }
      const leaderId = String((yield* nodes[0]!.sql.node.raft.status).leader)
      const leader = nodes.find((n) => n.id === leaderId)!
      const [stopped, alsoStopped] = nodes.filter((n) => n !== leader)
      // The leader is cut off: both followers stop.
      yield* Scope.close(stopped!.scope, Exit.void)
      yield* Scope.close(alsoStopped!.scope, Exit.void)
      const cutOff = yield* eventually("the cut-off leader to answer 503", Effect.map(health(leader), (r) => (r.status === 503 ? r : null)))
      expect(cutOff.body.status).toBe("unavailable")
      expect(cutOff.body.reason).toMatch(/not a quorum|no known leader/)
      // Check-quorum makes it step down; with no quorum no leader can be elected.
      const leaderless = yield* eventually("no known leader", Effect.map(health(leader), (r) => (r.status === 503 && r.body.leaderId === null ? r : null)))
      expect(leaderless.body.reason).toMatch(/^no known leader/)
      const gauges = yield* scrape(leader)
      expect(value(gauges, "tqlite_raft_leader_known")).toBe(0)
      expect(value(gauges, "tqlite_raft_role", { role: "leader" })).toBe(0)
      expect(samplesOf(gauges, "tqlite_peer_connected").every((s) => s.value === 0)).toBe(true)

      // The whole cluster stops; one follower restarts alone: it cannot know a leader, so it
      // answers 503 from its first answer on.
      yield* Scope.close(leader.scope, Exit.void)
      const first = yield* startNode(stopped!.dataDir, stopped!.address, [])
      yield* Effect.addFinalizer(() => Scope.close(first.scope, Exit.void))
      for (let i = 0; i < 10; i++) {
        const r = yield* health(first)
        expect(r.status).toBe(503)
        expect(r.body.reason).toMatch(/^no known leader/)
        yield* Effect.sleep(Duration.millis(tickMs * 3))
      }
      expect(value(yield* scrape(first), "tqlite_raft_leader_known")).toBe(0)

      // The old leader restarts too: a quorum again, a leader, both caught up.
      const second = yield* startNode(leader.dataDir, leader.address, [])
      yield* Effect.addFinalizer(() => Scope.close(second.scope, Exit.void))
      const back = yield* allHealthy([first, second])
      for (const r of back) expect(r.body.leaderId).not.toBeNull()
      const status = yield* first.sql.node.raft.status
      expect(status.commitIndex - status.appliedIndex).toBeLessThanOrEqual(100)
      const families = yield* scrape(first)
      expect(value(families, "tqlite_raft_leader_known")).toBe(1)
      expect(value(families, "tqlite_raft_leader_id")).toBe(status.leader)
    }).pipe(Effect.scoped), 60_000)
})
