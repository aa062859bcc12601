// How a reader connection serves one read linearizably, whatever thread it runs on: the same
// functions run in a worker (readWorker.ts, blocking waits) and in the main thread (the in-thread
// pool of ReadPool.ts, waits as Effect sleeps). The argument is in README.md "Reads in worker
// threads".
import type { Connection, StatementOutcome } from "../connection.ts"
import { sqlValueOfColumn, toSqlError } from "../connection.ts"
import type { SqlValue } from "../Sql.ts"
import type { ReadVersions } from "./versions.ts"
import { reached } from "./versions.ts"

/** A read as it travels to a reader. */
export interface ReadRequest {
  readonly sql: string
  readonly params: ReadonlyArray<SqlValue>
  /** The versions' epoch when the read was dispatched (after the lease / ReadIndex check). */
  readonly epoch: number
  /** Date.now() past which the read stops (its time limit). */
  readonly deadlineAt: number
  readonly timeLimitMs: number
}

/** Deliberate bugs, for the simulator's mutation tests only. `serveUncommitted`: serve a pinned
 * snapshot without waiting for Raft to commit it (a reader that may see a write that is later
 * lost). */
export interface ReaderBugs {
  readonly serveUncommitted?: boolean
}

/** A failure as it crosses threads (rebuilt into a SqlFailure by ReadPool.ts). */
export type ReadFailure =
  | { readonly _tag: "SqlError"; readonly code: number; readonly message: string }
  | { readonly _tag: "SqlBusy"; readonly message: string }

export type ReadResult = { readonly ok: true; readonly outcome: StatementOutcome } | { readonly ok: false; readonly failure: ReadFailure }

export type PinOutcome =
  /** In a read transaction whose snapshot is the WAL content of `version`. */
  | { readonly _tag: "Pinned"; readonly version: number }
  /** A local commit is under way (odd version `seen`), or one happened while pinning: try again. */
  | { readonly _tag: "Retry"; readonly seen: number }
  /** The epoch moved on since dispatch (the WAL was cut or is closing). */
  | { readonly _tag: "Void" }

/** SQLITE_INTERRUPT: what a client gets for a read stopped at its time limit. */
export const interruptCode = 9

export function timeLimitFailure(timeLimitMs: number): ReadFailure {
  return { _tag: "SqlError", code: interruptCode, message: `interrupted: the query ran past its time limit (queryTimeoutMs = ${timeLimitMs} ms)` }
}

export const epochFailure: ReadFailure = { _tag: "SqlBusy", message: "the database's connections were reset (leadership change or a discarded transaction) while the read waited: retry" }

/** Starts a read transaction and learns which WAL content it sees, by the seqlock: the version
 * read before and after the transaction's first read must be the same even number. */
export function tryPin(connection: Connection, versions: ReadVersions, epoch: number): PinOutcome {
  const before = versions.walVersion()
  if ((before & 1) !== 0) return { _tag: "Retry", seen: before }
  if (versions.epoch() !== epoch) return { _tag: "Void" }
  connection.control("BEGIN")
  // The snapshot is taken by the transaction's first read, not by BEGIN.
  connection.prepare("SELECT count(*) FROM sqlite_schema").get()
  const after = versions.walVersion()
  if (after === before && versions.epoch() === epoch) return { _tag: "Pinned", version: before }
  endRead(connection)
  return { _tag: "Retry", seen: after }
}

/** May a snapshot pinned at `version` be served now? */
export function readiness(versions: ReadVersions, version: number, epoch: number, bugs: ReaderBugs | undefined, committed = versions.committedVersion()): "ready" | "wait" | "void" {
  if (versions.epoch() !== epoch) return "void"
  if (bugs?.serveUncommitted === true) return "ready"
  return reached(committed, version) ? "ready" : "wait"
}

/** Runs the statement inside the pinned transaction, checking the time limit between rows and
 * the epoch at the end; then ends the transaction (a reader never idles in one: it would hold
 * back the leader's checkpoints). */
export function execute(connection: Connection, versions: ReadVersions, request: ReadRequest, now: () => number): ReadResult {
  const stop = new TimeLimitReached()
  const voided = new TimeLimitReached()
  try {
    const outcome = connection.run(request.sql, request.params, () => {
      if (now() >= request.deadlineAt) throw stop
      // Closing (a WAL cut ahead) stops a long row-by-row read at once.
      if (versions.epoch() !== request.epoch) throw voided
    })
    // Results from a snapshot the epoch change did not void are still right (it was committed);
    // checked anyway so nothing read across a WAL cut is ever served.
    if (versions.epoch() !== request.epoch) return { ok: false, failure: epochFailure }
    return { ok: true, outcome }
  } catch (cause) {
    if (cause === stop) return { ok: false, failure: timeLimitFailure(request.timeLimitMs) }
    if (cause === voided) return { ok: false, failure: epochFailure }
    const error = toSqlError(cause)
    return { ok: false, failure: { _tag: "SqlError", code: error.code, message: error.message } }
  } finally {
    endRead(connection)
  }
}

export function endRead(connection: Connection): void {
  if (connection.db.open && connection.inTransaction) connection.db.exec("ROLLBACK")
}

class TimeLimitReached {}

/** Pins a snapshot Raft has committed, with blocking waits (a worker thread); null when the
 * connection is in that read transaction, else why not (and no transaction is left open). Every
 * wait is bounded by the read's deadline. */
export function pinBlocking(connection: Connection, versions: ReadVersions, request: ReadRequest, bugs: ReaderBugs | undefined): ReadFailure | null {
  const now = Date.now
  for (;;) {
    const left = request.deadlineAt - now()
    if (left <= 0) return timeLimitFailure(request.timeLimitMs)
    let pin: PinOutcome
    try {
      pin = tryPin(connection, versions, request.epoch)
    } catch (cause) {
      endRead(connection)
      const error = toSqlError(cause)
      return { _tag: "SqlError", code: error.code, message: error.message }
    }
    if (pin._tag === "Void") return epochFailure
    if (pin._tag === "Retry") {
      // A local COMMIT is a few milliseconds at most: wait for the version to move.
      versions.waitWalVersionChange(pin.seen, Math.min(left, 50))
      continue
    }
    for (;;) {
      const committed = versions.committedVersion()
      const state = readiness(versions, pin.version, request.epoch, bugs, committed)
      if (state === "ready") return null
      if (state === "void") {
        endRead(connection)
        return epochFailure
      }
      const waitLeft = request.deadlineAt - now()
      if (waitLeft <= 0) {
        endRead(connection)
        return { _tag: "SqlBusy", message: `the write this read must see was not committed within the read's time limit (${request.timeLimitMs} ms)` }
      }
      versions.waitCommittedChange(committed, Math.min(waitLeft, 50))
    }
  }
}

/** The whole read with blocking waits (a worker thread): pin, wait for Raft to commit what the
 * snapshot holds, run. */
export function serveBlocking(connection: Connection, versions: ReadVersions, request: ReadRequest, bugs: ReaderBugs | undefined): ReadResult {
  const failure = pinBlocking(connection, versions, request, bugs)
  if (failure !== null) return { ok: false, failure }
  return execute(connection, versions, request, Date.now)
}

// ---- streamed reads -------------------------------------------------------------------------

/** Where one batch of a streamed read ends: once it holds `bytesMax` (estimated, see
 * `estimatedValueBytes`) or `rowsMax` rows, checked before each row, so one large row goes
 * alone. */
export interface StreamBatchBounds {
  readonly bytesMax: number
  readonly rowsMax: number
}

/** One batch of a streamed read as it crosses threads. */
export type StreamStep =
  | { readonly ok: true; readonly rows: Array<Array<SqlValue>>; readonly done: boolean; readonly bytes: number }
  | { readonly ok: false; readonly failure: ReadFailure }

/** What starting a streamed read gave: a cursor, or (a read-only statement that returns no rows)
 * its whole outcome, or a failure. No transaction is left open unless it is a cursor. */
export type StreamStart =
  | { readonly _tag: "Cursor"; readonly cursor: ReadCursor }
  | { readonly _tag: "Whole"; readonly result: ReadResult }

/** A value's size as a batch counts it: about what it weighs on the wire and in memory (a text
 * by its UTF-16 length, exact for ASCII), without encoding it. */
export function estimatedValueBytes(value: SqlValue): number {
  if (typeof value === "string") return 8 + value.length
  if (value instanceof Uint8Array) return 8 + value.byteLength
  return 8
}

/** A streamed read on a pinned connection: the statement steps only when a batch is asked for,
 * so a taker that stops asking stops the stepping, while the read transaction (the committed
 * snapshot the read pinned) stays open between batches. Each row is checked against the time
 * limit and the epoch, as `execute` does. It ends — statement reset, read transaction closed —
 * at the last row, on any failure, or by `cancel`. */
export class ReadCursor {
  /** The row read past the end of the last batch (so `done` is known exactly). */
  private lookahead: Array<unknown> | undefined = undefined
  private ended = false

  private constructor(
    private readonly connection: Connection,
    private readonly versions: ReadVersions,
    private readonly request: ReadRequest,
    private readonly rows: IterableIterator<Array<unknown>>,
    readonly columns: ReadonlyArray<string>,
    readonly declaredTypes: ReadonlyArray<string>,
    private readonly now: () => number
  ) {}

  /** Starts the read's statement in the connection's pinned (and ready) transaction. */
  static start(connection: Connection, versions: ReadVersions, request: ReadRequest, now: () => number): StreamStart {
    let started: ReturnType<Connection["iterate"]>
    try {
      started = connection.iterate(request.sql, request.params)
    } catch (cause) {
      endRead(connection)
      const error = toSqlError(cause)
      return { _tag: "Whole", result: { ok: false, failure: { _tag: "SqlError", code: error.code, message: error.message } } }
    }
    if (started === null) return { _tag: "Whole", result: execute(connection, versions, request, now) }
    return { _tag: "Cursor", cursor: new ReadCursor(connection, versions, request, started.rows, started.columns, started.declaredTypes, now) }
  }

  get isEnded(): boolean {
    return this.ended
  }

  /** The next batch within `bounds`; after a `done` batch or a failure the cursor has ended. */
  nextBatch(bounds: StreamBatchBounds): StreamStep {
    if (this.ended) return { ok: false, failure: { _tag: "SqlError", code: 21, message: "the streamed read has already ended" } }
    const out: Array<Array<SqlValue>> = []
    let bytes = 0
    try {
      for (;;) {
        if (this.now() >= this.request.deadlineAt) return this.fail(timeLimitFailure(this.request.timeLimitMs))
        // Closing (a WAL cut ahead) stops a streamed read at once, as a stepped one.
        if (this.versions.epoch() !== this.request.epoch) return this.fail(epochFailure)
        let row = this.lookahead
        this.lookahead = undefined
        if (row === undefined) {
          const step = this.rows.next()
          if (step.done === true) {
            this.end()
            return { ok: true, rows: out, done: true, bytes }
          }
          row = step.value
        }
        if (out.length > 0 && (bytes >= bounds.bytesMax || out.length >= bounds.rowsMax)) {
          this.lookahead = row
          return { ok: true, rows: out, done: false, bytes }
        }
        const values = row.map(sqlValueOfColumn)
        for (const value of values) bytes += estimatedValueBytes(value)
        out.push(values)
      }
    } catch (cause) {
      const error = toSqlError(cause)
      return this.fail({ _tag: "SqlError", code: error.code, message: error.message })
    }
  }

  /** Ends the read now (the taker went away, was interrupted, or ran out of time). */
  cancel(): void {
    this.end()
  }

  private fail(failure: ReadFailure): StreamStep {
    this.end()
    return { ok: false, failure }
  }

  private end(): void {
    if (this.ended) return
    this.ended = true
    this.lookahead = undefined
    try {
      // Resets the statement (the connection can run others again), then the snapshot goes.
      this.rows.return?.()
    } finally {
      endRead(this.connection)
    }
  }
}
