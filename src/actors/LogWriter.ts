// The log writer actor: group commit. It drains every persist job waiting in its mailbox, makes
// them durable with one LogStore call (one fsync), then releases the messages that waited on
// that durability and tells the Raft actor how far the log is durable.
import type { Scope } from "effect"
import { Effect } from "effect"
import type { Message } from "../raft/messages.ts"
import type { Entry, HardState, LogIndex, SnapshotMeta, Term } from "../raft/types.ts"
import * as Actor from "./Actor.ts"

/** What travels between peers: a Raft message, plus the snapshot's data beside an
 * InstallSnapshot (the core never holds snapshot data). */
export interface Envelope {
  readonly message: Message
  readonly snapshot: Uint8Array | null
}

/** One Ready's durable part, in the shape the storage layer's LogStore takes. */
export interface PersistBatch {
  readonly hardState?: HardState
  readonly snapshot?: SnapshotMeta
  readonly truncateFrom?: LogIndex
  readonly entries: ReadonlyArray<Entry>
  readonly compactUpTo?: { readonly index: LogIndex; readonly term: Term }
}

export interface PersistJob {
  readonly batches: ReadonlyArray<PersistBatch>
  /** A snapshot received from the leader: stored before the batch that installs it. */
  readonly snapshot: { readonly meta: SnapshotMeta; readonly data: Uint8Array } | null
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
  readonly saveSnapshot: (meta: SnapshotMeta, data: Uint8Array) => Effect.Effect<void, unknown>
  readonly send: (envelope: Envelope) => Effect.Effect<void>
  readonly onPersisted: (index: LogIndex, term: Term) => Effect.Effect<void>
}

export const make = (options: LogWriterOptions): Effect.Effect<Actor.Actor<PersistJob>, never, Scope.Scope> =>
  Actor.make<null, PersistJob, never>({
    name: options.name,
    mailboxCapacity: options.mailboxCapacity,
    batchMax: options.batchMax,
    initial: Effect.succeed(null),
    // A failed write leaves the log in an unknown state: never retry blindly, stop the node.
    supervision: { restartsMax: 0, windowMs: 1000 },
    receive: (state, jobs) =>
      Effect.gen(function*() {
        for (const job of jobs) {
          if (job.snapshot !== null) yield* Effect.orDie(options.saveSnapshot(job.snapshot.meta, job.snapshot.data))
        }
        const batches = jobs.flatMap((job) => job.batches)
        if (batches.length > 0) yield* Effect.orDie(options.persist(batches))
        for (const job of jobs) for (const envelope of job.after) yield* options.send(envelope)
        const last = jobs[jobs.length - 1]
        if (last !== undefined) yield* options.onPersisted(last.persisted.index, last.persisted.term)
        return state
      })
  })
