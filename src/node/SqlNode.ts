// A tqlite node as users run it: the node wiring (Node.ts) with the replicated SQLite state
// machine, the dqlite wire-protocol gateway on the node's address, and cluster control over
// Raft. `join` asks a member to add this node (as a spare, then a voter).
import * as path from "node:path"
import type { Scope } from "effect"
import { Duration, Effect, Schedule } from "effect"
import { make as makeClient } from "../net/client/Client.ts"
import { makeClientHandlerSlot } from "../net/gateway/Gateway.ts"
import { makeRaftClusterControl } from "../net/gateway/raftClusterControl.ts"
import { discoverCluster } from "../net/peers/discover.ts"
import type { PeerTlsOptions } from "../net/peers/sockets.ts"
import * as Replicated from "../sqlite/ReplicatedDatabases.ts"
import type { HealthLimits } from "../observability/health.ts"
import * as MetricsServer from "../observability/MetricsServer.ts"
import { nodeIdLabel } from "../observability/NodeMetrics.ts"
import * as NodeObserver from "../observability/NodeObserver.ts"
import type { SqliteApplyResult } from "../sqlite/SqliteMachine.ts"
import { SqliteMachine } from "../sqlite/SqliteMachine.ts"
import type { Disk } from "../storage/Disk.ts"
import type { TqliteNode } from "./Node.ts"
import * as Node from "./Node.ts"

export interface SqlNodeOptions {
  readonly dataDir: string
  readonly address: string
  /** Members to join through; empty: found a new cluster (or restart an existing node). */
  readonly join: ReadonlyArray<string>
  readonly tickMs?: number
  /** Mutual TLS between peers and TLS for clients (certificate, key, cluster CA). */
  readonly tls?: PeerTlsOptions
  /** "host:port" for the HTTP endpoint serving /metrics and /health (port 0: a free one);
   * absent: no endpoint (metrics are still recorded, in Effect's registry). */
  readonly metrics?: string
  /** Overrides of the bounds /health applies (defaults: health.ts `healthLimitsFor`). */
  readonly health?: Partial<HealthLimits>
}

export interface SqlNode {
  readonly node: TqliteNode<SqliteApplyResult, SqliteMachine>
  readonly databases: Replicated.ReplicatedDatabases
  /** Where /metrics and /health are served, or null without `metrics`. */
  readonly metricsAddress: string | null
}

export const start = (options: SqlNodeOptions): Effect.Effect<SqlNode, unknown, Scope.Scope | Disk> =>
  Effect.gen(function*() {
    const tickMs = options.tickMs ?? 100
    const slot = makeClientHandlerSlot()
    const joining = options.join.length > 0
    const cluster = joining ? yield* firstAnswer(options.join, options.tls ?? null) : null
    const node = yield* Node.make<SqliteApplyResult, SqliteMachine>({
      dataDir: options.dataDir,
      address: options.address,
      start: cluster === null ? { _tag: "Bootstrap" } : { _tag: "Join", clusterId: cluster.clusterId },
      stateMachine: (identity, snapshot) =>
        Effect.acquireRelease(
          SqliteMachine.open({ dataDir: path.join(options.dataDir, "sqlite"), nodeId: identity.nodeId, pageSize: 4096, fsync: "sync", bootSnapshot: snapshot }),
          (machine) => Effect.sync(() => machine.close())
        ),
      tickMs,
      onClientConnection: slot.handler,
      ...(options.tls !== undefined ? { tls: options.tls } : {})
    })
    return yield* Effect.annotateLogs(serve(options, node, slot, tickMs, joining), nodeIdLabel, String(node.identity.nodeId))
  })

/** The node's SQL surface, gateway, join and metrics endpoint, once the node itself runs. */
const serve = (
  options: SqlNodeOptions,
  node: TqliteNode<SqliteApplyResult, SqliteMachine>,
  slot: ReturnType<typeof makeClientHandlerSlot>,
  tickMs: number,
  joining: boolean
): Effect.Effect<SqlNode, unknown, Scope.Scope> =>
  Effect.gen(function*() {
    const metrics = node.observability.metrics
    // Proposals are timed where the node hands Raft to SQLite: proposal → committed and applied.
    const raft: typeof node.raft = { ...node.raft, propose: (data) => metrics.timeProposal(node.raft.propose(data)) }
    const databases = yield* Replicated.make({ raft, machine: node.stateMachine, pollMs: tickMs })
    slot.bind({
      databases,
      cluster: yield* makeRaftClusterControl({ node: node.raft }),
      observer: metrics.gateway,
      // DUMP serves the leader's committed image; the WAL part is empty since the image already
      // holds every committed page (as dqlite >= 1.12 sends it).
      dumper: { dump: (name) => Effect.map(databases.committedImage(name), (main) => (main === null ? null : { main, wal: new Uint8Array(0) })) }
    })
    // Up before joining, so /health can say "not a member" while the join is under way.
    const metricsAddress = options.metrics === undefined ? null : (yield* MetricsServer.serve({
      address: options.metrics,
      endpoints: NodeObserver.endpoints({
        metrics,
        contact: node.observability.contact,
        status: node.raft.status,
        links: Effect.map(node.transport.stats, (stats) => stats.links),
        directories: {
          log: path.join(options.dataDir, "log"),
          snapshots: path.join(options.dataDir, "snapshots"),
          databases: path.join(options.dataDir, "sqlite")
        },
        healthLimits: { ...node.observability.healthLimits, ...options.health }
      })
    })).address
    if (joining && !(yield* isMember(node))) yield* join(node, options.join, options.tls ?? null)
    // Shutting down (scope close, e.g. SIGTERM): a leader first hands leadership to a caught-up
    // voter, so the cluster does not wait an election timeout. Bounded; a failure only costs that.
    yield* Effect.addFinalizer(() =>
      Effect.gen(function*() {
        const status = yield* node.raft.status
        if (status.role !== "leader" || status.membership.members.filter((m) => m.role === "voter").length < 2) return
        const handed = yield* Effect.either(node.raft.transferLeadership(null).pipe(Effect.timeout(Duration.seconds(3))))
        yield* Effect.logInfo(handed._tag === "Right" ? "leadership handed over before shutdown" : `leadership hand-over before shutdown failed (${JSON.stringify(handed.left)}); the cluster will elect`)
      })
    )
    return { node, databases, metricsAddress }
  })

const isMember = (node: TqliteNode<SqliteApplyResult, SqliteMachine>) =>
  Effect.map(node.raft.status, (status) => status.membership.members.some((m) => m.id === node.identity.nodeId))

/** The cluster id from the first member that answers. */
const firstAnswer = (addresses: ReadonlyArray<string>, secure: PeerTlsOptions | null) =>
  Effect.firstSuccessOf(addresses.map((address) => discoverCluster(address, secure)))

/** Asks the cluster (through whichever member leads) to add this node as a spare, then makes it
 * a voter; retried with backoff while the cluster elects or is busy with another change. */
const join = (node: TqliteNode<SqliteApplyResult, SqliteMachine>, members: ReadonlyArray<string>, secure: PeerTlsOptions | null) =>
  Effect.scoped(
    Effect.gen(function*() {
      const client = yield* makeClient({ servers: members, database: "tqlite-control", tls: secure })
      const id = BigInt(node.identity.nodeId)
      const retry = Schedule.exponential(Duration.millis(100)).pipe(Schedule.union(Schedule.spaced(Duration.seconds(2))), Schedule.intersect(Schedule.recurs(30)))
      const servers = yield* client.cluster.pipe(Effect.retry(retry))
      if (!servers.some((s) => s.id === id)) yield* client.add(id, node.identity.address).pipe(Effect.retry(retry))
      yield* client.assign(id, "voter").pipe(Effect.retry(retry))
      yield* Effect.logInfo(`node ${node.identity.nodeId} joined the cluster as a voter`)
    })
  )
