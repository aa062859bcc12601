// The log writer actor: group commit. It drains every persist job waiting in its mailbox, makes
// them durable with one LogStore call (one fsync), then releases the messages that waited on
// that durability and tells the Raft actor how far the log is durable.
//
// A full disk (ENOSPC / EDQUOT) is not a reason to die: the writer asks the store to go back to
// its last durable state (`recover`), waits (50 ms doubling to 2 s, Effect's Clock) and tries the
// same group again, for as long as it takes. Nothing that waits on the group leaves meanwhile (no
// acknowledgement, no vote), and the Raft actor is told only once the group is durable. Any other
// storage failure still stops the writer: after a failed write or fsync of unknown cause the
// state of the files is unknown ("fsyncgate").
import type { Scope } from "effect"
import { Duration, Effect } from "effect"
import type { Envelope } from "../raft/messages.ts"
import type { PersistBatch } from "../raft/storage.ts"
import type { LogIndex, Term } from "../raft/types.ts"
import * as Actor from "../runtime/Actor.ts"
import type { DiskFullWatch, DiskPart } from "./DiskFullWatch.ts"
import { isDiskFull, nextBackoffMs, whereOf } from "./DiskFullWatch.ts"
import { trace, traceMessage } from "../runtime/trace.ts"
import { afterYieldIfLarge } from "../runtime/yieldToLoop.ts"
import { entrySizeBytes } from "../raft/types.ts"

function batchesBytes(batches: ReadonlyArray<PersistBatch>): number {
  let bytes = 0
  for (const batch of batches) for (const entry of batch.entries) bytes += entrySizeBytes(entry)
  return bytes
}


export interface PersistJob {
  readonly batches: ReadonlyArray<PersistBatch>
  /** Messages that may leave only once this job is durable (votes, acknowledgements). */
  readonly after: ReadonlyArray<Envelope>
  /** The end of the core's log when the job was made: reported once durable. */
  readonly persisted: { readonly index: LogIndex; readonly term: Term }
}

export interface LogWriterOptions {
  readonly name: string
  readonly mailboxCapacity: number
  /** Jobs covered by one fsync at most. */
  readonly batchMax: number
  /** Makes batches durable; the storage layer splits them by its own byte bounds. */
  readonly persist: (batches: ReadonlyArray<PersistBatch>) => Effect.Effect<void, unknown>
  /** After `persist` failed for a full disk: put the store back to its last durable state, so
   * the same batches (the same array) can be persisted again. Fails (again for a full disk, or
   * for good) when it cannot. Absent: a failed persist is never retried. */
  readonly recover?: Effect.Effect<void, unknown>
  /** Full-disk episodes are reported here (log lines, /health, the Raft actor's step-down). */
  readonly diskFull: DiskFullWatch
  readonly send: (envelope: Envelope) => Effect.Effect<void>
  readonly onPersisted: (index: LogIndex, term: Term) => Effect.Effect<void>
}

export const make = (options: LogWriterOptions): Effect.Effect<Actor.Actor<PersistJob>, never, Scope.Scope> =>
  Actor.make<null, PersistJob, never>({
    name: options.name,
    mailboxCapacity: options.mailboxCapacity,
    batchMax: options.batchMax,
    initial: Effect.succeed(null),
    // A failed write (other than a full disk, retried in place) leaves the log in an unknown
    // state: never retry blindly, stop the node.
    supervision: { restartsMax: 0, windowMs: 1000 },
    // Plain combinators, no generator: this runs once per fsync on every node.
    receive: (state, jobs) => {
      const batches = jobs.length === 1 ? jobs[0]!.batches : jobs.flatMap((job) => job.batches)
      const through = jobs[jobs.length - 1]!.persisted.index
      const release = Effect.suspend(() => {
        if (batches.length > 0) trace("log.synced", through)
        const sends: Array<Effect.Effect<void>> = []
        for (const job of jobs) {
          for (const envelope of job.after) {
            traceMessage("log.after", envelope.message)
            sends.push(options.send(envelope))
          }
        }
        const last = jobs[jobs.length - 1]!
        let released = options.onPersisted(last.persisted.index, last.persisted.term)
        // A chain rather than Effect.all: fewer operations for the usual one or two.
        for (let i = sends.length - 1; i >= 0; i--) released = Effect.zipRight(sends[i]!, released)
        // A write that succeeded ends a full-disk episode, first (checked here, in plain code).
        if (batches.length > 0 && options.diskFull.isFull("log")) released = Effect.zipRight(options.diskFull.clear("log"), released)
        return Effect.as(released, state)
      })
      // No batches (acknowledgements of appends with no entries): nothing to write.
      if (batches.length === 0) return release
      // receive runs as its batch is taken: the write starts now.
      trace("log.write", through)
      const written = untilWritten(options, "log", () => options.persist(batches), options.recover ?? null)
      // A large entry is encoded and checksummed in one piece: let timers and sockets run
      // first (src/runtime/yieldToLoop.ts), so this node's heartbeats and answers keep flowing.
      return Effect.zipRight(afterYieldIfLarge(batchesBytes(batches), written), release)
    }
  })

/** Runs `write` until it succeeds. A full disk is reported, waited out with a bounded backoff
 * and retried (after `recover`, which must succeed first); any other failure — or a full disk
 * with no way to recover — is a defect that stops the writer. The caller clears the episode. */
const untilWritten = (
  options: LogWriterOptions,
  part: DiskPart,
  write: () => Effect.Effect<void, unknown>,
  recover: Effect.Effect<void, unknown> | null
): Effect.Effect<void> =>
  // The common case, a write that succeeds with no episode open, costs no more than the write
  // (the caller clears an episode once written).
  Effect.catchAll(write(), (error) => retryUntilWritten(options, part, write, recover, error))

const retryUntilWritten = (
  options: LogWriterOptions,
  part: DiskPart,
  write: () => Effect.Effect<void, unknown>,
  recover: Effect.Effect<void, unknown> | null,
  firstError: unknown
): Effect.Effect<void> =>
  Effect.gen(function*() {
    let backoffMs: number | null = null
    let error = firstError
    while (true) {
      if (!isDiskFull(error) || recover === null) return yield* Effect.die(error)
      yield* options.diskFull.report(part, whereOf(error, part))
      backoffMs = nextBackoffMs(backoffMs)
      yield* Effect.sleep(Duration.millis(backoffMs))
      const failure = yield* Effect.flip(Effect.zipRight(recover, Effect.suspend(write))).pipe(Effect.option)
      if (failure._tag === "None") return
      error = failure.value
    }
  })
