// The SQL surface (Sql.ts) of a tqlite node over its Raft node and SQLite state machine.
//
// - Roles come from the Raft node's status. A node leads a database once it is leader and its own
//   barrier entry is applied (SqliteMachine.barrierTerm = its term): everything committed before
//   it won is in the files. Until then, and on every follower, statements fail with SqlNotLeader
//   naming the leader (a new leader first waits up to writeTimeoutMs for its barrier).
// - Writes go to the database's LeaderWriter (created on first use in the current term); reads run
//   on the committed read view through `raft.read` (linearizable, never behind a write in flight):
//   while the leader's lease holds and everything committed is applied, at once in the caller's
//   fiber (no heartbeat round, no applier mailbox); otherwise after a ReadIndex round, in the
//   applier. An interactive transaction holds the writer (a LeaderWriter Lease, unrelated to the
//   read lease).
// - A watcher checks the role on every change of the node's state: a writer whose term is over is
//   stopped, failing its clients and cutting its uncommitted frames.
import type { Scope } from "effect"
import { Cause, Clock, Deferred, Duration, Effect, Either, Exit, FiberId, Option, Stream } from "effect"
import { AssertionError } from "../assert.ts"
import type { RaftNode, ReadConsistency } from "../actors/RaftActor.ts"
import type { DiskFullWatch } from "../actors/DiskFullWatch.ts"
import { isDiskFull, whereOf } from "../actors/DiskFullWatch.ts"
import type { StatementOutcome } from "./connection.ts"
import { tooManyValuesError, toSqlError } from "./connection.ts"
import { LeaderDatabase } from "./LeaderDatabase.ts"
import { sqlFailureOfOwnCopyRead, sqlFailureOfRaft } from "./raftFailures.ts"
import { BoundedReads } from "./boundedReads.ts"
import type { ReadPoolService } from "./readPool/ReadPool.ts"
import { workerReadPool } from "./readPool/ReadPool.ts"
import { CheckpointWorker } from "./CheckpointWorker.ts"
import type { RaftAccess } from "./LeaderWriter.ts"
import type { Lease } from "./LeaderWriter.ts"
import { LeaderWriter, ProposalBudget } from "./LeaderWriter.ts"
import type { SqliteLimits } from "./limits.ts"
import { logRecordBytesMax, sqliteLimits } from "./limits.ts"
import type { ExecDone, ExecResult, OpenOptions, Prepared, Rows, RowStream, SqlDatabases, SqlFailure, SqlSession, SqlValue } from "./Sql.ts"
import { SqlBusy, SqlError, SqlNotLeader, SqlStale, rowStreamOf } from "./Sql.ts"
import type { SqliteApplyResult, SqliteMachine } from "./SqliteMachine.ts"
import { sqliteCodeOf, sqliteFullCode, sqliteMisuseCode } from "./sqliteCodes.ts"
import type { StatementKind, StatementSpan } from "./statements.ts"
import { changesRows, classifyStatement, isRelease, mainVerb, parameterSlots, splitStatements } from "./statements.ts"

export interface ReplicatedDatabasesOptions {
  readonly raft: RaftNode<SqliteApplyResult, SqliteMachine>
  readonly machine: SqliteMachine
  readonly limits?: Partial<SqliteLimits>
  /** How often a request waiting for this term's writer (its barrier not applied yet) looks again. */
  readonly pollMs: number
  /** How a writer leaves on shutdown: "keepWal" (as a crash: the next start drops the WAL and
   * replays) or "discard" (cut the uncommitted frames now). */
  readonly shutdown?: "keepWal" | "discard"
  /** Where client reads run (default: worker threads, readPool/ReadPool.ts). */
  readonly readPool?: ReadPoolService
  /** Reads whose plan bounds them to a few rows (boundedReads.ts) run at once on the main
   * thread's committed view instead (default true). */
  readonly inlineBoundedReads?: boolean
  /** Deliberate bugs, for the mutation tests only. `ownCopyReadsAtOnce`: `read` on a node that
   * does not lead serves every level at once from its copy, as `local` (a follower answering a
   * linearizable read before it applied the leader's read index). `proposeThroughWorker`: the
   * writers propose through their worker fiber only, as before `proposeNow` (a slower path, not
   * a safety bug: test/sqlite/leaderAnswer.test.ts compares the two). `savepointFirstStatement`:
   * a batch's first statement runs under a savepoint too (slower, not a safety bug:
   * test/sqlite/leader.test.ts counts them). */
  readonly bugs?: { readonly ownCopyReadsAtOnce?: boolean; readonly proposeThroughWorker?: boolean; readonly savepointFirstStatement?: boolean; readonly checkpointWithoutBackoff?: boolean }
}

export interface ReplicatedDatabases extends SqlDatabases {
  readonly limits: SqliteLimits
  /** The writer leading `name` on this node, if any (tests, metrics). */
  readonly writer: (name: string) => LeaderWriter | undefined
  /** Checks the role now (the watcher does it on every change of the node's state). */
  readonly checkRole: Effect.Effect<void>
  /** A consistent image of `name` at a Raft-committed point (for DUMP), read from the files a
   * chunk at a time: the committed state once leadership is confirmed (lease or ReadIndex round),
   * so it never holds a frame Raft has not committed and never misses one acknowledged before the
   * call. The leader's checkpoints wait while the scope is open (the WAL grows by what is
   * committed meanwhile). Null when this node knows no such database; SqlNotLeader on a follower
   * (its copy may be behind). */
  readonly committedImage: (name: string) => Effect.Effect<CommittedImage | null, SqlFailure, Scope.Scope>
  /** Why this node, leading, cannot serve: it failed to open a database's SQLite in its current
   * term and is handing leadership over (for /health); null otherwise. */
  readonly cannotLead: Effect.Effect<string | null>
  /** One read-only statement of `name` at `consistency`, served by this node whatever its role:
   * the leader reads its committed view (linearizable, which satisfies every level); any other
   * node reads its own copy once it is fresh enough (`raft.read` with the level: a follower's
   * linearizable read asks the leader for a read index and waits until it has applied that
   * far). Null when `sql` is not exactly one read-only statement: the caller sends it the write
   * way. SqlStale when this node cannot be fresh enough (bounded lag, session wait, replay);
   * SqlNotLeader when a linearizable read finds no leader to ask. */
  readonly read: (name: string, sql: string, params: ReadonlyArray<SqlValue>, consistency: ReadConsistency) => Effect.Effect<Rows | null, SqlFailure>
  /** A session token for writes acknowledged by another node (a write routed to the leader): the
   * leader's read index now (raft.readIndex), which covers them. */
  readonly readIndex: Effect.Effect<number, SqlFailure>
  /** The index of the last entry this node's state machine applied (a local write's session
   * token, taken once it is acknowledged: its entry is applied by then). */
  readonly appliedIndex: Effect.Effect<number>
}

/** A database's committed image, read in chunks (DUMP). */
export interface CommittedImage {
  readonly sizeBytes: number
  /** Fills `out` with the image's bytes at `offsetBytes` (both whole pages); fails (SqlBusy)
   * when the files changed under the read (a step-down closed the database). */
  readonly read: (offsetBytes: number, out: Uint8Array) => Effect.Effect<void, SqlFailure>
}

const databaseNameBytesMax = 1024

/** Statement texts whose split and description (parameters, read-only or not) the node keeps,
 * shared by every session: a client's working set of distinct statements is far smaller, and
 * each entry is a few hundred bytes, so a full cache stays under a megabyte (listed in
 * src/limits.ts with every other bound). */
export const statementDescriptionsMax = 2048

export const make = (options: ReplicatedDatabasesOptions): Effect.Effect<ReplicatedDatabases, never, Scope.Scope> =>
  Effect.gen(function*() {
    const { raft, machine } = options
    const limits = sqliteLimits({ ...options.limits, pageSize: machine.pageSize })
    const writers = new Map<string, LeaderWriter>()
    const creating = new Map<string, Deferred.Deferred<LeaderWriter, SqlFailure>>()
    const proposalKiB = new ProposalBudget(Math.floor(logRecordBytesMax / 1024))
    const statementCache = new StatementCache(statementDescriptionsMax)
    const scope = yield* Effect.scope
    const readPool = options.readPool ?? workerReadPool(limits)
    // Checkpoints off the event loop where reads are (real nodes); the simulator's in-thread
    // pool keeps them on the writer's connection, under its disk model.
    const checkpointWorker = readPool.kind === "workers"
      ? yield* Effect.acquireRelease(Effect.sync(() => new CheckpointWorker()), (worker) => Effect.sync(() => worker.close()))
      : undefined

    const access: RaftAccess = {
      propose: raft.propose,
      ...(options.bugs?.proposeThroughWorker === true ? {} : { proposeNow: raft.proposeNow }),
      confirmLeadership: raft.read(() => undefined),
      status: raft.status,
      // Only the log: its writer retries on its own and ends the episode when space is back. The
      // leader's SQLite needs no gate: it answers SQLITE_FULL by itself while its disk is full.
      cannotWrite: () => {
        const episode = raft.diskFull.episodes().find((e) => e.part === "log")
        return episode === undefined ? null : `disk full: the log cannot write (${episode.op} ${episode.path})`
      }
    }

    const checkRole = Effect.gen(function*() {
      const status = yield* raft.status
      for (const [name, writer] of writers) {
        if (writer.stopped) {
          writers.delete(name)
          continue
        }
        if (status.role === "leader" && status.term === writer.term) continue
        writers.delete(name)
        yield* writer.stop(new SqlNotLeader({ leader: status.leader, message: `leadership of term ${writer.term} ended` }))
      }
    })
    // Driven by the node's state changes (role, term, leader, membership), not a poll: a writer
    // of an ended term stops as soon as the Raft actor publishes the change.
    yield* raft.changes.pipe(Stream.runForEach(() => checkRole), Effect.forkScoped)
    let closed = false
    yield* Effect.addFinalizer(() =>
      Effect.suspend(() => {
        closed = true
        return Effect.void
      }).pipe(Effect.zipRight(Effect.forEach([...writers.values()], (writer) => writer.stop(new SqlNotLeader({ leader: null, message: "the node is shutting down" }), options.shutdown ?? "keepWal"), { discard: true })))
    )

    /** The writer of `name` in this leadership, created once the barrier is applied. */
    /** The common case without a generator: this term's writer exists. */
    const writerFor = (name: string): Effect.Effect<LeaderWriter, SqlFailure> =>
      Effect.flatMap(raft.status, (status) => {
        const existing = writers.get(name)
        if (!closed && existing !== undefined && !existing.stopped && status.role === "leader" && status.term === existing.term) return Effect.succeed(existing)
        return writerForSlow(name)
      })

    const writerForSlow = (name: string): Effect.Effect<LeaderWriter, SqlFailure> =>
      Effect.gen(function*() {
        const deadline = limits.writeTimeoutMs
        for (let waitedMs = 0; ; waitedMs += options.pollMs) {
          if (closed) return yield* new SqlNotLeader({ leader: null, message: `node ${raft.id} is shutting down` })
          const status = yield* raft.status
          if (status.role !== "leader") return yield* new SqlNotLeader({ leader: status.leader, message: `node ${raft.id} is not the leader` })
          if (machine.barrierTerm === status.term) {
            const existing = writers.get(name)
            if (existing !== undefined && !existing.stopped && existing.term === status.term) return existing
            if (existing !== undefined) {
              writers.delete(name)
              yield* existing.stop(new SqlNotLeader({ leader: status.leader, message: `leadership of term ${existing.term} ended` }))
            }
            const pending = creating.get(name)
            if (pending !== undefined) return yield* Deferred.await(pending)
            return yield* createWriter(name, status.term)
          }
          if (waitedMs >= deadline) return yield* new SqlBusy({ message: `node ${raft.id} leads but has not applied its barrier yet` })
          yield* Effect.sleep(Duration.millis(options.pollMs))
        }
      })

    // A leader that cannot open a database's SQLite (unreadable, corrupt, not a database, a
    // directory in the way, the native module gone…) could only fail every client: it hands
    // leadership over instead, and answers SqlNotLeader so clients move on. Its follower path
    // writes pages with plain file I/O, not SQLite, so it may still replicate; if it cannot, the
    // applier dies of it and the node stops as any actor that gave up (exit 1, one line).
    let cannotLead: CannotLead | null = null
    let handingOver = false

    /** What a client gets while this node cannot lead (no open retried before `retryAtMs`). */
    const cannotLeadFailure = (failure: CannotLead, voters: number): SqlFailure =>
      voters > 1
        ? new SqlNotLeader({ leader: null, message: `node ${raft.id} cannot lead: ${failure.reason}; handing leadership over` })
        : new SqlError({ code: sqliteCantOpenCode, message: `node ${raft.id} cannot open ${failure.database}: ${failure.reason}` })

    /** Asks Raft to hand leadership to the most caught-up voter, a few times, while this node
     * still leads the term in which it failed to open; one loop at a time. */
    const handOver = (failure: CannotLead): Effect.Effect<void> =>
      Effect.gen(function*() {
        for (let attempt = 1; attempt <= handOverAttemptsMax; attempt++) {
          const status = yield* raft.status
          if (closed || status.role !== "leader" || status.term !== failure.term || cannotLead !== failure) return
          yield* Effect.logWarning(`cannot lead: ${failure.reason}; handing leadership over (term ${status.term}, attempt ${attempt})`)
          yield* Effect.ignore(raft.transferLeadership(null).pipe(Effect.timeout(Duration.millis(handOverTimeoutMs))))
          yield* Effect.sleep(Duration.millis(options.pollMs))
        }
      }).pipe(Effect.ensuring(Effect.sync(() => {
        handingOver = false
      })))

    /** Sorts a failed `machine.lead`: shutdown passes through; a full disk goes to the disk-full
     * path (the Raft actor hands over, SQLITE_FULL meanwhile); an assertion stays a defect;
     * anything else thrown while opening is "cannot lead". */
    const leadFailed = (name: string, term: number, cause: Cause.Cause<SqlFailure>): Effect.Effect<Exit.Exit<never, SqlFailure>> =>
      Effect.gen(function*() {
        const defect = Cause.dieOption(cause)
        if (Option.isNone(defect)) return Exit.failCause(cause)
        const error = defect.value
        if (error instanceof AssertionError) return Exit.failCause(cause)
        if (isDiskFull(error)) {
          yield* raft.diskFull.report("state machine", whereOf(error, machine.databasePath(name)))
          return Exit.fail(new SqlError({ code: sqliteFullCode, message: `disk full: cannot open ${name}: ${messageOf(error)}` }))
        }
        const nowMs = yield* Clock.currentTimeMillis
        const failure: CannotLead = { term, database: name, reason: `cannot open database ${name} (${messageOf(error)})`, sinceMs: nowMs, retryAtMs: nowMs + openRetryMs }
        if (cannotLead?.term !== term || cannotLead.database !== name) {
          yield* Effect.logError(`cannot lead: ${failure.reason}`, cause)
        }
        cannotLead = failure
        const status = yield* raft.status
        const voters = status.membership.members.filter((m) => m.role === "voter").length
        if (voters > 1 && !handingOver) {
          handingOver = true
          yield* Effect.forkIn(handOver(failure), scope)
        }
        return Exit.fail(cannotLeadFailure(failure, voters))
      })

    const createWriter = (name: string, term: number): Effect.Effect<LeaderWriter, SqlFailure> =>
      Effect.gen(function*() {
        const earlier = cannotLead
        if (earlier !== null && earlier.term === term && earlier.database === name && (yield* Clock.currentTimeMillis) < earlier.retryAtMs) {
          const status = yield* raft.status
          return yield* cannotLeadFailure(earlier, status.membership.members.filter((m) => m.role === "voter").length)
        }
        const done = Deferred.unsafeMake<LeaderWriter, SqlFailure>(FiberId.none)
        creating.set(name, done)
        const exit = yield* Effect.exit(
          machine.lead(name, term, (databasePath) =>
            new LeaderWriter(
              {
                database: name, term, nodeId: machine.nodeId, epoch: machine.nextEpoch(), machine, raft: access, limits, proposalKiB,
                ...(options.bugs?.savepointFirstStatement === true || options.bugs?.checkpointWithoutBackoff === true
                  ? { bugs: { savepointFirstStatement: options.bugs.savepointFirstStatement === true, checkpointWithoutBackoff: options.bugs.checkpointWithoutBackoff === true } }
                  : {})
              },
              LeaderDatabase.open({
                databasePath,
                pageSize: limits.pageSize,
                readersMax: limits.readersMax,
                cachePages: Math.max(16, Math.min(2000, Math.floor(limits.transactionBytesMax / limits.pageSize / 8))),
                statementCacheMax: limits.statementCacheMax,
                readPool,
                disk: machine.disk,
                ...(checkpointWorker === undefined ? {} : { checkpointWorker })
              })
            )
          )
        )
        creating.delete(name)
        if (Exit.isFailure(exit)) {
          const failure = yield* leadFailed(name, term, exit.cause)
          Deferred.unsafeDone(done, failure)
          return yield* failure
        }
        if (cannotLead?.database === name) cannotLead = null
        const writer = exit.value
        writers.set(name, writer)
        yield* Effect.forkIn(writer.run(), scope)
        Deferred.unsafeDone(done, Exit.succeed(writer))
        return writer
      })

    /** Runs `use` on the leader's committed view of `name` once everything committed before the
     * call is applied and leadership is confirmed (`raft.read`: at once under the leader's lease,
     * else after a ReadIndex round, in the applier); SQLite's failures as SqlErrors. The writer
     * must exist (its view is created with it). */
    const onCommittedView = <A>(name: string, use: (database: LeaderDatabase) => A): Effect.Effect<A, SqlFailure> =>
      raft
        .read((sm) =>
          sm.withCommittedView(name, (database): Exit.Exit<A, SqlFailure> => {
            try {
              return Exit.succeed(use(database))
            } catch (cause) {
              return Exit.fail(toSqlError(cause))
            }
          }) ?? Exit.fail(new SqlNotLeader({ leader: null, message: `${name} is not led by this node any more` }))
        )
        .pipe(Effect.mapError(sqlFailureOfRaft), Effect.flatten)

    /** A client read: dispatched to the database's reader pool once leadership is confirmed
     * (raft.read: the lease, or a ReadIndex round) and everything committed before it applied;
     * the pool serves it from a snapshot at least that fresh, off the main thread. */
    const inline = options.inlineBoundedReads ?? true
    const boundedReads = new Map<string, BoundedReads>()
    /** The read run at once on the committed view when its plan bounds it (boundedReads.ts);
     * undefined, nothing run, otherwise. Throws what SQLite throws. */
    const runIfBounded = (name: string, database: LeaderDatabase, sql: string, params: ReadonlyArray<SqlValue>): StatementOutcome | undefined => {
      let bounded = boundedReads.get(name)
      if (bounded === undefined) boundedReads.set(name, bounded = new BoundedReads(limits.statementCacheMax))
      return bounded.isBounded(database.committedView, sql) ? database.committedView.run(sql, params) : undefined
    }
    const readOnView = (name: string, sql: string, params: ReadonlyArray<SqlValue>): Effect.Effect<StatementOutcome, SqlFailure> =>
      Effect.zipRight(writerFor(name), Effect.flatten(onCommittedView(name, (database): Effect.Effect<StatementOutcome, SqlFailure> => {
        const now = inline ? runIfBounded(name, database, sql, params) : undefined
        return now !== undefined ? Effect.succeed(now) : database.read(sql, params)
      })))

    /** `readOnView`, streamed: a read the plan bounds still runs at once (one batch); any other
     * goes to the reader pool as a stream, its snapshot held until the scope closes. */
    const readOnViewStream = (name: string, sql: string, params: ReadonlyArray<SqlValue>): Effect.Effect<RowStream, SqlFailure, Scope.Scope> =>
      Effect.zipRight(writerFor(name), Effect.flatten(onCommittedView(name, (database): Effect.Effect<RowStream, SqlFailure, Scope.Scope> => {
        const now = inline ? runIfBounded(name, database, sql, params) : undefined
        return now !== undefined ? Effect.succeed(rowStreamOf(now.rows)) : database.readStream(sql, params)
      })))

    /** `readOnView` at once, when it would run at once: this term's writer exists, the lease holds
     * with everything committed applied, and the read is bounded. Else undefined, nothing run. */
    const readNow = (name: string, sql: string, params: ReadonlyArray<SqlValue>): Either.Either<StatementOutcome, SqlFailure> | undefined => {
      if (!inline || closed) return undefined
      const writer = writers.get(name)
      const status = raft.statusNow()
      if (writer === undefined || writer.stopped || status.role !== "leader" || status.term !== writer.term) return undefined
      const read = raft.readNow((sm) =>
        sm.withCommittedView(name, (database): Either.Either<StatementOutcome, SqlFailure> | undefined => {
          try {
            const now = runIfBounded(name, database, sql, params)
            return now === undefined ? undefined : Either.right(now)
          } catch (cause) {
            return Either.left(toSqlError(cause))
          }
        }))
      return read?.value ?? undefined
    }

    const writerNow = (name: string): LeaderWriter | undefined => {
      if (closed) return undefined
      const writer = writers.get(name)
      if (writer === undefined || writer.stopped || !writer.canSubmitNow) return undefined
      const status = raft.statusNow()
      return status.role === "leader" && status.term === writer.term ? writer : undefined
    }

    const open = (name: string, openOptions: OpenOptions = {}): Effect.Effect<SqlSession, SqlFailure, Scope.Scope> =>
      Effect.gen(function*() {
        const nameBytes = Buffer.byteLength(name, "utf8")
        if (nameBytes === 0 || nameBytes > databaseNameBytesMax || name.includes("\0")) {
          return yield* new SqlError({ code: sqliteMisuseCode, message: `invalid database name (${nameBytes} bytes)` })
        }
        const level = openOptions.readConsistency
        if (level !== undefined) {
          const invalid = invalidConsistency(level)
          if (invalid !== null) return yield* new SqlError({ code: sqliteMisuseCode, message: invalid })
        }
        // A session with a read level: its single read-only autocommit statements are served by
        // this node when it does not lead (the wire's tqlite-read levels, net/protocol/readLevel.ts).
        const ownCopy = level === undefined
          ? null
          : (sql: string, params: ReadonlyArray<SqlValue>) =>
            Effect.flatMap(raft.status, (status) => (status.role === "leader" ? Effect.succeed(null) : read(name, sql, params, level)))
        const session = new Session(name, { limits, writerFor, writerNow, readOnView, readOnViewStream, readNow, raft, cache: statementCache, ownCopy })
        yield* Effect.addFinalizer(() => Effect.sync(() => session.close()))
        return noticingDiskFull(session.api, raft.diskFull, machine.databasePath(name))
      })

    const committedImage = (name: string): Effect.Effect<CommittedImage | null, SqlFailure, Scope.Scope> =>
      Effect.gen(function*() {
        const status = yield* raft.status
        if (status.role !== "leader") return yield* new SqlNotLeader({ leader: status.leader, message: `node ${raft.id} is not the leader` })
        // Asked through Raft (leadership confirmed by the lease or a ReadIndex round, everything
        // committed before it applied), so a database created just before the dump is found even
        // on a leader that has just won, and an unknown name does not create one.
        const known = yield* raft.read((sm) => sm.databaseNames().includes(name)).pipe(Effect.mapError(sqlFailureOfRaft))
        if (!known) return null
        // The writer's committed view exists only once this term's barrier is applied.
        yield* writerFor(name)
        // The files as of the last Raft-committed transaction (the main file, the WAL's frames up
        // to the committed end laid over it), later frames not: never one buffer of the whole
        // database (sqlite3_serialize was, on the event loop).
        const reader = yield* Effect.acquireRelease(onCommittedView(name, (database) => database.openCommittedImage()), (r) => Effect.sync(() => r.release()))
        return {
          sizeBytes: reader.sizeBytes,
          read: (offsetBytes: number, out: Uint8Array) =>
            Effect.suspend(() => {
              const problem = reader.read(offsetBytes, out)
              return problem === null ? Effect.void : Effect.fail(new SqlBusy({ message: `the dump of ${name} stopped: ${problem}` }))
            })
        }
      })

    const cannotLeadNow = Effect.map(raft.status, (status) =>
      cannotLead !== null && status.role === "leader" && status.term === cannotLead.term ? `cannot lead: ${cannotLead.reason}` : null)

    // Closed files hold only whole entries once the restart's replay passed the log's end.
    machine.ownCopyFromIndex = Math.max(machine.ownCopyFromIndex, (yield* raft.status).lastIndex)
    const ownCopyReadsAtOnce = options.bugs?.ownCopyReadsAtOnce === true

    const read = (name: string, sql: string, params: ReadonlyArray<SqlValue>, consistency: ReadConsistency): Effect.Effect<Rows | null, SqlFailure> =>
      Effect.suspend(() => {
        const statements = statementCache.split(sql)
        const only = statements[0]
        if (statements.length !== 1 || only === undefined || classifyStatement(only.text)._tag !== "Other") return Effect.succeed(null)
        if (params.length > only.paramCount) return Effect.fail(tooManyValuesError())
        const invalid = invalidConsistency(consistency)
        if (invalid !== null) return Effect.fail(new SqlError({ code: sqliteMisuseCode, message: invalid }))
        return Effect.flatMap(raft.status, (status) => (status.role === "leader" ? leaderRead(name, only.text, params) : ownCopyRead(name, only.text, params, consistency)))
      })

    /** On the leader: the committed view after the leadership check, as a session's read. */
    const leaderRead = (name: string, sql: string, params: ReadonlyArray<SqlValue>): Effect.Effect<Rows | null, SqlFailure> =>
      Effect.gen(function*() {
        const writer = yield* writerFor(name)
        if (writer.stopped || !writer.database.isOpen) return yield* new SqlNotLeader({ leader: null, message: "leadership was lost" })
        const described = yield* describeOn(() => writer.database.committedView.describe(sql))
        if (!described.readonly) return null
        return (yield* readOnView(name, sql, params)).rows
      })

    /** On any other node: its own copy, once `raft.read` says it is fresh enough for the level;
     * run synchronously wherever raft.read runs it (the caller's fiber or the applier), so no
     * page is written meanwhile (OwnCopyReaders.ts). */
    const ownCopyRead = (name: string, sql: string, params: ReadonlyArray<SqlValue>, consistency: ReadConsistency): Effect.Effect<Rows | null, SqlFailure> => {
      const query = (sm: SqliteMachine): Exit.Exit<Rows | null, SqlFailure> => {
        try {
          const deadlineMs = performance.now() + limits.queryTimeoutMs
          const outcome = sm.withOwnCopy(name, (view) => {
            if (!view.prepare(sql).readonly) return null
            return view.run(sql, params, () => {
              if (performance.now() > deadlineMs) throw new SqlError({ code: sqliteInterruptCode, message: `interrupted: the query ran past its time limit (queryTimeoutMs = ${limits.queryTimeoutMs} ms)` })
            }).rows
          })
          if (outcome._tag === "Closed") return Exit.fail(new SqlNotLeader({ leader: null, message: `node ${raft.id} is shutting down` }))
          if (outcome._tag === "Replaying") {
            return Exit.fail(new SqlStale({ reason: "replaying", message: `node ${raft.id} is replaying its log after a restart (applied ${outcome.appliedIndex} of ${outcome.neededIndex}): its copy cannot be read yet` }))
          }
          if (outcome._tag === "Unavailable") return Exit.fail(new SqlBusy({ message: `node ${raft.id} cannot serve its copy now: ${outcome.reason}` }))
          return Exit.succeed(outcome.value)
        } catch (cause) {
          return Exit.fail(toSqlError(cause))
        }
      }
      // A write sent here is known before any wait: the statement compiles on the copy as it is
      // (cached per text). One that does not compile yet (a table the copy has not received)
      // is taken as a read; the query decides again once the copy is fresh enough.
      try {
        const probe = machine.withOwnCopy(name, (view) => view.prepare(sql).readonly)
        if (probe._tag === "Read" && !probe.value) return Effect.succeed(null)
      } catch {
        // decided after the wait
      }
      const level: ReadConsistency = ownCopyReadsAtOnce ? { level: "local" } : consistency
      const waited = raft.read(query, level).pipe(Effect.mapError((error) => sqlFailureOfOwnCopyRead(error, consistency, raft.id)), Effect.flatten)
      if (consistency.level !== "session") return waited
      // Bounded wait for the session's index, then a typed answer (Raft's own request timeout
      // would also end it, later and as "busy").
      return Effect.timeoutFail(waited, {
        duration: Duration.millis(limits.sessionWaitMs),
        onTimeout: () => new SqlStale({ reason: "session", message: `node ${raft.id} did not apply index ${consistency.index} within ${limits.sessionWaitMs} ms (sessionWaitMs)` })
      })
    }

    const readIndex = Effect.mapError(raft.readIndex, sqlFailureOfRaft)
    const appliedIndex = Effect.sync(() => machine.appliedIndex)

    return { open, limits, writer: (name) => writers.get(name), checkRole, committedImage, cannotLead: cannotLeadNow, read, readIndex, appliedIndex }
  })

/** This node failed to open `database` as the leader of `term`. */
interface CannotLead {
  readonly term: number
  readonly database: string
  readonly reason: string
  readonly sinceMs: number
  /** Until then requests fail at once instead of opening again (one ERROR line, not one per
   * request); then one request tries again (a fixed permission, a single-voter cluster). */
  readonly retryAtMs: number
}

/** Between two tries to open a database that failed to open, in one term. */
const openRetryMs = 1_000
const sqliteCantOpenCode = sqliteCodeOf("SQLITE_CANTOPEN")
/** Hand-over tries per failure episode, each bounded by `handOverTimeoutMs`; a later request
 * that fails to open starts another episode. */
const handOverAttemptsMax = 5
const handOverTimeoutMs = 2_000

/** An error's first line and, when it wraps one, its cause's ("…: file is not a database"). */
function messageOf(error: unknown): string {
  const parts: Array<string> = []
  let current: unknown = error
  for (let depth = 0; depth < 4 && current !== undefined && current !== null; depth++) {
    const text = current instanceof Error ? `${current.name === "Error" ? "" : `${current.name}: `}${current.message}` : String(current)
    parts.push(text.split("\n")[0] ?? "")
    current = current instanceof Error ? current.cause : undefined
  }
  return parts.join(": ")
}

/** SQLITE_FULL from the leader's own SQLite (its WAL or database file could not grow) is a full
 * disk under the state machine: reported, so the node steps down and /health says so. The
 * statement itself already failed and was rolled back (LeaderWriter). The episode ends when a
 * later statement executes here (a leader with nowhere to hand over, e.g. a single node), or
 * when the applier next syncs pages (a follower). */
export function noticingDiskFull(session: SqlSession, watch: DiskFullWatch, databasePath: string): SqlSession {
  const reportFull = (failure: SqlFailure) =>
    failure._tag === "SqlError" && failure.code === sqliteFullCode && !failure.message.startsWith("disk full: the log")
      ? watch.report("state machine", { path: databasePath, op: "sqlite write" })
      : Effect.void
  // On every statement: no success tap unless there is an episode to end.
  const notice = <A, R>(effect: Effect.Effect<A, SqlFailure, R>, executes: boolean): Effect.Effect<A, SqlFailure, R> =>
    executes
      ? Effect.tapBoth(effect, { onFailure: reportFull, onSuccess: () => (watch.isFull("state machine") ? watch.clear("state machine") : Effect.void) })
      : Effect.tapError(effect, reportFull)
  // The same notices for the plain forms, as an Effect the caller runs before answering (none
  // on the common path: a success with no episode to end).
  const noticeDone = (done: ExecDone): ExecDone => (result) => {
    if (Either.isLeft(result)) {
      const failure = result.left
      return failure._tag === "SqlError" && failure.code === sqliteFullCode && !failure.message.startsWith("disk full: the log")
        ? done(result, reportFull(failure))
        : done(result)
    }
    return watch.isFull("state machine") ? done(result, watch.clear("state machine")) : done(result)
  }
  const querySqlNow = session.querySqlNow
  return {
    ...session,
    // A read that hit SQLITE_FULL is answered by querySql instead (a read changes nothing, so it
    // may run twice), which reports it.
    ...(querySqlNow === undefined ? {} : {
      querySqlNow: (sql: string, params: ReadonlyArray<SqlValue>) => {
        const answer = querySqlNow(sql, params)
        return answer !== undefined && Either.isLeft(answer) && answer.left._tag === "SqlError" && answer.left.code === sqliteFullCode ? undefined : answer
      }
    }),
    ...(session.execSqlWith === undefined ? {} : { execSqlWith: (sql: string, params: ReadonlyArray<SqlValue>, done: ExecDone) => session.execSqlWith!(sql, params, noticeDone(done)) }),
    ...(session.execWith === undefined ? {} : { execWith: (statement: number, params: ReadonlyArray<SqlValue>, done: ExecDone) => session.execWith!(statement, params, noticeDone(done)) }),
    ...(session.queryStream === undefined ? {} : { queryStream: (statement: number, params: ReadonlyArray<SqlValue>) => notice(session.queryStream!(statement, params), false) }),
    ...(session.querySqlStream === undefined ? {} : { querySqlStream: (sql: string, params: ReadonlyArray<SqlValue>) => notice(session.querySqlStream!(sql, params), false) }),
    exec: (statement, params) => notice(session.exec(statement, params), true),
    execSql: (sql, params) => notice(session.execSql(sql, params), true),
    query: (statement, params) => notice(session.query(statement, params), false),
    querySql: (sql, params) => notice(session.querySql(sql, params), false)
  }
}

/** Why a consistency level asked for is malformed (null when it is fine). */
export function invalidConsistency(consistency: ReadConsistency): string | null {
  switch (consistency.level) {
    case "linearizable":
    case "local":
      return null
    case "session":
      return Number.isSafeInteger(consistency.index) && consistency.index >= 0 ? null : `a session read needs a Raft index (a non-negative integer), got ${String(consistency.index)}`
    case "bounded":
      return Number.isFinite(consistency.maxLagMs) && consistency.maxLagMs > 0 ? null : `a bounded read needs maxLagMs > 0, got ${String(consistency.maxLagMs)}`
    default:
      return `unknown consistency level ${JSON.stringify((consistency as { level?: unknown }).level)}`
  }
}

/** SQLITE_INTERRUPT: a read stopped at its time limit (as the reader threads answer). */
const sqliteInterruptCode = 9

interface SessionContext {
  /** Set for a session opened with a read level: serves a read-only statement text from this
   * node's own copy when it does not lead (null: not served that way, go the usual way). */
  readonly ownCopy: ((sql: string, params: ReadonlyArray<SqlValue>) => Effect.Effect<Rows | null, SqlFailure>) | null
  readonly limits: SqliteLimits
  readonly writerFor: (name: string) => Effect.Effect<LeaderWriter, SqlFailure>
  readonly readOnView: (name: string, sql: string, params: ReadonlyArray<SqlValue>) => Effect.Effect<StatementOutcome, SqlFailure>
  readonly readOnViewStream: (name: string, sql: string, params: ReadonlyArray<SqlValue>) => Effect.Effect<RowStream, SqlFailure, Scope.Scope>
  readonly readNow: (name: string, sql: string, params: ReadonlyArray<SqlValue>) => Either.Either<StatementOutcome, SqlFailure> | undefined
  /** This term's running writer of `name` when `writerFor` would answer it at once and
   * `submitWith` can take a statement now; else undefined. */
  readonly writerNow: (name: string) => LeaderWriter | undefined
  readonly raft: RaftNode<SqliteApplyResult, SqliteMachine>
  readonly cache: StatementCache
}

/** What a statement's text and SQLite's compiler say about it. */
interface Described {
  readonly kind: StatementKind
  readonly paramCount: number
  readonly readonly: boolean
  readonly reader: boolean
  /** It sets changes() (INSERT, REPLACE, UPDATE, DELETE) … */
  readonly changes: boolean
  /** … and, when it inserted a row, last_insert_rowid() (INSERT, REPLACE). */
  readonly inserts: boolean
}

interface StatementInfo extends Prepared, Described {}

/** What a statement's text alone decides (its kind, parameters, whether it reads or returns
 * rows; none of it depends on the schema), and how a SQL text splits into statements: cached,
 * since clients send the same few statements over and over. Bounded, least recently used out. */
class StatementCache {
  private readonly described = new Map<string, Described>()
  private readonly splits = new Map<string, ReadonlyArray<SplitStatement>>()
  constructor(private readonly entriesMax: number) {}

  /** The statements of `sql` with how many parameters each takes (from the text alone). */
  split(sql: string): ReadonlyArray<SplitStatement> {
    return this.remember(this.splits, sql, () => splitStatements(sql).map((span) => ({ ...span, paramCount: parameterSlots(span.text).count })))
  }

  describedOf(sql: string) {
    return touch(this.described, sql)
  }

  remember<V>(map: Map<string, V>, key: string, make: () => V): V {
    const found = touch(map, key)
    if (found !== undefined) return found
    const value = make()
    map.set(key, value)
    if (map.size > this.entriesMax) map.delete(map.keys().next().value!)
    return value
  }

  setDescribed(sql: string, value: Described): void {
    this.remember(this.described, sql, () => value)
  }
}

function touch<V>(map: Map<string, V>, key: string): V | undefined {
  const found = map.get(key)
  if (found !== undefined) {
    map.delete(key)
    map.set(key, found)
  }
  return found
}

interface SplitStatement extends StatementSpan {
  readonly paramCount: number
}

const noChange: ExecResult = { lastInsertId: 0n, rowsAffected: 0 }

/** One client's session on one database. */
class Session {
  private readonly statements = new Map<number, StatementInfo>()
  /** Each prepared statement's values from its last run: like SQLite's bindings (which survive
   * sqlite3_reset, as dqlite ≤ 1.18.1 shows), a parameter a later EXEC / QUERY sends no value for
   * keeps the value it had. */
  private readonly bindings = new Map<number, ReadonlyArray<SqlValue>>()
  private nextId = 1
  private transaction: { readonly writer: LeaderWriter; readonly lease: Lease } | null = null
  /** changes() and last_insert_rowid() as this session's own connection would hold them (dqlite
   * answers a RESULT with its connection's): set by the INSERT / UPDATE / DELETE it ran, left as
   * they were by every other statement (BEGIN, COMMIT, SAVEPOINT, DDL, reads). The writer's
   * connection is shared, so its own counters may be another session's. */
  private counters: ExecResult = noChange
  readonly api: SqlSession

  constructor(
    readonly database: string,
    private readonly context: SessionContext
  ) {
    this.api = {
      database,
      prepare: (statement) => this.prepare(statement),
      exec: (id, params) => Effect.flatMap(this.statement(id), (info) => Effect.map(this.runOne(info, this.bind(info, params)), (o) => o.exec)),
      query: (id, params) => Effect.flatMap(this.statement(id), (info) => Effect.map(this.runOne(info, this.bind(info, params)), (o) => o.rows)),
      finalize: (id) =>
        Effect.sync(() => {
          this.statements.delete(id)
          this.bindings.delete(id)
        }),
      execSql: (sql, params) => Effect.map(this.runText(sql, params), (o) => o?.exec ?? this.counters),
      querySql: (sql, params) => Effect.map(this.runText(sql, params), (o) => o?.rows ?? emptyRows),
      querySqlNow: (sql, params) => this.querySqlNow(sql, params),
      execSqlWith: (sql, params, done) => this.execSqlWith(sql, params, done),
      execWith: (id, params, done) => {
        const info = this.statements.get(id)
        return info !== undefined && params.length <= info.paramCount && this.writeWith(info, () => this.bind(info, params), done)
      },
      queryStream: (id, params) => Effect.flatMap(this.statement(id), (info) => this.streamOne(info, this.bind(info, params))),
      querySqlStream: (sql, params) => this.streamText(sql, params),
      interrupt: Effect.void,
      inTransaction: Effect.sync(() => this.transaction !== null && this.transaction.lease.state !== "ended")
    }
  }

  close(): void {
    const transaction = this.transaction
    this.transaction = null
    this.statements.clear()
    this.bindings.clear()
    if (transaction !== null) transaction.writer.abandonLease(transaction.lease)
  }

  private statement(id: number): Effect.Effect<StatementInfo, SqlFailure> {
    const info = this.statements.get(id)
    return info === undefined ? Effect.fail(new SqlError({ code: sqliteMisuseCode, message: `no prepared statement ${id}` })) : Effect.succeed(info)
  }

  /** A prepared statement's values for this run: those sent, then the earlier run's for the
   * parameters after them. Too many values are left for runOne to refuse. */
  private bind(info: StatementInfo, params: ReadonlyArray<SqlValue>): ReadonlyArray<SqlValue> {
    if (params.length > info.paramCount) return params
    const previous = this.bindings.get(info.id) ?? []
    const values = params.length >= previous.length ? params : [...params, ...previous.slice(params.length)]
    this.bindings.set(info.id, values)
    return values
  }

  private prepare(statement: StatementSpan): Effect.Effect<Prepared, SqlFailure> {
    return Effect.gen(this, function*() {
      // The caller split the text (the gateway's PREPARE); splitting it again here would only
      // find the same statement.
      const info = yield* this.compile(statement.text, statement.end)
      this.statements.set(info.id, info)
      return info
    })
  }

  /** Checks the statement compiles (on the transaction's writer, or the committed view) and
   * learns whether it only reads. */
  private compile(sql: string, tailOffset: number): Effect.Effect<StatementInfo, SqlFailure> {
    const cached = this.context.cache.describedOf(sql)
    if (cached !== undefined) return Effect.succeed({ id: this.nextId++, sql, tailOffset, ...cached })
    return Effect.gen(this, function*() {
      const kind = classifyStatement(sql)
      if (kind._tag === "Forbidden") return yield* new SqlError({ code: 23, message: kind.reason })
      const open = this.transaction
      const transaction = open !== null && open.lease.state !== "ended" ? open : null
      let described: { readonly reader: boolean; readonly readonly: boolean }
      if (kind._tag !== "Other") {
        described = { reader: false, readonly: kind._tag !== "Solo" }
      } else if (transaction !== null) {
        described = yield* describeOn(() => transaction.writer.database.writer.describe(sql))
      } else {
        const writer = yield* this.context.writerFor(this.database)
        if (writer.stopped || !writer.database.isOpen) return yield* new SqlNotLeader({ leader: null, message: "leadership was lost" })
        described = yield* describeOn(() => writer.database.committedView.describe(sql))
      }
      const verb = mainVerb(sql)
      const info: Described = {
        kind,
        paramCount: parameterSlots(sql).count,
        readonly: described.readonly,
        reader: described.reader,
        changes: !described.readonly && changesRows(sql),
        inserts: !described.readonly && changesRows(sql) && (verb === "INSERT" || verb === "REPLACE")
      }
      this.context.cache.setDescribed(sql, info)
      return { id: this.nextId++, sql, tailOffset, ...info }
    })
  }

  /** A statement text: from this node's own copy when the session has a read level, the text
   * is one read-only statement and no transaction is open; else `runAll`. */
  private runText(sql: string, params: ReadonlyArray<SqlValue>): Effect.Effect<StatementOutcome | null, SqlFailure> {
    const ownCopy = this.context.ownCopy
    if (ownCopy === null || this.transaction !== null) return this.runAll(sql, params)
    return Effect.flatMap(ownCopy(sql, params), (rows) => (rows === null ? this.runAll(sql, params) : Effect.succeed({ exec: this.counters, rows })))
  }

  /** Every statement of `sql` in order, each compiled just before it runs (an earlier one may
   * create what it uses), each taking as many of the remaining values as it has parameters.
   * Answers the first statement's rows (dqlite's QUERY_SQL) and the counters after the last
   * (EXEC_SQL); null for a text without statements. Stops at the first failure: the statements
   * before it stay done (each autocommit statement commits on its own, as in dqlite). */
  private runAll(sql: string, params: ReadonlyArray<SqlValue>): Effect.Effect<StatementOutcome | null, SqlFailure> {
    const statements = this.context.cache.split(sql)
    const only = statements[0]
    if (statements.length === 1 && only !== undefined) {
      return Effect.flatMap(this.compile(only.text, only.end), (info) => this.runOne(info, params))
    }
    // Values no statement takes: refused before anything runs (dqlite 1.11 answers 25 for values
    // the first statement has no parameter for; ≥ 1.18.2 ignores them in EXEC_SQL).
    let taken = 0
    for (const statement of statements) taken += statement.paramCount
    if (params.length > taken) return Effect.fail(tooManyValuesError())
    return Effect.gen(this, function*() {
      let first: StatementOutcome | null = null
      let last: StatementOutcome | null = null
      let offset = 0
      for (const statement of statements) {
        const info = yield* this.compile(statement.text, statement.end)
        const share = params.slice(offset, offset + statement.paramCount)
        offset += statement.paramCount
        last = yield* this.runOne(info, share)
        first ??= last
      }
      return first === null || last === null ? null : { exec: last.exec, rows: first.rows }
    })
  }

  /** `runText`'s rows, streamed when the text is one autocommit read on the leader's committed
   * view (the reader pool steps it a batch at a time); anything else runs whole and answers as
   * one batch: a session with a read level (own-copy reads run on the main thread, bounded by
   * their time limit), a multi-statement text, a statement in a transaction, a write. */
  private streamText(sql: string, params: ReadonlyArray<SqlValue>): Effect.Effect<RowStream, SqlFailure, Scope.Scope> {
    const statements = this.context.cache.split(sql)
    const only = statements[0]
    if (this.context.ownCopy !== null || statements.length !== 1 || only === undefined) {
      return Effect.map(this.runText(sql, params), (o) => rowStreamOf(o?.rows ?? emptyRows))
    }
    return Effect.flatMap(this.compile(only.text, only.end), (info) => this.streamOne(info, params))
  }

  /** `runOne`'s rows, streamed when it is an autocommit read (see `streamText`). */
  private streamOne(info: StatementInfo, params: ReadonlyArray<SqlValue>): Effect.Effect<RowStream, SqlFailure, Scope.Scope> {
    if (params.length > info.paramCount) return Effect.fail(tooManyValuesError())
    // A read sets no counters (runOne would leave them as they are too).
    if (this.transaction === null && info.kind._tag === "Other" && info.readonly) return this.context.readOnViewStream(this.database, info.sql, params)
    return Effect.map(this.runOne(info, params), (o) => rowStreamOf(o.rows))
  }

  /** `querySql` of one autocommit read already compiled (its description cached), when the
   * context can answer it at once; else undefined, nothing run. A read sets no counters. */
  private querySqlNow(sql: string, params: ReadonlyArray<SqlValue>): Either.Either<Rows, SqlFailure> | undefined {
    if (this.transaction !== null) return undefined
    const statements = this.context.cache.split(sql)
    const only = statements[0]
    if (statements.length !== 1 || only === undefined) return undefined
    const described = this.context.cache.describedOf(only.text)
    if (described === undefined || !described.readonly || described.kind._tag !== "Other" || params.length > described.paramCount) return undefined
    const outcome = this.context.readNow(this.database, only.text, params)
    return outcome === undefined ? undefined : Either.map(outcome, (o) => o.rows)
  }

  /** `execSql` of one autocommit write already compiled (its description cached), handed to this
   * term's writer with a plain callback when it is running; else false, nothing run. */
  private execSqlWith(sql: string, params: ReadonlyArray<SqlValue>, done: ExecDone): boolean {
    if (this.context.ownCopy !== null) return false
    const statements = this.context.cache.split(sql)
    const only = statements[0]
    if (statements.length !== 1 || only === undefined) return false
    const described = this.context.cache.describedOf(only.text)
    if (described === undefined || params.length > described.paramCount) return false
    return this.writeWith({ ...described, sql: only.text }, () => params, done)
  }

  /** `runOne` → `execute` → `writer.submit` for an autocommit write, as plain code: false when
   * the statement or the session needs the Effect path (a transaction, a read, no writer now). */
  private writeWith(info: Described & { readonly sql: string }, values: () => ReadonlyArray<SqlValue>, done: ExecDone): boolean {
    if (this.transaction !== null || info.kind._tag !== "Other" || info.readonly) return false
    const writer = this.context.writerNow(this.database)
    if (writer === undefined) return false
    writer.submitWith(info.sql, values(), "batch", (answer) => {
      if (!answer.ok) return done(Either.left(answer.error))
      if (info.changes) {
        const rowsAffected = answer.value.exec.rowsAffected
        this.counters = { rowsAffected, lastInsertId: info.inserts && rowsAffected > 0 ? answer.value.exec.lastInsertId : this.counters.lastInsertId }
      }
      done(Either.right(this.counters))
    })
    return true
  }

  /** Runs one statement; the exec part of its outcome is this session's counters after it. */
  private runOne(info: StatementInfo, params: ReadonlyArray<SqlValue>): Effect.Effect<StatementOutcome, SqlFailure> {
    // Checked here too, so COMMIT or ROLLBACK (which never bind) refuse extra values alike.
    if (params.length > info.paramCount) return Effect.fail(tooManyValuesError())
    return Effect.map(this.execute(info, params), (outcome) => {
      if (info.changes) {
        const rowsAffected = outcome.exec.rowsAffected
        this.counters = { rowsAffected, lastInsertId: info.inserts && rowsAffected > 0 ? outcome.exec.lastInsertId : this.counters.lastInsertId }
      }
      return { exec: this.counters, rows: outcome.rows }
    })
  }

  private execute(info: StatementInfo, params: ReadonlyArray<SqlValue>): Effect.Effect<StatementOutcome, SqlFailure> {
    if (this.transaction === null && info.kind._tag === "Other") {
      // Autocommit: a read on the committed view, or a write through the writer's batch.
      if (info.readonly) return this.context.readOnView(this.database, info.sql, params)
      return Effect.flatMap(this.context.writerFor(this.database), (writer) => writer.submit(info.sql, params, "batch"))
    }
    return Effect.gen(this, function*() {
      const kind = info.kind
      if (kind._tag === "Forbidden") return yield* new SqlError({ code: 23, message: kind.reason })
      const ended = this.endedTransaction()
      if (ended !== null) {
        // The transaction was rolled back behind the client's back: say why, once.
        if (kind._tag === "Rollback") return { exec: noChange, rows: emptyRows }
        return yield* Effect.fail(ended)
      }
      const transaction = this.transaction
      if (transaction !== null) {
        const { writer, lease } = transaction
        switch (kind._tag) {
          case "Begin":
            return yield* new SqlError({ code: 1, message: "cannot start a transaction within a transaction" })
          case "Commit":
            this.transaction = null
            return { exec: yield* writer.leaseFinish(lease, info.sql), rows: emptyRows }
          case "Rollback":
            this.transaction = null
            return { exec: yield* writer.leaseRollback(lease, info.sql), rows: emptyRows }
          default:
            if (isRelease(info.sql)) {
              const exec = yield* writer.leaseFinish(lease, info.sql)
              if (lease.state === "ended") this.transaction = null
              return { exec, rows: emptyRows }
            }
            return yield* writer.leaseRun(lease, info.sql, params)
        }
      }
      switch (kind._tag) {
        case "Begin":
        case "Savepoint": {
          const writer = yield* this.context.writerFor(this.database)
          const lease = yield* writer.acquireLease()
          this.transaction = { writer, lease }
          return yield* writer.leaseRun(lease, info.sql, params)
        }
        case "Commit":
        case "Rollback":
          return yield* new SqlError({ code: 1, message: `cannot ${kind._tag === "Commit" ? "commit" : "rollback"} - no transaction is active` })
        case "Solo": {
          const writer = yield* this.context.writerFor(this.database)
          return yield* writer.submit(info.sql, params, "autocommit")
        }
        case "Other": {
          if (info.readonly) return yield* this.context.readOnView(this.database, info.sql, params)
          const writer = yield* this.context.writerFor(this.database)
          return yield* writer.submit(info.sql, params, "batch")
        }
      }
    })
  }

  /** Forgets a transaction that ended on its own (timed out, leadership lost, rolled back by
   * SQLite) and returns why, if the client has not been told. */
  private endedTransaction(): SqlFailure | null {
    const transaction = this.transaction
    if (transaction === null || transaction.lease.state !== "ended") return null
    this.transaction = null
    return transaction.lease.endedBy
  }
}

const emptyRows: Rows = { columns: [], declaredTypes: [], rows: [] }

function describeOn(describe: () => { readonly reader: boolean; readonly readonly: boolean }): Effect.Effect<{ readonly reader: boolean; readonly readonly: boolean }, SqlFailure> {
  return Effect.try({ try: describe, catch: toSqlError })
}
