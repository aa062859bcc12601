// A node's metrics without a node: durations read from Effect's Clock (TestClock here), failures
// counted by tag, error codes bounded, peers that leave reported disconnected, role gauges.
import { describe, expect, it } from "@effect/vitest"
import { Data, Duration, Effect, Fiber, Metric, TestClock } from "effect"
import type { NodeStatus } from "../../src/actors/RaftActor.ts"
import type { LinkStats } from "../../src/net/peers/PeerLink.ts"
import * as NodeMetrics from "../../src/observability/NodeMetrics.ts"
import { renderPrometheus } from "../../src/observability/prometheus.ts"
import { parseExposition, sampleValue, samplesOf } from "./exposition.ts"

let nextId = 900_000_000 + (process.pid % 1000) * 1000
/** A node id no other test in this process uses (Effect's registry is global). */
const freshMetrics = () => NodeMetrics.make(++nextId)

const scrapeOf = (metrics: NodeMetrics.NodeMetrics) =>
  Effect.map(Metric.snapshot, (pairs) =>
    parseExposition(renderPrometheus(pairs.filter((p) => p.metricKey.tags.some((t) => t.key === "node_id" && t.value === String(metrics.nodeId)))).text))

class NotLeader extends Data.TaggedError("NotLeader")<{}> {}

const link = (peer: number, connected: boolean): LinkStats => ({
  peer,
  address: `127.0.0.1:${peer}`,
  connected,
  sent: 0,
  dropped: 0,
  reconnects: 0,
  connectFailures: 0,
  queued: 3,
  queuedBytes: 0,
  writeBufferBytes: 0,
  bytesWritten: 0,
  writes: 0
})

describe("NodeMetrics", () => {
  it.effect("times persists and proposals by the Clock, and counts failed proposals by tag", () =>
    Effect.gen(function*() {
      const metrics = freshMetrics()
      const persist = yield* Effect.fork(metrics.timePersist(Effect.sleep(Duration.millis(30))))
      yield* TestClock.adjust(Duration.millis(30))
      yield* Fiber.join(persist)
      const propose = yield* Effect.fork(metrics.timeProposal(Effect.as(Effect.sleep(Duration.millis(200)), "applied")))
      yield* TestClock.adjust(Duration.millis(200))
      expect(yield* Fiber.join(propose)).toBe("applied")
      expect(yield* Effect.flip(metrics.timeProposal(Effect.fail(new NotLeader())))).toBeInstanceOf(NotLeader)

      const scrape = yield* scrapeOf(metrics)
      expect(sampleValue(scrape, "tqlite_log_persist_seconds_sum")).toBeCloseTo(0.03, 9)
      expect(sampleValue(scrape, "tqlite_log_persist_seconds_bucket", { le: "0.025" })).toBe(0)
      expect(sampleValue(scrape, "tqlite_log_persist_seconds_bucket", { le: "0.05" })).toBe(1)
      expect(sampleValue(scrape, "tqlite_proposals_total")).toBe(2)
      expect(sampleValue(scrape, "tqlite_commit_seconds_count")).toBe(1)
      expect(sampleValue(scrape, "tqlite_commit_seconds_sum")).toBeCloseTo(0.2, 9)
      expect(sampleValue(scrape, "tqlite_commit_seconds_bucket", { le: "0.1" })).toBe(0)
      expect(sampleValue(scrape, "tqlite_commit_seconds_bucket", { le: "0.25" })).toBe(1)
      expect(sampleValue(scrape, "tqlite_proposal_failures_total", { error: "NotLeader" })).toBe(1)
    }))

  it.effect("counts at most errorCodesMax codes apart, the rest as other", () =>
    Effect.gen(function*() {
      const metrics = freshMetrics()
      for (let code = 0; code < NodeMetrics.errorCodesMax + 44; code++) metrics.gateway.failure(code)
      metrics.gateway.failure(1)
      const scrape = yield* scrapeOf(metrics)
      const series = samplesOf(scrape, "tqlite_client_errors_total")
      expect(series.length).toBe(NodeMetrics.errorCodesMax + 1)
      expect(sampleValue(scrape, "tqlite_client_errors_total", { code: "1" })).toBe(2)
      expect(sampleValue(scrape, "tqlite_client_errors_total", { code: "other" })).toBe(44)
    }))

  it.effect("reports a peer that left the configuration as disconnected", () =>
    Effect.gen(function*() {
      const metrics = freshMetrics()
      yield* metrics.setPeers([link(11, true), link(12, true)])
      expect(sampleValue(yield* scrapeOf(metrics), "tqlite_peer_connected", { peer_id: "12" })).toBe(1)
      yield* metrics.setPeers([link(11, false)])
      const scrape = yield* scrapeOf(metrics)
      expect(sampleValue(scrape, "tqlite_peer_connected", { peer_id: "11" })).toBe(0)
      expect(sampleValue(scrape, "tqlite_peer_connected", { peer_id: "12" })).toBe(0)
      expect(sampleValue(scrape, "tqlite_peer_queued_messages", { peer_id: "11" })).toBe(3)
      expect(sampleValue(scrape, "tqlite_peer_queued_messages", { peer_id: "12" })).toBe(0)
    }))

  it.effect("sets one role gauge to 1 and the indexes from the status", () =>
    Effect.gen(function*() {
      const metrics = freshMetrics()
      const status: NodeStatus = {
        id: metrics.nodeId,
        role: "candidate",
        term: 7,
        leader: null,
        commitIndex: 40,
        appliedIndex: 38,
        lastIndex: 41,
        membership: { members: [{ id: metrics.nodeId, address: "a:1", role: "voter" }, { id: 5, address: "b:1", role: "standby" }] },
        peers: []
      }
      yield* metrics.setStatus(status)
      const scrape = yield* scrapeOf(metrics)
      expect(samplesOf(scrape, "tqlite_raft_role").map((s) => [s.labels.role, s.value])).toEqual([
        ["candidate", 1],
        ["follower", 0],
        ["leader", 0],
        ["preCandidate", 0]
      ])
      expect(sampleValue(scrape, "tqlite_raft_term")).toBe(7)
      expect(sampleValue(scrape, "tqlite_raft_commit_index")).toBe(40)
      expect(sampleValue(scrape, "tqlite_raft_applied_index")).toBe(38)
      expect(sampleValue(scrape, "tqlite_raft_last_log_index")).toBe(41)
      expect(sampleValue(scrape, "tqlite_raft_leader_known")).toBe(0)
      expect(sampleValue(scrape, "tqlite_raft_leader_id")).toBe(0)
      expect(sampleValue(scrape, "tqlite_raft_member")).toBe(1)
      expect(sampleValue(scrape, "tqlite_raft_voters")).toBe(1)
    }))
})
