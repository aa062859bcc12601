// Every bound of the replicated SQLite layer, documented and validated in one place.
import { assert } from "../assert.ts"
import { isValidPageSize } from "./walFormat.ts"
import { writeEntryHeaderBytes } from "./writeEntry.ts"

export interface SqliteLimits {
  /** Page size of every database (fixed: pages are shipped as they are). */
  readonly pageSize: number
  /** Write requests (statements and interactive-transaction starts) queued per database; one
   * more is refused at once with SqlBusy. */
  readonly writeQueueMax: number
  /** How long a write request may wait for the writer before SqlBusy (nothing was done). */
  readonly writeTimeoutMs: number
  /** How long a write that ran may wait for Raft to commit it before the client is told
   * SqlLeadershipLost (outcome unknown). Raft's own request timeout and leadership checks
   * normally answer first. */
  readonly commitTimeoutMs: number
  /** An interactive transaction holding the writer longer than this is rolled back. */
  readonly transactionTimeoutMs: number
  /** Group commit: autocommit statements run as one SQLite transaction (a savepoint each), at
   * most this many… */
  readonly batchStatementsMax: number
  /** …with at most this many bytes of SQL text and parameters… */
  readonly batchBytesMax: number
  /** …and accepting statements for at most this long (the batch then waits for the entry in
   * flight to commit, and closes). */
  readonly batchOpenMsMax: number
  /** Once an entry is applied and its statements answered, the next batch waits at most this
   * long for as many new statements as were just answered (closed-loop clients send their next
   * one at once, but over TCP that takes a round trip): they then share one entry instead of
   * splitting into groups that take turns. It closes at once when they are back, when it is
   * full, or when something else waits (a lease, a lone statement, a checkpoint). */
  readonly batchGatherMsMax: number
  /** A transaction (or batch) writing more than this many bytes of pages fails with SqlError
   * (SQLITE_TOOBIG) and changes nothing. */
  readonly transactionBytesMax: number
  /** The leader checkpoints (TRUNCATE) once its WAL is larger than this and every frame is
   * committed; new writes wait for the entry in flight, then the checkpoint. One that readers
   * held back is asked again once those reads ended, or without waiting for readers per this
   * many more bytes of WAL (writerCore.ts "checkpoint back-off"). */
  readonly walCheckpointBytes: number
  /** A pool read in progress for this long is taken for a long query: the leader's checkpoint
   * then does not wait for readers (it would wait its whole busy timeout, the writer behind it:
   * writerCore.ts "checkpoint back-off"). */
  readonly checkpointLongReadMs: number
  /** Reader connections per database (pinned views and idle ones); at least 2. */
  readonly readersMax: number
  /** Reader worker threads (one read-only connection each) per leading database. */
  readonly readWorkersMax: number
  /** Reads waiting for a free reader per database; one more is refused with SqlBusy. */
  readonly readQueueMax: number
  /** Every read's time limit (waiting for a reader included): past it the read is stopped and
   * the client gets SQLITE_INTERRUPT naming this limit. */
  readonly queryTimeoutMs: number
  /** A streamed read (a client's SELECT on the leader) crosses from its reader thread in batches
   * that end at about this many bytes (estimated: a text by its length) … */
  readonly streamBatchBytes: number
  /** … or this many rows, whichever comes first. The leader holds about three batches of a
   * result at once (one being written, one waiting, one being stepped), whatever its size. */
  readonly streamBatchRowsMax: number
  /** How long a `session` read waits for this node to apply the session's index before it
   * fails with SqlStale (reason "session"). */
  readonly sessionWaitMs: number
  /** Prepared statements cached per connection. */
  readonly statementCacheMax: number
  /** Back-off before re-proposing an entry Raft refused as overloaded. */
  readonly overloadRetryMs: number
}

/** The largest record the Raft log stores in one persist call (storage's persistBytesMax,
 * src/storage/LogStore.ts; src/sqlite may not import storage, a test checks they agree). Write
 * entries in flight together must fit it, since the leader appends them in one batch. */
export const logRecordBytesMax = 32 * 1024 * 1024

/** Room for the write entry's header, database name and page numbers beside the pages. */
export const entryOverheadBytesMax = 256 * 1024

/** Defaults of the stream bounds. 64 KiB: one thread hop costs ~0.1 ms, so a 4 KiB wire batch
 * per hop would spend more on hops than on rows; 64 KiB makes it ~1/16 of that while a few
 * batches in flight stay far below a megabyte. */
export const streamBatchBytesDefault = 64 * 1024
export const streamBatchRowsMaxDefault = 4096

export const defaultSqliteLimits: SqliteLimits = {
  pageSize: 4096,
  writeQueueMax: 4096,
  writeTimeoutMs: 5_000,
  commitTimeoutMs: 30_000,
  transactionTimeoutMs: 10_000,
  batchStatementsMax: 1024,
  batchBytesMax: 8 * 1024 * 1024,
  batchOpenMsMax: 100,
  batchGatherMsMax: 2,
  // The issue suggests 64 MiB; a Raft entry that large would exceed the log's 32 MiB record
  // bound (the segment log asserts it), so the default stays below it.
  transactionBytesMax: 30 * 1024 * 1024,
  walCheckpointBytes: 16 * 1024 * 1024,
  // Four times the checkpoint's busy timeout (250 ms): a read that old is rarely about to end.
  checkpointLongReadMs: 1_000,
  readersMax: 4,
  // Two cores: one long query per worker may each take a core from the main thread; three
  // leave a reader free beside two long queries and cost nothing while idle.
  readWorkersMax: 3,
  readQueueMax: 256,
  // Above the scenario (a 10 s query on the leader must finish), and a bound on how
  // long a read can hold the leader's checkpoints back.
  queryTimeoutMs: 30_000,
  streamBatchBytes: streamBatchBytesDefault,
  streamBatchRowsMax: streamBatchRowsMaxDefault,
  // Long enough for a follower that is a few commit rounds behind, short of Raft's 10 s request
  // timeout so the caller hears "session" rather than "busy".
  sessionWaitMs: 5_000,
  statementCacheMax: 256,
  overloadRetryMs: 20
}

export function sqliteLimits(overrides: Partial<SqliteLimits> = {}): SqliteLimits {
  const limits = { ...defaultSqliteLimits, ...overrides }
  validateSqliteLimits(limits)
  return limits
}

export function validateSqliteLimits(limits: SqliteLimits): void {
  assert(isValidPageSize(limits.pageSize), `pageSize ${limits.pageSize} is a valid SQLite page size`)
  for (const key of Object.keys(limits) as Array<keyof SqliteLimits>) {
    const value = limits[key]
    assert(Number.isSafeInteger(value) && value > 0, `${key} must be a positive integer (${value})`)
  }
  assert(limits.readersMax >= 2, "readersMax >= 2 (a committed and a pending view)")
  assert(limits.transactionBytesMax >= limits.pageSize, "transactionBytesMax holds at least one page")
  assert(
    limits.transactionBytesMax + writeEntryHeaderBytes + entryOverheadBytesMax <= logRecordBytesMax,
    `transactionBytesMax (${limits.transactionBytesMax}) leaves an entry within the log's record bound (${logRecordBytesMax})`
  )
}
