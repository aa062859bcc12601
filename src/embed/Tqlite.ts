// tqlite inside an Effect application: the `Tqlite` service and its layers.
//
// `Tqlite.layer(config)` runs a node (src/node/SqlNode.ts) in the host's runtime and scope;
// `Tqlite.layerRemote(options)` gives the same service over the wire client only.
//
// Routing (the embedded node). Writes and linearizable reads only run on the leader, yet every
// instance of a replicated service must be able to serve its callers. Each request therefore
// goes one of two ways, decided when it starts:
// - the local node leads → the node's own SQL surface (ReplicatedDatabases), no socket at all;
// - otherwise → the wire client (src/net/client), which finds the leader from this node (a
//   follower names it) and sends the request there.
// A local attempt refused with "not leader" (leadership moved between the role check and the
// statement, or the new leader's barrier is not applied yet) did nothing, and goes the wire way.
// An interactive transaction picks its way once, at BEGIN, and keeps it: the statements inside
// use one local session or one pinned connection, through a fiber-local binding.
//
// Values are the same both ways (values.ts): a program cannot tell which route served it.
import type { Scope } from "effect"
import { Cause, Context, Duration, Effect, Exit, FiberRef, Layer, Option, Scope as ScopeOps, Stream } from "effect"
import type { ClientOptions, DqliteClientService, ServerRole } from "../net/client/Client.ts"
import * as Client from "../net/client/Client.ts"
import type { ClientError } from "../net/client/errors.ts"
import type { ParamValue, Row, RowValue } from "../net/client/values.ts"
import type { PeerTlsOptions } from "../net/peers/sockets.ts"
import { describeActorFailed } from "../runtime/errors.ts"
import * as SqlNode from "../node/SqlNode.ts"
import type { NodeStatus } from "../actors/RaftActor.ts"
import type { SqlFailure, SqlSession, SqlValue } from "../sqlite/Sql.ts"
import { classifyStatement, splitStatements } from "../sqlite/statements.ts"
import { Disk } from "../storage/Disk.ts"
import type { TqliteError } from "./errors.ts"
import { fromClientError, fromSqlFailure, misuseCode, SqlError, TqliteStartError } from "./errors.ts"
import type { QueryResult } from "./values.ts"
import { localParams, localRows } from "./values.ts"

export type { ParamValue, QueryResult, Row, RowValue }

/** Options of the wire client the service routes through (timeouts, retries, pool size). */
export type RoutingClientOptions = Omit<ClientOptions, "servers" | "database" | "tls">

export interface TqliteConfig {
  /** Where the node keeps its identity, Raft log, snapshots and databases. */
  readonly dataDir: string
  /** "host:port" the node listens on for peers and clients, with an explicit port. A data
   * directory belongs to one address. */
  readonly address: string
  /** Members to join through; empty or absent: found a cluster (or restart a member). */
  readonly join?: ReadonlyArray<string>
  /** Mutual TLS between peers and TLS for clients (certificate, key, cluster CA). */
  readonly tls?: PeerTlsOptions
  /** Raft tick; election and heartbeat timeouts are counted in ticks. Default 100 ms. */
  readonly tickMs?: number
  /** The database this service reads and writes. Default "main". */
  readonly database?: string
  readonly client?: RoutingClientOptions
}

export type TqliteRemoteConfig = ClientOptions

export interface ExecResult {
  readonly lastInsertId: bigint
  readonly rowsAffected: number
}

export interface LeaderInfo {
  readonly id: bigint
  readonly address: string
}

export interface Member {
  readonly id: bigint
  readonly address: string
  readonly role: ServerRole
}

/** A pre-candidate counts as a candidate: both are looking for a leader. */
export type NodeRole = "leader" | "follower" | "candidate"

export interface RoleChange {
  readonly role: NodeRole
  readonly term: number
  /** The leader this node knows of (itself when leading), if any. */
  readonly leader: LeaderInfo | null
}

export interface NodeInfo {
  readonly id: bigint
  readonly address: string
  readonly clusterId: string
}

export interface NodeState extends RoleChange {
  readonly commitIndex: number
  readonly appliedIndex: number
}

export interface TqliteService {
  readonly database: string
  /** The embedded node, or null for a remote-only service. */
  readonly node: NodeInfo | null
  /** Runs every statement of `sql`, each taking as many of `params` as it has parameters;
   * autocommit unless inside `transaction`. */
  readonly execute: (sql: string, params?: ReadonlyArray<ParamValue>) => Effect.Effect<ExecResult, TqliteError>
  /** Rows of the first statement of `sql` (as dqlite's QUERY_SQL; later statements run too).
   * Values as the wire client gives them: INTEGER as a number (a bigint beyond 2^53), REAL as a
   * number. Reads are linearizable: they run on the leader after it confirmed its leadership. */
  readonly query: (sql: string, params?: ReadonlyArray<ParamValue>) => Effect.Effect<QueryResult, TqliteError>
  /** An interactive transaction: `execute`/`query` inside `effect` (and in fibers it forks) run
   * in it; COMMIT when `effect` succeeds, ROLLBACK when it fails or is interrupted. Nested calls
   * join the outer transaction. BEGIN/COMMIT/ROLLBACK are this function's: sending them as SQL
   * is refused (SAVEPOINT, RELEASE and ROLLBACK TO are fine inside). */
  readonly transaction: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E | TqliteError, R>
  /** The current leader (as this node knows it; for a remote service, as the cluster says). */
  readonly leader: Effect.Effect<LeaderInfo | null, TqliteError>
  readonly members: Effect.Effect<ReadonlyArray<Member>, TqliteError>
  /** The embedded node's Raft state; null for a remote-only service. */
  readonly state: Effect.Effect<NodeState | null>
  /** This node's role now, then every change of its role or of the leader it knows (sampled
   * every tick). Empty for a remote-only service. */
  readonly roleChanges: Stream.Stream<RoleChange>
  /** How many `execute`/`query` calls this service served on the local node and how many it
   * routed through the wire client, since it started. */
  readonly stats: Effect.Effect<RoutingStats>
}

export interface RoutingStats {
  readonly localStatements: number
  readonly routedStatements: number
}

export class Tqlite extends Context.Tag("tqlite/embed/Tqlite")<Tqlite, TqliteService>() {
  /** Runs a node in the layer's scope; closing it shuts the node down gracefully (a leader
   * hands leadership over first). */
  static readonly layer = (config: TqliteConfig): Layer.Layer<Tqlite, TqliteStartError> => Layer.scoped(Tqlite, make(config))
  /** The same service over the wire client only: no local node. */
  static readonly layerRemote = (config: TqliteRemoteConfig): Layer.Layer<Tqlite, TqliteStartError> => Layer.scoped(Tqlite, makeRemote(config))
  /** `layer` as a scoped effect. */
  static readonly make = (config: TqliteConfig): Effect.Effect<TqliteService, TqliteStartError, Scope.Scope> => make(config)
  /** `layerRemote` as a scoped effect. */
  static readonly makeRemote = (config: TqliteRemoteConfig): Effect.Effect<TqliteService, TqliteStartError, Scope.Scope> => makeRemote(config)
}

export const defaultDatabase = "main"

/** Runs a node in the current scope and serves the Tqlite API from it. */
export const make = (config: TqliteConfig): Effect.Effect<TqliteService, TqliteStartError, Scope.Scope> =>
  Effect.gen(function*() {
    const database = config.database ?? defaultDatabase
    if (database.length === 0) return yield* new TqliteStartError({ message: "the database name is empty", cause: null })
    if (!/^.+:([1-9][0-9]{0,4})$/.test(config.address) || Number(config.address.split(":").at(-1)) > 65535) {
      return yield* new TqliteStartError({ message: `address ${JSON.stringify(config.address)}: expected "host:port" with a port in 1…65535`, cause: null })
    }
    const join = config.join ?? []
    const started = yield* SqlNode.start({
      dataDir: config.dataDir,
      address: config.address,
      join,
      ...(config.tickMs !== undefined ? { tickMs: config.tickMs } : {}),
      ...(config.tls !== undefined ? { tls: config.tls } : {})
    }).pipe(
      Effect.provide(Disk.layerNode),
      Effect.mapError((cause) => new TqliteStartError({ message: `the node did not start: ${describe(cause)}`, cause }))
    )
    const identity = started.node.identity
    // This node first: it names the leader whenever it knows one; the join list covers the rest.
    const client = yield* Client.make({
      ...config.client,
      servers: [...new Set([identity.address, ...join])],
      database,
      tls: config.tls ?? null
    })
    const shared = yield* started.databases.open(database).pipe(
      Effect.mapError((failure) => new TqliteStartError({ message: `cannot open database ${database}: ${failure.message}`, cause: failure }))
    )
    const raft = started.node.raft
    // The host's process is not ours to end: an actor that gave up is logged in one line, and the
    // node stops claiming any role (its status says follower, no leader), so requests go to the
    // other members through the client instead of to a zombie leader.
    yield* raft.failed.pipe(
      Effect.catchAll((failure) => Effect.logError(`tqlite node ${identity.nodeId} stopped serving: ${describeActorFailed(failure)}; restart it`)),
      Effect.forkScoped
    )
    return makeService({
      database,
      client,
      local: {
        info: { id: BigInt(identity.nodeId), address: identity.address, clusterId: identity.clusterId },
        status: raft.status,
        changes: raft.changes,
        shared,
        open: (name) => started.databases.open(name)
      }
    })
  })

/** The service over the wire client only, in the current scope. */
export const makeRemote = (config: TqliteRemoteConfig): Effect.Effect<TqliteService, TqliteStartError, Scope.Scope> =>
  Effect.gen(function*() {
    if (config.servers.length === 0) return yield* new TqliteStartError({ message: "no servers given", cause: null })
    if (config.database.length === 0) return yield* new TqliteStartError({ message: "the database name is empty", cause: null })
    const client = yield* Client.make(config)
    return makeService({ database: config.database, client, local: null })
  })

interface LocalNode {
  readonly info: NodeInfo
  readonly status: Effect.Effect<NodeStatus>
  readonly changes: Stream.Stream<NodeStatus>
  /** The session autocommit statements share (it never holds a transaction: see `refusal`). */
  readonly shared: SqlSession
  readonly open: (name: string) => Effect.Effect<SqlSession, SqlFailure, Scope.Scope>
}

type Route =
  | { readonly _tag: "Local"; readonly session: SqlSession; readonly lock: Effect.Semaphore }
  | { readonly _tag: "Remote" }

interface TransactionBinding {
  readonly service: symbol
  readonly route: Route
}

/** The transaction the current fiber is in, per service (fiber-local, inherited by forks). */
const currentTransaction = FiberRef.unsafeMake<TransactionBinding | null>(null)

/** Marks the caller's own failure while it crosses the client's transaction, so it comes out
 * unchanged while the client's failures are mapped. */
class CallerFailure<E> {
  constructor(readonly error: E) {}
}

const makeService = (options: { readonly database: string; readonly client: DqliteClientService; readonly local: LocalNode | null }): TqliteService => {
  const { database, client, local } = options
  const serviceId = Symbol("Tqlite")

  let localStatements = 0
  let routedStatements = 0
  const stats = Effect.sync((): RoutingStats => ({ localStatements, routedStatements }))

  const binding = Effect.map(FiberRef.get(currentTransaction), (b) => (b !== null && b.service === serviceId ? b : null))
  const localLeads = local === null ? Effect.succeed(false) : Effect.map(local.status, (status) => status.role === "leader")

  /** One statement text, routed: inside a transaction its way, else the local node when it leads
   * (falling back to the wire on "not leader", which did nothing), else the wire. */
  const routed = <A>(
    sql: string,
    params: ReadonlyArray<ParamValue>,
    onSession: (session: SqlSession, values: ReadonlyArray<SqlValue>) => Effect.Effect<A, SqlFailure>,
    onClient: Effect.Effect<A, ClientError>
  ): Effect.Effect<A, TqliteError> =>
    Effect.flatMap(binding, (inside) => {
      const refused = refusal(sql, inside !== null)
      if (refused !== null) return Effect.fail(refused)
      const remote = Effect.suspend(() => {
        routedStatements++
        return Effect.mapError(onClient, fromClientError)
      })
      const onLocal = (session: SqlSession) =>
        Effect.suspend(() => {
          const values = localParams(params)
          return values instanceof SqlError ? Effect.fail(values) : Effect.mapError(onSession(session, values), fromSqlFailure)
        })
      // Counted once served: a local attempt refused as "not leader" counts as routed.
      const countedLocal = <X>(effect: Effect.Effect<X, TqliteError>) =>
        Effect.onExit(effect, (exit) =>
          Effect.sync(() => {
            const failure = Exit.isFailure(exit) ? Cause.failureOption(exit.cause) : Option.none()
            if (Option.isNone(failure) || failure.value._tag !== "NotLeader") localStatements++
          }))
      if (inside !== null) return inside.route._tag === "Local" ? inside.route.lock.withPermits(1)(countedLocal(onLocal(inside.route.session))) : remote
      if (local === null) return remote
      return Effect.flatMap(localLeads, (leads) => (leads ? Effect.catchTag(countedLocal(onLocal(local.shared)), "NotLeader", () => remote) : remote))
    })

  const execute = (sql: string, params: ReadonlyArray<ParamValue> = []): Effect.Effect<ExecResult, TqliteError> =>
    routed(
      sql,
      params,
      (session, values) => session.execSql(sql, values),
      Effect.map(client.exec(sql, params), (r) => ({ lastInsertId: r.lastInsertId, rowsAffected: Number(r.rowsAffected) }))
    )

  const query = (sql: string, params: ReadonlyArray<ParamValue> = []): Effect.Effect<QueryResult, TqliteError> =>
    routed(sql, params, (session, values) => Effect.map(session.querySql(sql, values), localRows), client.query(sql, params))

  const remoteTransaction = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E | TqliteError, R> =>
    // The client's transaction runs in a scope of its own; the caller's effect keeps the
    // caller's Scope (as on the local route), so its resources outlive the transaction.
    Effect.flatMap(Effect.serviceOption(ScopeOps.Scope), (outer) => {
      const inCallerScope = Option.isSome(outer) ? (Effect.provideService(effect, ScopeOps.Scope, outer.value) as Effect.Effect<A, E, R>) : effect
      return client
        .transaction(Effect.locally(Effect.mapError(inCallerScope, (error) => new CallerFailure(error)), currentTransaction, { service: serviceId, route: { _tag: "Remote" } }))
        .pipe(Effect.mapError((error): E | TqliteError => (error instanceof CallerFailure ? (error.error as E) : fromClientError(error as ClientError))))
    })

  /** BEGIN on a session of its own, in a scope of its own (closing it rolls back whatever is
   * left open; the caller's effect keeps its own Scope requirement). */
  const localTransaction = <A, E, R>(node: LocalNode, effect: Effect.Effect<A, E, R>): Effect.Effect<A, E | TqliteError, R> =>
    Effect.uninterruptibleMask((restore) =>
      Effect.flatMap(ScopeOps.make(), (scope) =>
        Effect.gen(function*() {
          const session = yield* Effect.mapError(ScopeOps.extend(node.open(database), scope), fromSqlFailure)
          const began = yield* Effect.either(restore(session.execSql("BEGIN", [])))
          if (began._tag === "Left") {
            if (began.left._tag === "SqlNotLeader") return yield* restore(remoteTransaction(effect))
            return yield* Effect.fail(fromSqlFailure(began.left))
          }
          const lock = yield* Effect.makeSemaphore(1)
          const outcome = yield* Effect.exit(restore(Effect.locally(effect, currentTransaction, { service: serviceId, route: { _tag: "Local", session, lock } })))
          if (Exit.isSuccess(outcome)) {
            const committed = yield* Effect.exit(restore(session.execSql("COMMIT", [])))
            if (Exit.isSuccess(committed)) return outcome.value
            return yield* Effect.failCause(Cause.map(committed.cause, fromSqlFailure))
          }
          // Bounded: a rollback is local work; if it cannot finish, closing the session ends it.
          yield* session.execSql("ROLLBACK", []).pipe(Effect.timeout(Duration.seconds(5)), Effect.ignore)
          return yield* outcome
        }).pipe(Effect.onExit((exit) => ScopeOps.close(scope, exit)))
      )
    )

  const transaction = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E | TqliteError, R> =>
    Effect.flatMap(binding, (inside): Effect.Effect<A, E | TqliteError, R> => {
      if (inside !== null) return effect
      if (local === null) return remoteTransaction(effect)
      return Effect.flatMap(localLeads, (leads) => (leads ? localTransaction(local, effect) : remoteTransaction(effect)))
    })

  if (local === null) {
    return {
      database,
      node: null,
      execute,
      query,
      transaction,
      leader: Effect.mapError(client.leader, fromClientError),
      members: Effect.mapError(client.cluster, fromClientError),
      state: Effect.succeed(null),
      roleChanges: Stream.empty,
      stats
    }
  }

  const state = Effect.map(local.status, stateOf)
  return {
    database,
    node: local.info,
    execute,
    query,
    transaction,
    leader: Effect.map(state, (s) => s.leader),
    members: Effect.map(local.status, (status) => status.membership.members.map((m) => ({ id: BigInt(m.id), address: m.address, role: m.role }))),
    state,
    // The node's own change stream: a bounded buffer per subscriber; a slow one skips to newer
    // states.
    roleChanges: local.changes.pipe(
      Stream.map((status): RoleChange => {
        const s = stateOf(status)
        return { role: s.role, term: s.term, leader: s.leader }
      }),
      Stream.changesWith((a, b) => a.role === b.role && a.leader?.id === b.leader?.id)
    ),
    stats
  }
}

function stateOf(status: NodeStatus): NodeState {
  const leader = status.leader === null ? null : status.membership.members.find((m) => m.id === status.leader)
  return {
    role: status.role === "preCandidate" ? "candidate" : status.role,
    term: status.term,
    leader: status.leader === null ? null : { id: BigInt(status.leader), address: leader?.address ?? "" },
    commitIndex: status.commitIndex,
    appliedIndex: status.appliedIndex
  }
}

/** Transaction control belongs to `transaction`: a BEGIN sent as SQL would leave a shared
 * session or pooled connection inside a transaction other callers would then write into. */
function refusal(sql: string, inTransaction: boolean): SqlError | null {
  for (const statement of splitStatements(sql)) {
    const kind = classifyStatement(statement.text)._tag
    if (kind === "Begin" || kind === "Commit" || kind === "Rollback") {
      return new SqlError({ code: misuseCode, message: `"${statement.text}": transactions are Tqlite.transaction's (it sends BEGIN, COMMIT and ROLLBACK)` })
    }
    if (kind === "Savepoint" && !inTransaction) {
      return new SqlError({ code: misuseCode, message: `"${statement.text}" outside Tqlite.transaction would start a transaction` })
    }
  }
  return null
}

/** A start failure in one line: each error's tag and message, down its chain of causes. */
function describe(cause: unknown, depth = 0): string {
  if (depth > 4 || cause === null || cause === undefined) return ""
  if (typeof cause !== "object") return String(cause)
  const tag = "_tag" in cause ? String(cause._tag) : cause instanceof Error ? cause.name : "error"
  const message = "message" in cause && typeof cause.message === "string" && cause.message !== "" && cause.message !== "An error has occurred" ? cause.message : ""
  const detail = "detail" in cause && typeof cause.detail === "string" ? cause.detail : ""
  const inner = "cause" in cause ? describe(cause.cause, depth + 1) : ""
  return [`${tag}${message !== "" ? `: ${message}` : ""}${detail !== "" ? ` (${detail})` : ""}`, inner].filter((part) => part !== "").join(" ← ")
}
