// The leader's writer as a pure core: writerStep(state, input) → { state, effects }. No Effect, no
// SQLite, no clock: time arrives in inputs (`nowMs`), SQLite's answers come back as inputs after
// the shell ran what an effect asked for, and so do Raft's. Like the Raft core (src/raft/core.ts)
// the state is owned by the core and changed in place; the caller keeps the returned one.
//
// What it decides (LeaderWriter.ts is the shell that performs the effects):
// - The queue: bounded (full → SqlBusy at once); a request still queued after writeTimeoutMs →
//   SqlBusy, nothing done. A full disk (the shell says so when a request arrives) → SQLITE_FULL.
// - Group commit: while an entry is in flight, autocommit statements run in one open transaction,
//   a savepoint each (the shell runs it; a failing statement is rolled back alone). The batch
//   commits locally only once nothing is in flight: one entry in flight per database, so every
//   entry is computed on committed state and a failed entry never has a successor built on it.
// - Gathering: once an entry is applied and its statements answered, the open batch waits up to
//   batchGatherMsMax for as many new statements as were answered (closed-loop clients over TCP
//   need a round trip or three to send the next one); without it they split into groups that take
//   turns, each group an entry. It closes at once when they are back, when it is full, or when a
//   lease, a lone statement or a checkpoint waits.
// - An interactive transaction's lease on the writer (rolled back after transactionTimeoutMs); its
//   COMMIT waits for the entry in flight like a batch.
// - The entry in flight is proposed until Raft answers definitely: re-proposed after an unknown
//   outcome (a second copy of an entry that committed is skipped by every node). A commit is
//   learned once: from the proposal's applied result (`Proposed` with `committed`).
// - Answers: nothing is answered ok before its entry was applied (or, when it wrote nothing,
//   before leadership was confirmed); errors of statements that ran on uncommitted state wait
//   for the entry too (they depend on it).
// - Checkpoint past walCheckpointBytes: no new work until the entry in flight is applied, then the
//   checkpoint runs with every frame committed.
// - Checkpoint back-off: a checkpoint that pool readers held back (a long query: SQLite cannot
//   reset the WAL under a snapshot, and the checkpoint waits for the reader up to its busy
//   timeout while the writer waits for it) is not asked again at every entry. The next one waits
//   until every read that could have held it back has ended (the read pool's horizon, numbers
//   not times); meanwhile one is tried without waiting for readers each time the WAL has grown
//   by another walCheckpointBytes (it still copies what it can, and resets the WAL should the
//   pool's horizon be wrong). A checkpoint never waits for readers while a read has been in
//   progress for checkpointLongReadMs (a long query: it would not end within the wait). What
//   bounds the WAL meanwhile is the read's time limit.
// - SQLITE_TOOBIG: a local commit over transactionBytesMax is cut from the WAL; a batch of several
//   statements runs again, each alone (which one was too large is unknown).
// - Stop: queued and uncommitted requests → SqlNotLeader, the entry in flight → SqlLeadershipLost
//   (never ok), then the database is released.
import { assert } from "../assert.ts"
import type { SqliteLimits } from "./limits.ts"
import type { ExecResult, SqlFailure } from "./Sql.ts"
import { SqlBusy, SqlError, SqlLeadershipLost, SqlNotLeader } from "./Sql.ts"
import { sqliteAbortRollbackCode, sqliteFullCode, sqliteTooBigCode } from "./sqliteCodes.ts"

/** How a statement runs: with others in the group-commit transaction, alone in its own
 * transaction, or with no transaction around it (VACUUM). */
export type Isolation = "batch" | "alone" | "autocommit"

/** What a statement (or a COMMIT) came to, as the shell reports it. `value` is opaque here. */
export type Outcome = { readonly ok: true; readonly value: unknown } | { readonly ok: false; readonly error: SqlFailure }

/** The bounds the core decides by: a part of the SQLite layer's (limits.ts, where each is
 * explained). */
export type WriterLimits = Pick<
  SqliteLimits,
  | "writeQueueMax"
  | "writeTimeoutMs"
  | "commitTimeoutMs"
  | "transactionTimeoutMs"
  | "batchStatementsMax"
  | "batchBytesMax"
  | "batchOpenMsMax"
  | "batchGatherMsMax"
  | "transactionBytesMax"
  | "walCheckpointBytes"
  | "checkpointLongReadMs"
  | "overloadRetryMs"
>

export interface WriterStats {
  entries: number
  statements: number
  batchStatementsMax: number
  retries: number
  checkpoints: number
  /** Checkpoints that readers held back (the WAL stays)… */
  checkpointsBusy: number
  /** … of which waited for readers (up to the checkpoint's busy timeout, the writer waiting). */
  checkpointsBusyWaited: number
  checkpointMsMax: number
  resets: number
  /** Total time entries spent between their local commit and their answer (ms). */
  commitMsTotal: number
}

/** A Raft proposal's outcome, as the shell reports it. `stillLeader`: after a failure, whether
 * this node still leads the writer's term (the shell asks Raft's status). */
export type ProposalOutcome =
  | { readonly _tag: "Applied"; readonly index: number; readonly committed: boolean; readonly result: string }
  | {
    readonly _tag: "Failed"
    readonly error: "NotLeader" | "ProposalDropped" | "StorageFull" | "Overloaded" | "RequestTimeout" | "OutcomeUnknown"
    readonly detail: string
    readonly leader: number | null
    readonly stillLeader: boolean
  }

export type LocalCommitResult =
  /** Committed (or nothing to commit): the transaction's captured size, null when it wrote nothing;
   * `walBytes`: how far the WAL reaches now; `readsDoneBefore`: every pool read numbered below
   * it has ended (ReadHorizon.doneBefore, readPool/horizon.ts). */
  | {
    readonly _tag: "Committed"
    readonly commit: { readonly seq: number; readonly pageBytes: number } | null
    readonly walBytes: number
    readonly readsDoneBefore: number
    /** How long the oldest pool read in progress has been (ms; 0: none). */
    readonly oldestReadMs: number
  }
  | { readonly _tag: "Failed"; readonly error: SqlFailure; readonly transactionOpen: boolean }
  /** A lease's RELEASE of an inner savepoint: the transaction goes on. */
  | { readonly _tag: "StillOpen" }

export type WriterInput =
  | { readonly _tag: "Submitted"; readonly id: number; readonly bytes: number; readonly isolation: Isolation; readonly nowMs: number; readonly diskFull: string | null }
  | { readonly _tag: "LeaseRequested"; readonly id: number; readonly nowMs: number; readonly diskFull: string | null }
  | { readonly _tag: "StatementRan"; readonly id: number; readonly outcome: Outcome; readonly transactionOpen: boolean }
  | { readonly _tag: "LocalCommitDone"; readonly result: LocalCommitResult }
  | { readonly _tag: "Proposed"; readonly seq: number; readonly outcome: ProposalOutcome; readonly nowMs: number }
  | { readonly _tag: "Confirmed"; readonly failure: SqlFailure | null; readonly nowMs: number }
  /** `blockedBy`: null when the WAL was reset; "readers" when pool readers held it back (the
   * WAL was `walBytes` long, and `readsStarted` reads had taken a reader when it ended); "other"
   * when it did not run or did not wait (a snapshot copy held it, the disk is full). */
  | { readonly _tag: "Checkpointed"; readonly durationMs: number; readonly blockedBy: null | "readers" | "other"; readonly walBytes: number; readonly readsStarted: number }
  | { readonly _tag: "Discarded" }
  | { readonly _tag: "LeaseCommitRequested"; readonly leaseId: number; readonly id: number; readonly nowMs: number }
  /** The session ended its transaction (ROLLBACK, a statement that ended it, its scope closed),
   * or a statement made it too large (`endedBy`). */
  | { readonly _tag: "LeaseEnded"; readonly leaseId: number; readonly endedBy: SqlFailure | null }
  | { readonly _tag: "CheckpointRequested" }
  /** The shell let every fiber that was ready run (after a Flush effect). */
  | { readonly _tag: "Flushed" }
  /** A Gather wait ended: its time ran out, or the shell had other work (then it may come after
   * the batch already closed, and changes nothing). */
  | { readonly _tag: "Gathered"; readonly nowMs: number }
  | { readonly _tag: "Tick"; readonly nowMs: number }
  | { readonly _tag: "Stop"; readonly failure: SqlFailure; readonly mode: "discard" | "keepWal" }

export type WriterEffect =
  | { readonly _tag: "Answer"; readonly id: number; readonly outcome: Outcome }
  | { readonly _tag: "GrantLease"; readonly id: number; readonly leaseId: number }
  /** The lease ended other than by its session (timeout, stop) or was ended: tell the session. */
  | { readonly _tag: "LeaseEnded"; readonly leaseId: number; readonly endedBy: SqlFailure | null }
  /** Run statement `id`; answer with StatementRan. `begin`: open the batch transaction first. */
  | { readonly _tag: "RunStatement"; readonly id: number; readonly isolation: Isolation; readonly begin: boolean }
  /** COMMIT (the batch's, the lone statement's, or the lease's own SQL), capture the frames as
   * local commit `seq`; answer with LocalCommitDone. */
  | { readonly _tag: "CommitLocally"; readonly seq: number; readonly leaseId: number | null }
  /** Propose local commit `seq` (after `delayMs`); answer with Proposed. */
  | { readonly _tag: "Propose"; readonly seq: number; readonly delayMs: number }
  /** Nothing was written: confirm leadership; answer with Confirmed. */
  | { readonly _tag: "ConfirmLeadership" }
  /** Checkpoint (TRUNCATE) with every frame committed; answer with Checkpointed.
   * `waitForReaders`: false when readers known to hold it back are still reading, or a read has
   * been going for checkpointLongReadMs (don't wait for them: copy what can be copied, reset the
   * WAL only if nobody reads it). */
  | { readonly _tag: "Checkpoint"; readonly waitForReaders: boolean }
  /** Let the fibers that are ready run (clients just answered send their next statement), then
   * answer with Flushed: only then the open batch closes, with them in it. */
  | { readonly _tag: "Flush" }
  /** Wait up to `waitMs` for the clients just answered to send their next statement (they join
   * the open batch meanwhile), or less when other work comes; answer with Gathered. */
  | { readonly _tag: "Gather"; readonly waitMs: number }
  /** Cut the local commit from the WAL and reopen on the committed state; answer with Discarded. */
  | { readonly _tag: "DiscardLocalCommit" }
  /** Roll back the lease's transaction (it held the writer too long). */
  | { readonly _tag: "RollbackLease"; readonly leaseId: number }
  /** Give the database back to the state machine. `unresolved`: a copy of the entry in flight
   * may still be in the log with its fate unknown. */
  | { readonly _tag: "Release"; readonly mode: "discard" | "keepWal"; readonly unresolved: boolean }

interface Queued {
  readonly kind: "statement" | "lease"
  readonly id: number
  readonly bytes: number
  isolation: Isolation
  enqueuedAtMs: number
}

/** A client waiting for an entry: its outcome is known, its answer waits for the commit. */
interface Waiter {
  readonly id: number
  readonly outcome: Outcome
  /** Past this it is answered SqlLeadershipLost (outcome unknown). */
  readonly deadlineMs: number
  /** For a re-run after the transaction was lost. */
  readonly request: Queued | null
  answered: boolean
}

interface LeaseState {
  readonly id: number
  readonly grantedAtMs: number
  state: "active" | "committing"
  commit: Waiter | null
}

type InFlight =
  | {
    readonly kind: "entry" | "confirm"
    readonly seq: number
    readonly waiters: ReadonlyArray<Waiter>
    readonly sinceMs: number
    readonly walBytes: number
    readonly readsDoneBefore: number
    readonly oldestReadMs: number
    /** A copy may be in the log with its fate unknown. */
    maybeInLog: boolean
    /** An earlier copy's outcome was unknown. */
    ambiguous: boolean
  }
  | { readonly kind: "checkpoint"; readonly waitForReaders: boolean }
  | { readonly kind: "discard" }

type Running =
  | { readonly kind: "statement"; readonly request: Queued; readonly into: "batch" | "alone" }
  | { readonly kind: "commit"; readonly waiters: ReadonlyArray<Waiter>; readonly lease: LeaseState | null; readonly requests: ReadonlyArray<Queued> }

export interface WriterState {
  readonly database: string
  readonly limits: WriterLimits
  readonly stats: WriterStats
  nowMs: number
  queue: Array<Queued>
  batch: { readonly waiters: Array<Waiter>; readonly requests: Array<Queued>; bytes: number; readonly openedAtMs: number } | null
  lease: LeaseState | null
  /** A synchronous effect whose answer the core waits for (RunStatement, CommitLocally). */
  running: Running | null
  inflight: InFlight | null
  /** A checkpoint is to run once nothing is in flight: waiting for readers (`wait`), or not. */
  checkpointWanted: false | "wait" | "noWait"
  /** After a checkpoint readers held back: ask the next one once every read numbered below
   * `readsBefore` has ended (then waiting for readers, unless a read in progress is long), or the
   * WAL is past `walBytesAbove` (then not waiting). Null: ask whenever the WAL is past
   * walCheckpointBytes. */
  checkpointBackoff: { readonly readsBefore: number; readonly walBytesAbove: number } | null
  /** A Flush is outstanding / was answered since the batch could last close / a Gather is
   * outstanding. */
  flush: "none" | "asked" | "done" | "gathering"
  /** After an entry was applied: the open batch closes once it holds `expected` statements
   * more than its `base` (those just answered, back with their next one), or at `untilMs`. */
  gather: { readonly base: number; readonly expected: number; readonly untilMs: number } | null
  /** The last local commit's seq. */
  seq: number
  leases: number
  stoppedBy: SqlFailure | null
}

export interface WriterStepResult {
  readonly state: WriterState
  readonly effects: ReadonlyArray<WriterEffect>
}

export function initialWriterState(database: string, limits: WriterLimits, nowMs = 0): WriterState {
  return {
    database,
    limits,
    stats: { entries: 0, statements: 0, batchStatementsMax: 0, retries: 0, checkpoints: 0, checkpointsBusy: 0, checkpointsBusyWaited: 0, checkpointMsMax: 0, resets: 0, commitMsTotal: 0 },
    nowMs,
    queue: [],
    batch: null,
    lease: null,
    running: null,
    inflight: null,
    checkpointWanted: false,
    checkpointBackoff: null,
    flush: "none",
    gather: null,
    seq: 0,
    leases: 0,
    stoppedBy: null
  }
}

const leaseCommitValue: ExecResult = { lastInsertId: 0n, rowsAffected: 0 }

export function writerStep(s: WriterState, input: WriterInput): WriterStepResult {
  const out: Array<WriterEffect> = []
  if ("nowMs" in input) s.nowMs = Math.max(s.nowMs, input.nowMs)
  dispatch(s, input, out)
  if (s.stoppedBy === null) pump(s, out)
  return { state: s, effects: out }
}

function dispatch(s: WriterState, input: WriterInput, out: Array<WriterEffect>): void {
  switch (input._tag) {
    case "Submitted":
    case "LeaseRequested":
      return enqueue(s, out, input)
    case "StatementRan":
      return statementRan(s, out, input.id, input.outcome, input.transactionOpen)
    case "LocalCommitDone":
      return localCommitDone(s, out, input.result)
    case "Proposed":
      return proposed(s, out, input.seq, input.outcome)
    case "Confirmed": {
      if (s.stoppedBy !== null) return
      const inflight = s.inflight
      assert(inflight !== null && inflight.kind === "confirm", "a confirmation answers the confirm in flight")
      for (const waiter of inflight.waiters) answer(out, waiter, input.failure === null ? waiter.outcome : { ok: false, error: input.failure })
      expectBack(s, inflight.waiters)
      return entryDone(s, inflight)
    }
    case "Checkpointed": {
      if (s.stoppedBy !== null) return
      const running = s.inflight
      assert(running?.kind === "checkpoint", "a checkpoint was running")
      s.inflight = null
      s.stats.checkpoints++
      s.stats.checkpointMsMax = Math.max(s.stats.checkpointMsMax, input.durationMs)
      return checkpointed(s, input, running.waitForReaders)
    }
    case "Discarded":
      if (s.stoppedBy !== null) return
      assert(s.inflight?.kind === "discard", "a discard was running")
      s.inflight = null
      // New connections, a new WAL and a new read pool (its reads numbered afresh).
      s.checkpointBackoff = null
      return
    case "LeaseCommitRequested": {
      const lease = s.lease
      if (s.stoppedBy !== null || lease === null || lease.id !== input.leaseId || lease.state !== "active") {
        out.push({ _tag: "Answer", id: input.id, outcome: { ok: false, error: s.stoppedBy ?? new SqlError({ code: 1, message: "no transaction is active" }) } })
        return
      }
      lease.state = "committing"
      lease.commit = { id: input.id, outcome: { ok: true, value: leaseCommitValue }, deadlineMs: s.nowMs + s.limits.writeTimeoutMs + s.limits.commitTimeoutMs, request: null, answered: false }
      return
    }
    case "LeaseEnded": {
      const lease = s.lease
      // A committing lease ends with its commit (abandoning it then changes nothing).
      if (lease === null || lease.id !== input.leaseId || lease.state !== "active") return
      endLease(s, out, input.endedBy)
      return
    }
    case "CheckpointRequested":
      s.checkpointWanted = "wait"
      return
    case "Flushed":
      if (s.flush === "asked") s.flush = s.batch === null ? "none" : "done"
      return
    case "Gathered":
      if (s.flush === "gathering") s.flush = "done"
      return
    case "Tick":
      return tick(s, out)
    case "Stop":
      return stop(s, out, input.failure, input.mode)
  }
}

function enqueue(s: WriterState, out: Array<WriterEffect>, input: Extract<WriterInput, { _tag: "Submitted" | "LeaseRequested" }>): void {
  const refuse = (error: SqlFailure) => out.push({ _tag: "Answer", id: input.id, outcome: { ok: false, error } })
  if (s.stoppedBy !== null) return void refuse(s.stoppedBy)
  // A full disk: refused before anything runs, rather than queued behind an entry that cannot
  // become durable until space is freed.
  if (input.diskFull !== null) return void refuse(new SqlError({ code: sqliteFullCode, message: input.diskFull }))
  if (s.queue.length >= s.limits.writeQueueMax) {
    return void refuse(new SqlBusy({ message: `the write queue of ${s.database} is full (${s.limits.writeQueueMax} waiting)` }))
  }
  s.queue.push(
    input._tag === "Submitted"
      ? { kind: "statement", id: input.id, bytes: input.bytes, isolation: input.isolation, enqueuedAtMs: input.nowMs }
      : { kind: "lease", id: input.id, bytes: 0, isolation: "batch", enqueuedAtMs: input.nowMs }
  )
}

/** Starts whatever can start now. Stops at an effect whose answer it needs. */
function pump(s: WriterState, out: Array<WriterEffect>): void {
  const limits = s.limits
  for (;;) {
    if (s.running !== null) return
    // The batch a Flush was asked for was rolled back meanwhile: the shell answers the Flush in
    // turn with every effect that waits, so nothing starts before it is answered.
    if (s.flush === "asked" && s.batch === null) return
    const inflight = s.inflight
    if (inflight !== null && (inflight.kind === "checkpoint" || inflight.kind === "discard")) return
    const lease = s.lease
    if (lease !== null) {
      if (lease.state === "committing" && inflight === null) {
        assert(lease.commit !== null, "a committing lease has a commit request")
        s.running = { kind: "commit", waiters: [lease.commit], lease, requests: [] }
        out.push({ _tag: "CommitLocally", seq: s.seq + 1, leaseId: lease.id })
      }
      return
    }
    const head = s.queue[0]
    if (head?.kind === "statement" && head.isolation === "batch" && !s.checkpointWanted && canJoinBatch(s, head)) {
      s.queue.shift()
      const begin = s.batch === null
      s.batch ??= { waiters: [], requests: [], bytes: 0, openedAtMs: s.nowMs }
      s.running = { kind: "statement", request: head, into: "batch" }
      out.push({ _tag: "RunStatement", id: head.id, isolation: "batch", begin })
      return
    }
    if (s.batch !== null) {
      if (inflight !== null) return
      // Closed only after the fibers that are ready have run: with closed-loop clients, those
      // just answered send their next statement at once, and it belongs in this batch. Unless
      // every one of them is back already (one client in a loop: always): then the batch holds
      // whom a flush would wait for, and closes now — a flush costs two resumptions of the
      // shell's worker and a turn of the event loop's ready fibers (~0.05–0.08 ms a write).
      if (s.flush === "none" && !allBack(s)) {
        s.flush = "asked"
        out.push({ _tag: "Flush" })
        return
      }
      if (s.flush === "asked") return
      if (!gathered(s)) {
        if (s.flush === "done") {
          s.flush = "gathering"
          out.push({ _tag: "Gather", waitMs: s.gather!.untilMs - s.nowMs })
        }
        return
      }
      s.flush = "none"
      s.gather = null
      const batch = s.batch
      s.batch = null
      s.running = { kind: "commit", waiters: batch.waiters, lease: null, requests: batch.requests }
      out.push({ _tag: "CommitLocally", seq: s.seq + 1, leaseId: null })
      return
    }
    if (inflight !== null) {
      // A lease may start while an entry is in flight: its COMMIT waits for it.
      if (head?.kind === "lease" && !s.checkpointWanted) {
        s.queue.shift()
        grant(s, out, head)
        continue
      }
      return
    }
    if (s.checkpointWanted !== false) {
      const waitForReaders = s.checkpointWanted === "wait"
      s.checkpointWanted = false
      s.inflight = { kind: "checkpoint", waitForReaders }
      out.push({ _tag: "Checkpoint", waitForReaders })
      return
    }
    if (head === undefined) return
    s.queue.shift()
    if (head.kind === "lease") {
      grant(s, out, head)
      continue
    }
    s.running = { kind: "statement", request: head, into: "alone" }
    out.push({ _tag: "RunStatement", id: head.id, isolation: head.isolation, begin: false })
    return
  }
  /** Whether the open batch may close: no gathering, the clients answered are back, time is up,
   * the batch is full, or something that cannot join it waits. */
  function gathered(s: WriterState): boolean {
    const gather = s.gather
    const batch = s.batch
    if (gather === null || batch === null) return true
    if (batch.waiters.length >= gather.base + gather.expected || s.nowMs >= gather.untilMs) return true
    const head = s.queue[0]
    if (s.checkpointWanted || s.lease !== null || (head !== undefined && !(head.kind === "statement" && head.isolation === "batch"))) return true
    return batch.waiters.length >= limits.batchStatementsMax || batch.bytes >= limits.batchBytesMax
  }
  function canJoinBatch(s: WriterState, request: Queued): boolean {
    const batch = s.batch
    if (batch === null) return true
    return batch.waiters.length < limits.batchStatementsMax && batch.bytes + request.bytes <= limits.batchBytesMax && s.nowMs - batch.openedAtMs < limits.batchOpenMsMax
  }
}

/** The clients answered after the last entry have all sent their next statement into the batch. */
function allBack(s: WriterState): boolean {
  const gather = s.gather
  return gather !== null && s.batch !== null && s.batch.waiters.length >= gather.base + gather.expected
}

function grant(s: WriterState, out: Array<WriterEffect>, request: Queued): void {
  const lease: LeaseState = { id: ++s.leases, grantedAtMs: s.nowMs, state: "active", commit: null }
  s.lease = lease
  out.push({ _tag: "GrantLease", id: request.id, leaseId: lease.id })
}

function endLease(s: WriterState, out: Array<WriterEffect>, endedBy: SqlFailure | null): void {
  const lease = s.lease
  assert(lease !== null, "a lease to end")
  s.lease = null
  out.push({ _tag: "LeaseEnded", leaseId: lease.id, endedBy })
}

function waiterFor(s: WriterState, request: Queued, outcome: Outcome): Waiter {
  return { id: request.id, outcome, deadlineMs: request.enqueuedAtMs + s.limits.writeTimeoutMs + s.limits.commitTimeoutMs, request, answered: false }
}

function statementRan(s: WriterState, out: Array<WriterEffect>, id: number, outcome: Outcome, transactionOpen: boolean): void {
  const running = s.running
  assert(running !== null && running.kind === "statement" && running.request.id === id, `statement ${id} is the one running`)
  s.running = null
  const request = running.request
  if (running.into === "alone") {
    // Committed (or, after an error, found empty) and answered once Raft has its say.
    s.running = { kind: "commit", waiters: [waiterFor(s, request, outcome)], lease: null, requests: [request] }
    out.push({ _tag: "CommitLocally", seq: s.seq + 1, leaseId: null })
    return
  }
  const batch = s.batch
  assert(batch !== null, "a batch statement runs in a batch")
  if (!outcome.ok && !transactionOpen) {
    // SQLite rolled the whole transaction back (e.g. disk full): the statements before this one
    // are undone, so they go back to the head of the queue and run again.
    for (const earlier of [...batch.requests].reverse()) {
      earlier.enqueuedAtMs = request.enqueuedAtMs
      s.queue.unshift(earlier)
    }
    s.batch = null
    out.push({ _tag: "Answer", id, outcome })
    return
  }
  batch.waiters.push(waiterFor(s, request, outcome))
  batch.requests.push(request)
  batch.bytes += request.bytes
}

function localCommitDone(s: WriterState, out: Array<WriterEffect>, result: LocalCommitResult): void {
  const running = s.running
  assert(running !== null && running.kind === "commit", "a local commit was running")
  assert(s.inflight === null, "a local commit only with nothing in flight")
  s.running = null
  const lease = running.lease
  switch (result._tag) {
    case "StillOpen":
      assert(lease !== null, "only a lease's RELEASE leaves the transaction open")
      lease.state = "active"
      lease.commit = null
      for (const waiter of running.waiters) answer(out, waiter, waiter.outcome)
      return
    case "Failed":
      if (lease !== null) {
        lease.state = "active"
        lease.commit = null
        if (!result.transactionOpen) endLease(s, out, null)
      }
      for (const waiter of running.waiters) answer(out, waiter, { ok: false, error: result.error })
      return
    case "Committed":
      break
  }
  if (lease !== null) endLease(s, out, null)
  const commit = result.commit
  if (commit !== null && commit.pageBytes > s.limits.transactionBytesMax) {
    s.stats.resets++
    s.inflight = { kind: "discard" }
    out.push({ _tag: "DiscardLocalCommit" })
    if (running.requests.length > 1) {
      // Which statement made it too large is unknown: each runs again in its own transaction.
      for (const request of [...running.requests].reverse()) {
        request.isolation = "alone"
        s.queue.unshift(request)
      }
    } else {
      const error = new SqlError({ code: sqliteTooBigCode, message: `the transaction writes more than ${s.limits.transactionBytesMax} bytes of pages (transactionBytesMax)` })
      for (const waiter of running.waiters) answer(out, waiter, { ok: false, error })
    }
    return
  }
  if (commit !== null) {
    assert(commit.seq === s.seq + 1, `local commits are numbered in order (${commit.seq} after ${s.seq})`)
    s.seq = commit.seq
  }
  s.stats.statements += running.requests.length
  s.stats.batchStatementsMax = Math.max(s.stats.batchStatementsMax, running.requests.length)
  s.inflight = { kind: commit === null ? "confirm" : "entry", seq: commit?.seq ?? 0, waiters: running.waiters, sinceMs: s.nowMs, walBytes: result.walBytes, readsDoneBefore: result.readsDoneBefore, oldestReadMs: result.oldestReadMs, maybeInLog: commit !== null, ambiguous: false }
  out.push(commit === null ? { _tag: "ConfirmLeadership" } : { _tag: "Propose", seq: commit.seq, delayMs: 0 })
}

function proposed(s: WriterState, out: Array<WriterEffect>, seq: number, outcome: ProposalOutcome): void {
  if (s.stoppedBy !== null) return
  const inflight = s.inflight
  assert(inflight !== null && inflight.kind === "entry" && inflight.seq === seq, `entry ${seq} is the one in flight`)
  if (outcome._tag === "Applied") {
    inflight.maybeInLog = false
    if (!outcome.committed) return stop(s, out, new SqlLeadershipLost({ message: `entry ${outcome.index} was not applied as this writer's (${outcome.result})` }), "discard")
    s.stats.entries++
    s.stats.commitMsTotal += s.nowMs - inflight.sinceMs
    for (const waiter of inflight.waiters) answer(out, waiter, waiter.outcome)
    expectBack(s, inflight.waiters)
    return entryDone(s, inflight)
  }
  const retry = (delayMs: number) => {
    s.stats.retries++
    inflight.maybeInLog = true
    out.push({ _tag: "Propose", seq, delayMs })
  }
  // Refused, not appended: the entry is gone unless an earlier copy is still in the log.
  const refused = () => {
    if (!inflight.ambiguous) inflight.maybeInLog = false
  }
  const lost = (leader: number | null, message: string) =>
    stop(s, out, inflight.ambiguous ? new SqlLeadershipLost({ message }) : new SqlNotLeader({ leader, message }), "discard")
  switch (outcome.error) {
    case "NotLeader":
      // While a leadership transfer is under way this node still leads its term: try again.
      if (outcome.stillLeader) return retry(s.limits.overloadRetryMs)
      refused()
      return lost(outcome.leader, `leadership lost: ${outcome.detail}`)
    case "ProposalDropped":
      refused()
      return lost(null, `the entry was overwritten by another leader's (${outcome.detail})`)
    case "StorageFull":
      if (!inflight.ambiguous) {
        // Definitely not done: the client hears SQLITE_FULL; the writer stops and its local
        // commit is cut (the next write starts afresh).
        refused()
        return stop(s, out, new SqlError({ code: sqliteFullCode, message: outcome.detail }), "discard")
      }
      // An earlier copy may still be in the log: only its commit or a new leader settles it.
      if (!outcome.stillLeader) return stop(s, out, new SqlLeadershipLost({ message: `leadership lost while the outcome was unknown (${outcome.detail})` }), "discard")
      return retry(s.limits.overloadRetryMs)
    case "Overloaded":
      refused()
      return retry(s.limits.overloadRetryMs)
    case "RequestTimeout":
    case "OutcomeUnknown":
      inflight.ambiguous = true
      if (!outcome.stillLeader) return stop(s, out, new SqlLeadershipLost({ message: `leadership lost while the outcome was unknown (${outcome.error})` }), "discard")
      return retry(0)
  }
}

/** An entry's statements were just answered: their clients (closed-loop ones, at least) send
 * their next statement at once, and the open batch waits a little for them (see pump). A lease's
 * COMMIT is not counted: its client's next step is not a batch statement. */
function expectBack(s: WriterState, waiters: ReadonlyArray<Waiter>): void {
  const expected = waiters.filter((waiter) => waiter.request !== null).length
  s.gather = expected <= 0 ? null : { base: s.batch?.waiters.length ?? 0, expected, untilMs: s.nowMs + s.limits.batchGatherMsMax }
}

/** The entry in flight is settled: new work may start (after a checkpoint if the WAL is big and
 * no back-off holds it: see the file's head). */
function entryDone(s: WriterState, settled: { readonly walBytes: number; readonly readsDoneBefore: number; readonly oldestReadMs: number }): void {
  s.inflight = null
  if (settled.walBytes <= s.limits.walCheckpointBytes || s.checkpointWanted !== false) return
  const backoff = s.checkpointBackoff
  if (backoff === null || settled.readsDoneBefore >= backoff.readsBefore) {
    // A long query in progress would hold it for the whole busy timeout: no wait then.
    s.checkpointWanted = settled.oldestReadMs >= s.limits.checkpointLongReadMs ? "noWait" : "wait"
  } else if (settled.walBytes > backoff.walBytesAbove) {
    s.checkpointWanted = "noWait"
  }
}

/** A checkpoint's outcome sets the back-off: readers held it back (whether it waited or not) →
 * wait for the reads that could have (those started by its end) to end, or for another
 * walCheckpointBytes of WAL. */
function checkpointed(s: WriterState, input: Extract<WriterInput, { readonly _tag: "Checkpointed" }>, waited: boolean): void {
  switch (input.blockedBy) {
    case null:
      s.checkpointBackoff = null
      return
    case "other":
      // Nothing waited (a snapshot copy, a full disk): tried again at the next entry, as before.
      return
    case "readers": {
      s.stats.checkpointsBusy++
      if (waited) s.stats.checkpointsBusyWaited++
      s.checkpointBackoff = { readsBefore: input.readsStarted, walBytesAbove: input.walBytes + s.limits.walCheckpointBytes }
      return
    }
  }
}

function answer(out: Array<WriterEffect>, waiter: Waiter, outcome: Outcome): void {
  if (waiter.answered) return
  waiter.answered = true
  out.push({ _tag: "Answer", id: waiter.id, outcome })
}

/** Bounds every wait: queued past writeTimeoutMs → SqlBusy (it never ran); waiting for a commit
 * past its deadline → SqlLeadershipLost (outcome unknown; the entry may still commit). */
function tick(s: WriterState, out: Array<WriterEffect>): void {
  if (s.stoppedBy !== null) return
  const limits = s.limits
  const now = s.nowMs
  if (s.queue.some((request) => now - request.enqueuedAtMs >= limits.writeTimeoutMs)) {
    const busy = new SqlBusy({ message: `waited ${limits.writeTimeoutMs} ms for the writer of ${s.database}` })
    s.queue = s.queue.filter((request) => {
      if (now - request.enqueuedAtMs < limits.writeTimeoutMs) return true
      out.push({ _tag: "Answer", id: request.id, outcome: { ok: false, error: busy } })
      return false
    })
  }
  const unknown = (message: string) => ({ ok: false as const, error: new SqlLeadershipLost({ message }) })
  const inflight = s.inflight
  if (inflight !== null && (inflight.kind === "entry" || inflight.kind === "confirm") && now - inflight.sinceMs >= limits.commitTimeoutMs) {
    for (const waiter of inflight.waiters) answer(out, waiter, unknown(`no commit within ${limits.commitTimeoutMs} ms: outcome unknown`))
  }
  // Statements that ran in the open batch wait for the entry in flight: bounded too (their batch
  // may still commit later, so their outcome is unknown).
  for (const waiter of s.batch?.waiters ?? []) {
    if (now >= waiter.deadlineMs) answer(out, waiter, unknown(`no commit within ${limits.commitTimeoutMs} ms: outcome unknown`))
  }
  const lease = s.lease
  if (lease !== null && lease.commit !== null && now >= lease.commit.deadlineMs) answer(out, lease.commit, unknown("no commit in time: outcome unknown"))
  if (lease !== null && lease.state === "active" && now - lease.grantedAtMs >= limits.transactionTimeoutMs) {
    out.push({ _tag: "RollbackLease", leaseId: lease.id })
    endLease(s, out, new SqlError({ code: sqliteAbortRollbackCode, message: `the transaction held the writer for ${limits.transactionTimeoutMs} ms and was rolled back` }))
  }
}

/** Everyone waiting gets an answer: `definite` whoever never reached Raft, the entry in flight
 * SqlLeadershipLost unless nothing of it can be in the log and the failure is definite. */
function stop(s: WriterState, out: Array<WriterEffect>, failure: SqlFailure, mode: "discard" | "keepWal"): void {
  if (s.stoppedBy !== null) return
  const definite = failure._tag === "SqlNotLeader" || failure._tag === "SqlError" ? failure : new SqlNotLeader({ leader: null, message: failure.message })
  const inflight = s.inflight
  const unresolved = inflight !== null && (inflight.kind === "entry" || inflight.kind === "confirm") && inflight.maybeInLog
  const inflightFailure = definite === failure && !unresolved ? failure : new SqlLeadershipLost({ message: failure.message })
  s.stoppedBy = definite
  const fail = (id: number, error: SqlFailure) => out.push({ _tag: "Answer", id, outcome: { ok: false, error } })
  for (const request of s.queue.splice(0)) fail(request.id, definite)
  const running = s.running
  if (running !== null) {
    // Only between an effect and its answer, which the shell never lets a Stop in.
    if (running.kind === "statement") fail(running.request.id, definite)
    else for (const waiter of running.waiters) answer(out, waiter, { ok: false, error: definite })
    s.running = null
  }
  for (const waiter of s.batch?.waiters ?? []) answer(out, waiter, { ok: false, error: definite })
  s.batch = null
  const lease = s.lease
  if (lease !== null) {
    if (lease.commit !== null) answer(out, lease.commit, { ok: false, error: definite })
    s.lease = null
    out.push({ _tag: "LeaseEnded", leaseId: lease.id, endedBy: new SqlNotLeader({ leader: definite._tag === "SqlNotLeader" ? definite.leader : null, message: `${definite.message}; the transaction was rolled back` }) })
  }
  if (inflight !== null && (inflight.kind === "entry" || inflight.kind === "confirm")) {
    for (const waiter of inflight.waiters) answer(out, waiter, { ok: false, error: inflightFailure })
  }
  out.push({ _tag: "Release", mode, unresolved })
}

/** Whether lease `leaseId` may run a statement now. */
export function leaseActive(s: WriterState, leaseId: number): boolean {
  return s.stoppedBy === null && s.lease !== null && s.lease.id === leaseId && s.lease.state === "active"
}
