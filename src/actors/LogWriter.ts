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
  /** `send` in plain code where the transport can: true when done (sent, queued or dropped),
   * false when only `send` can (then it is used, for this message and the ones after it). */
  readonly sendNow?: (envelope: Envelope) => boolean
  /** Called, in plain code, once a job and all before it are durable (with the last job's
   * mark); must not throw. */
  readonly onPersisted: (index: LogIndex, term: Term) => void
}

export interface LogWriter extends Actor.Actor<PersistJob> {
  /** Releases a job with nothing to write (acknowledgements of appends with no entries) at once,
   * in the caller, when the writer waits idle with nothing queued — every earlier job is durable
   * and released, so these messages may leave now, in order. False: nothing done, offer the job;
   * null: done; an Effect: what is left to do (sends the transport could not make in plain code),
   * for the caller to run next. */
  readonly releaseNow: (job: PersistJob) => Effect.Effect<void> | null | false
}

/** Sends `envelopes` from `from` on, in order: in plain code while `sendNow` can, then as
 * Effects for the rest (null when nothing is left). */
export const sendInOrder = (
  envelopes: ReadonlyArray<Envelope>,
  from: number,
  sendNow: ((envelope: Envelope) => boolean) | undefined,
  send: (envelope: Envelope) => Effect.Effect<void>
): Effect.Effect<void> | null => {
  for (let i = from; i < envelopes.length; i++) {
    if (sendNow !== undefined && sendNow(envelopes[i]!)) continue
    const rest = envelopes.slice(i)
    return Effect.forEach(rest, send, { discard: true })
  }
  return null
}

export const make = (options: LogWriterOptions): Effect.Effect<LogWriter, never, Scope.Scope> =>
  Effect.map(Actor.make<null, PersistJob, never>({
    name: options.name,
    mailboxCapacity: options.mailboxCapacity,
    batchMax: options.batchMax,
    initial: Effect.succeed(null),
    // A failed write (other than a full disk, retried in place) leaves the log in an unknown
    // state: never retry blindly, stop the node.
    supervision: { restartsMax: 0, windowMs: 1000 },
    // Plain code around the one Effect a job needs, the write: this runs once per fsync on every
    // node, and a job with nothing to write (acknowledgements) costs no Effect operation.
    receive: (state, jobs) => {
      const batches = jobs.length === 1 ? jobs[0]!.batches : jobs.flatMap((job) => job.batches)
      const through = jobs[jobs.length - 1]!.persisted.index
      // No batches (acknowledgements of appends with no entries): nothing to write.
      if (batches.length === 0) {
        const rest = release(options, jobs, false)
        return rest === null ? state : Effect.as(rest, state)
      }
      // receive runs as its batch is taken: the write starts now.
      trace("log.write", through)
      const written = untilWritten(options, "log", () => options.persist(batches), options.recover ?? null)
      // A large entry is encoded and checksummed in one piece: let timers and sockets run
      // first (src/runtime/yieldToLoop.ts), so this node's heartbeats and answers keep flowing.
      return Effect.flatMap(afterYieldIfLarge(batchesBytes(batches), written), () => {
        trace("log.synced", through)
        const rest = release(options, jobs, true)
        return rest === null ? Effect.succeed(state) : Effect.as(rest, state)
      })
    }
  }), (actor): LogWriter => ({
    ...actor,
    releaseNow: (job) => {
      if (job.batches.length > 0 || !actor.idle()) return false
      return release(options, [job], false)
    }
  }))

/** Lets go of what waited on `jobs` being durable: a full-disk episode ends (a write succeeded),
 * the messages leave in order, and the Raft actor learns the mark. Plain code; the Effect
 * returned (or null) is what could not be done so. */
function release(options: LogWriterOptions, jobs: ReadonlyArray<PersistJob>, wrote: boolean): Effect.Effect<void> | null {
  // A write that succeeded ends a full-disk episode, first (checked here, in plain code).
  const clear = wrote && options.diskFull.isFull("log") ? options.diskFull.clear("log") : null
  const after = jobs.length === 1 ? jobs[0]!.after : jobs.flatMap((job) => job.after)
  const last = jobs[jobs.length - 1]!
  if (clear !== null) {
    return Effect.zipRight(clear, Effect.suspend(() => releaseMessages(options, after, last) ?? Effect.void))
  }
  return releaseMessages(options, after, last)
}

function releaseMessages(options: LogWriterOptions, after: ReadonlyArray<Envelope>, last: PersistJob): Effect.Effect<void> | null {
  for (const envelope of after) traceMessage("log.after", envelope.message)
  const sends = sendInOrder(after, 0, options.sendNow, options.send)
  if (sends === null) {
    options.onPersisted(last.persisted.index, last.persisted.term)
    return null
  }
  return Effect.zipRight(sends, Effect.sync(() => options.onPersisted(last.persisted.index, last.persisted.term)))
}

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
