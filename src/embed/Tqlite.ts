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
import type { ReadConsistency as NodeReadConsistency } from "../actors/RaftActor.ts"
import type { Rows, SqlFailure, SqlSession, SqlValue } from "../sqlite/Sql.ts"
import { invalidConsistency } from "../sqlite/ReplicatedDatabases.ts"
import { classifyStatement, looksReadOnly, splitStatements } from "../sqlite/statements.ts"
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
  /** The level of every `query` that names none (and is not inside `withConsistency`). Default
   * linearizable. */
  readonly readConsistency?: ReadConsistency
  /** How long a `session` read waits for this node to apply its index before ReplicaStale
   * ("session"). Default 5 s. */
  readonly sessionWaitMs?: number
}

/** How fresh a `query` must be (docs/embedding.md "Read consistency"). Every level is served by
 * the node this service runs (its own copy of the data) when it does not lead; the leader
 * serves each at least as strongly as asked.
 * - `linearizable` (default): reflects every write acknowledged anywhere before the query began.
 *   A follower asks the leader for its read index (one round trip, no data), waits until it has
 *   applied that far, and reads its copy.
 * - `session`: reflects every write up to Raft index `index` (a write's `raftIndex`); without
 *   `index`, every write this service acknowledged (read-your-writes). Waits at most
 *   `sessionWaitMs` (5 s) for this node to apply it, then fails with ReplicaStale "session".
 * - `bounded`: at most `maxLagMs` behind the leader, as of the last heartbeat this node took
 *   from it under the leader's lease; ReplicaStale "lag" when it has not heard from it within
 *   `maxLagMs`.
 * - `local`: whatever this node has applied, at once; never waits, never fails for staleness
 *   (except "replaying" right after a restart). */
export type ReadConsistency =
  | { readonly level: "linearizable" }
  | { readonly level: "session"; readonly index?: number }
  | { readonly level: "bounded"; readonly maxLagMs: number }
  | { readonly level: "local" }

export interface QueryOptions {
  /** Overrides the level `withConsistency` or the config set. */
  readonly consistency?: ReadConsistency
}

export type TqliteRemoteConfig = ClientOptions

export interface ExecResult {
  readonly lastInsertId: bigint
  readonly rowsAffected: number
  /** A Raft index at or after this write's entry: pass it as a `session` read's `index` (on any
   * node's service) to read what it wrote. Inside `transaction` 0 (the transaction's commit
   * counts: see `lastWriteIndex`). Null when this service cannot know it (a remote-only service,
   * or a routed write whose read-index round then failed): read at `linearizable`. */
  readonly raftIndex: number | null
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
   * number. A single read-only statement runs at the consistency `options`, `withConsistency`
   * or the config asks for (linearizable by default): on the leader after it confirmed its
   * leadership, on any other node from its own copy once that is fresh enough. Anything else
   * (a write, several statements) is routed as `execute`. */
  readonly query: (sql: string, params?: ReadonlyArray<ParamValue>, options?: QueryOptions) => Effect.Effect<QueryResult, TqliteError>
  /** The highest `raftIndex` of the writes (and committed transactions) this service
   * acknowledged: the index a `session` read without its own waits for. Null when one of them
   * could not be known and no later one covers it (such reads run linearizable). */
  readonly lastWriteIndex: Effect.Effect<number | null>
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
  /** Runs `effect` with `consistency` as the level of every `query` in it (and in fibers it
   * forks) that names none; the @effect/sql client's statements included. */
  static readonly withConsistency = (consistency: ReadConsistency) => <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> => withConsistency(consistency)(effect)
}

/** The level a `query` without its own uses, when set (fiber-local, inherited by forks). */
export const currentReadConsistency = FiberRef.unsafeMake<ReadConsistency | null>(null)

/** `Tqlite.withConsistency`. */
export const withConsistency = (consistency: ReadConsistency) => <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.locally(effect, currentReadConsistency, consistency)

const linearizable: ReadConsistency = { level: "linearizable" }

export const defaultDatabase = "main"

/** Runs a node in the current scope and serves the Tqlite API from it. */
export const make = (config: TqliteConfig): Effect.Effect<TqliteService, TqliteStartError, Scope.Scope> =>
  Effect.gen(function*() {
    const database = config.database ?? defaultDatabase
    if (database.length === 0) return yield* new TqliteStartError({ message: "the database name is empty", cause: null })
    if (!/^.+:([1-9][0-9]{0,4})$/.test(config.address) || Number(config.address.split(":").at(-1)) > 65535) {
      return yield* new TqliteStartError({ message: `address ${JSON.stringify(config.address)}: expected "host:port" with a port in 1…65535`, cause: null })
    }
    if (config.sessionWaitMs !== undefined && !(Number.isSafeInteger(config.sessionWaitMs) && config.sessionWaitMs > 0)) {
      return yield* new TqliteStartError({ message: `sessionWaitMs must be a positive integer (ms), got ${String(config.sessionWaitMs)}`, cause: null })
    }
    const defaultLevel = config.readConsistency === undefined ? null : consistencyProblem(config.readConsistency)
    if (defaultLevel !== null) return yield* new TqliteStartError({ message: `readConsistency: ${defaultLevel}`, cause: null })
    const join = config.join ?? []
    const started = yield* SqlNode.start({
      dataDir: config.dataDir,
      address: config.address,
      join,
      ...(config.tickMs !== undefined ? { tickMs: config.tickMs } : {}),
      ...(config.tls !== undefined ? { tls: config.tls } : {}),
      ...(config.sessionWaitMs !== undefined ? { sqlite: { sessionWaitMs: config.sessionWaitMs } } : {})
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
    const databases = started.databases
    return makeService({
      database,
      client,
      readConsistency: config.readConsistency ?? linearizable,
      local: {
        info: { id: BigInt(identity.nodeId), address: identity.address, clusterId: identity.clusterId },
        status: raft.status,
        changes: raft.changes,
        shared,
        open: (name) => databases.open(name),
        read: (sql, params, consistency) => databases.read(database, sql, params, consistency),
        readIndex: databases.readIndex,
        appliedIndex: databases.appliedIndex
      }
    })
  })

/** The service over the wire client only, in the current scope. */
export const makeRemote = (config: TqliteRemoteConfig): Effect.Effect<TqliteService, TqliteStartError, Scope.Scope> =>
  Effect.gen(function*() {
    if (config.servers.length === 0) return yield* new TqliteStartError({ message: "no servers given", cause: null })
    if (config.database.length === 0) return yield* new TqliteStartError({ message: "the database name is empty", cause: null })
    const client = yield* Client.make(config)
    return makeService({ database: config.database, client, local: null, readConsistency: linearizable })
  })

interface LocalNode {
  readonly info: NodeInfo
  readonly status: Effect.Effect<NodeStatus>
  readonly changes: Stream.Stream<NodeStatus>
  /** The session autocommit statements share (it never holds a transaction: see `refusal`). */
  readonly shared: SqlSession
  readonly open: (name: string) => Effect.Effect<SqlSession, SqlFailure, Scope.Scope>
  /** One read-only statement at a level, from this node (ReplicatedDatabases.read): null when
   * it is not one. */
  readonly read: (sql: string, params: ReadonlyArray<SqlValue>, consistency: NodeReadConsistency) => Effect.Effect<Rows | null, SqlFailure>
  readonly readIndex: Effect.Effect<number, SqlFailure>
  readonly appliedIndex: Effect.Effect<number>
}

type Route =
  | { readonly _tag: "Local"; readonly session: SqlSession; readonly lock: Effect.Semaphore }
  | { readonly _tag: "Remote" }

/** Which way a statement went: this node's SQL surface, the wire client, or inside a
 * transaction (whose commit is the write). */
type Served = "local" | "remote" | "inside"

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

const makeService = (options: { readonly database: string; readonly client: DqliteClientService; readonly local: LocalNode | null; readonly readConsistency: ReadConsistency }): TqliteService => {
  const { database, client, local } = options
  const serviceId = Symbol("Tqlite")

  let localStatements = 0
  let routedStatements = 0
  const stats = Effect.sync((): RoutingStats => ({ localStatements, routedStatements }))

  // Read-your-writes for `session` reads without an index: the highest index of a write this
  // service acknowledged. A write whose index could not be learned makes them linearizable until
  // a write that started after it was acknowledged returns a known index (it is later in the log).
  let sessionIndex = 0
  let acknowledged = 0
  let unknownAt: number | null = null
  const noteWrite = (startedAt: number, index: number | null) =>
    Effect.sync(() => {
      acknowledged++
      if (index === null) unknownAt = acknowledged
      else {
        if (index > sessionIndex) sessionIndex = index
        if (unknownAt !== null && startedAt >= unknownAt) unknownAt = null
      }
    })
  const lastWriteIndex = Effect.sync(() => (unknownAt !== null ? null : sessionIndex))
  /** A write's session token on the route that served it: this node's applied index (its entry
   * is applied by the time it is acknowledged), or, for one the leader served over the wire, the
   * leader's read index now (one round trip; null if that fails). */
  const tokenOf = (route: Served): Effect.Effect<number | null> => {
    if (local === null || route === "inside") return Effect.succeed(route === "inside" ? 0 : null)
    if (route === "local") return local.appliedIndex
    return Effect.orElseSucceed(local.readIndex, () => null)
  }
  const afterWrite = <A>(served: Effect.Effect<readonly [A, Served], TqliteError>): Effect.Effect<readonly [A, number | null], TqliteError> =>
    Effect.suspend(() => {
      const startedAt = acknowledged
      return Effect.flatMap(served, ([value, route]) =>
        Effect.flatMap(tokenOf(route), (index) => Effect.as(route === "inside" ? Effect.void : noteWrite(startedAt, index), [value, index] as const)))
    })

  const binding = Effect.map(FiberRef.get(currentTransaction), (b) => (b !== null && b.service === serviceId ? b : null))
  const localLeads = local === null ? Effect.succeed(false) : Effect.map(local.status, (status) => status.role === "leader")

  /** One statement text, routed: inside a transaction its way, else the local node when it leads
   * (falling back to the wire on "not leader", which did nothing), else the wire. Says which way
   * served it. */
  const routed = <A>(
    sql: string,
    params: ReadonlyArray<ParamValue>,
    onSession: (session: SqlSession, values: ReadonlyArray<SqlValue>) => Effect.Effect<A, SqlFailure>,
    onClient: Effect.Effect<A, ClientError>
  ): Effect.Effect<readonly [A, Served], TqliteError> =>
    Effect.flatMap(binding, (inside): Effect.Effect<readonly [A, Served], TqliteError> => {
      const refused = refusal(sql, inside !== null)
      if (refused !== null) return Effect.fail(refused)
      const remote = Effect.suspend(() => {
        routedStatements++
        return Effect.map(Effect.mapError(onClient, fromClientError), (value): readonly [A, Served] => [value, "remote"])
      })
      const onLocal = (session: SqlSession) =>
        Effect.suspend(() => {
          const values = localParams(params)
          return values instanceof SqlError ? Effect.fail(values) : Effect.mapError(onSession(session, values), fromSqlFailure)
        })
      if (inside !== null) {
        return inside.route._tag === "Local"
          ? Effect.map(inside.route.lock.withPermits(1)(countedLocal(onLocal(inside.route.session))), (value) => [value, "inside"] as const)
          : Effect.map(remote, ([value]) => [value, "inside"] as const)
      }
      if (local === null) return remote
      return Effect.flatMap(localLeads, (leads) =>
        leads ? Effect.catchTag(Effect.map(countedLocal(onLocal(local.shared)), (value): readonly [A, Served] => [value, "local"]), "NotLeader", () => remote) : remote)
    })

  /** Counted once served: a local attempt refused as "not leader" counts as routed. */
  const countedLocal = <X>(effect: Effect.Effect<X, TqliteError>) =>
    Effect.onExit(effect, (exit) =>
      Effect.sync(() => {
        const failure = Exit.isFailure(exit) ? Cause.failureOption(exit.cause) : Option.none()
        if (Option.isNone(failure) || failure.value._tag !== "NotLeader") localStatements++
      }))

  const execute = (sql: string, params: ReadonlyArray<ParamValue> = []): Effect.Effect<ExecResult, TqliteError> =>
    Effect.map(
      afterWrite(routed(
        sql,
        params,
        (session, values) => session.execSql(sql, values),
        Effect.map(client.exec(sql, params), (r) => ({ lastInsertId: r.lastInsertId, rowsAffected: Number(r.rowsAffected) }))
      )),
      ([result, raftIndex]) => ({ lastInsertId: result.lastInsertId, rowsAffected: result.rowsAffected, raftIndex })
    )

  /** The level a query runs at, with a session's own index filled in (linearizable when this
   * service lost track of one of its writes' indexes). */
  const nodeLevelOf = (asked: ReadConsistency): NodeReadConsistency => {
    if (asked.level !== "session") return asked
    if (asked.index !== undefined) return { level: "session", index: asked.index }
    return unknownAt !== null ? { level: "linearizable" } : { level: "session", index: sessionIndex }
  }

  /** The way every statement went before levels: the leader's session (or the transaction's
   * route), else the wire; a statement that may have written leaves a session token. */
  const queryRouted = (sql: string, params: ReadonlyArray<ParamValue>): Effect.Effect<QueryResult, TqliteError> => {
    const served = routed(sql, params, (session, values) => Effect.map(session.querySql(sql, values), localRows), client.query(sql, params))
    // A text that only reads leaves no token (and costs no read-index round when routed).
    return looksReadOnly(sql) ? Effect.map(served, ([rows]) => rows) : Effect.map(afterWrite(served), ([rows]) => rows)
  }

  const query = (sql: string, params: ReadonlyArray<ParamValue> = [], queryOptions?: QueryOptions): Effect.Effect<QueryResult, TqliteError> =>
    Effect.flatMap(Effect.all([binding, localLeads, FiberRef.get(currentReadConsistency)]), ([inside, leads, current]) => {
      const asked = queryOptions?.consistency ?? current ?? options.readConsistency
      const problem = consistencyProblem(asked)
      if (problem !== null) return Effect.fail(new SqlError({ code: misuseCode, message: problem }))
      // A transaction keeps its route; a leader serves every level on its committed view.
      if (inside !== null || local === null || leads) return queryRouted(sql, params)
      const refused = refusal(sql, false)
      if (refused !== null) return Effect.fail(refused)
      const values = localParams(params)
      if (values instanceof SqlError) return Effect.fail(values)
      return local.read(sql, values, nodeLevelOf(asked)).pipe(
        Effect.mapError(fromSqlFailure),
        Effect.flatMap((rows) => {
          // Not one read-only statement: the write way.
          if (rows === null) return queryRouted(sql, params)
          localStatements++
          return Effect.succeed(localRows(rows))
        }),
        // No leader to ask for a read index (or this node just became one): the wire client
        // finds the leader, which serves every level.
        Effect.catchTag("NotLeader", () => queryRouted(sql, params))
      )
    })

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
      const startedAt = acknowledged
      // The commit is the write a later session read must see.
      const committed = (route: Served) => (value: A) => Effect.as(Effect.flatMap(tokenOf(route), (index) => noteWrite(startedAt, index)), value)
      if (local === null) return remoteTransaction(effect)
      // A local transaction whose BEGIN found this node no longer leading went the wire way:
      // only a node still leading has the commit applied for sure.
      const afterLocal = (value: A) => Effect.flatMap(localLeads, (still) => committed(still ? "local" : "remote")(value))
      return Effect.flatMap(localLeads, (leads) =>
        leads ? Effect.flatMap(localTransaction(local, effect), afterLocal) : Effect.flatMap(remoteTransaction(effect), committed("remote")))
    })

  if (local === null) {
    return {
      database,
      node: null,
      execute,
      query,
      lastWriteIndex,
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
    lastWriteIndex,
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

/** Why a level asked for is malformed (null when it is fine): checked on every route, so a bad
 * level fails alike whichever node serves. */
function consistencyProblem(consistency: ReadConsistency): string | null {
  if (consistency.level === "session" && consistency.index === undefined) return null
  return invalidConsistency(consistency as NodeReadConsistency)
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
