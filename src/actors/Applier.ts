// The applier actor: owns the replicated state machine, applies committed entries in index
// order, answers the proposals waiting on them, runs reads once the state machine has reached
// their read index, and takes snapshots when the Raft actor asks.
//
// A full disk under the state machine (ENOSPC / EDQUOT / SQLITE_FULL, thrown as a defect by
// `apply`, `sync` or `restore`) is waited out: the same step is retried with a bounded backoff
// until it succeeds, and the applied index is published only after the batch's `sync` did. Page
// sets are full page images and a restore replaces whole files, so running a step again is safe.
import type { Scope } from "effect"
import { Cause, Deferred, Duration, Effect, Exit, Option } from "effect"
import { assert } from "../assert.ts"
import type { Entry, LogIndex, SnapshotMeta } from "../raft/types.ts"
import * as Actor from "../runtime/Actor.ts"
import type { DiskFullWatch } from "./DiskFullWatch.ts"
import * as DiskFullWatchModule from "./DiskFullWatch.ts"
import { isDiskFull, nextBackoffMs, whereOf } from "./DiskFullWatch.ts"
import type { RaftRequestError } from "./raftErrors.ts"
import type { Reply, ReplyCallback } from "./reply.ts"
import type { IncomingSnapshot, SnapshotSink, SnapshotSource } from "./snapshotData.ts"
import { trace, traceDuration } from "../runtime/trace.ts"

/** The replicated state machine, pluggable: the simulator's key-value map, tqlite's SQLite. */
export interface StateMachine<R> {
  /** Applies one committed entry (config and barrier entries too; most ignore them). */
  readonly apply: (entry: Entry) => Effect.Effect<R>
  /** Writes the state as of the last applied entry into `sink`, in order, in bounded chunks
   * (never the whole state in one buffer). */
  readonly snapshot: (sink: SnapshotSink) => Effect.Effect<void, unknown>
  /** Optional, instead of `snapshot`: runs in the applier and fixes what the snapshot will be,
   * returning the job that writes it. A `concurrent` job runs while the applier goes on applying
   * (its state machine guarantees the job still writes the state as of the snapshot's index —
   * SQLite's by copy-on-write of the pages applied meanwhile — or fails it as SnapshotSkipped);
   * else the applier waits for it. */
  readonly prepareSnapshot?: Effect.Effect<PreparedSnapshot>
  /** Replaces the state by the snapshot `source` holds (read in bounded chunks). */
  readonly restore: (meta: SnapshotMeta, source: SnapshotSource) => Effect.Effect<void>
  /** Optional: the lowest index whose entry the state machine's own durable state still needs
   * to catch up at a restart without reading its snapshot (its files lag the applied index);
   * the log keeps entries from there on past compactions, within a bound (SnapshotTaken). */
  readonly replayFrom?: () => LogIndex
  /** Optional: runs once after each mailbox batch that applied or restored anything, before the
   * applied index is published, so a state machine can make a whole batch durable with one
   * fsync (SQLite's page applier) instead of one per entry. */
  readonly sync?: Effect.Effect<void>
  /** Optional: sees a snapshot's bytes as they arrive from the leader, beside the snapshot store
   * (the node wiring puts it between the transport and the store's inbox): a state machine may
   * prepare its install meanwhile (SQLite writes each image into a file of its own, renamed into
   * place by `restore` instead of copied). Returns the transfer the transport writes into. */
  readonly receiveAlongside?: (incoming: IncomingSnapshot) => Effect.Effect<IncomingSnapshot>
}

/** A snapshot fixed by `prepareSnapshot`: `write` streams it; `release` frees what it holds (run
 * once the job ended, whether or not `write` ever ran — its store may have failed first). */
export interface PreparedSnapshot {
  readonly concurrent: boolean
  readonly write: (sink: SnapshotSink) => Effect.Effect<void, unknown>
  readonly release: Effect.Effect<void>
}

export interface Applied<R> {
  readonly index: LogIndex
  readonly term: number
  readonly result: R
}

export type ApplierMessage<R, SM> =
  | {
    readonly _tag: "Apply"
    readonly entries: ReadonlyArray<Entry>
    readonly waiters: ReadonlyMap<LogIndex, Reply<Applied<R>>>
  }
  | { readonly _tag: "Restore"; readonly meta: SnapshotMeta; readonly source: SnapshotSource }
  | { readonly _tag: "Read"; readonly index: LogIndex; readonly run: (sm: SM) => unknown; readonly reply: Deferred.Deferred<unknown, RaftRequestError> }
  | { readonly _tag: "Snapshot"; readonly meta: SnapshotMeta }

export interface ApplierOptions<R, SM> {
  readonly name: string
  readonly stateMachine: SM & StateMachine<R>
  readonly mailboxCapacity: number
  readonly batchMax: number
  /** Where a snapshot goes once taken (the snapshot store); then the Raft actor hears of it.
   * Fails with "skipped" when it could not be saved for now (a full disk, already reported). */
  readonly saveSnapshot: (meta: SnapshotMeta, produce: (sink: SnapshotSink) => Effect.Effect<void, unknown>) => Effect.Effect<void, "skipped">
  readonly onSnapshotSaved: (meta: SnapshotMeta) => Effect.Effect<void>
  /** The snapshot asked for was skipped: the Raft actor asks again later. */
  readonly onSnapshotFailed?: Effect.Effect<void>
  /** Where full-disk episodes are reported (default: a watch of the applier's own). */
  readonly diskFull?: DiskFullWatch
  /** Applied index starts here (the snapshot the node booted from). */
  readonly appliedIndex: LogIndex
  /** Called when the published applied index moves (after the batch's sync). */
  readonly onApplied?: (index: LogIndex) => Effect.Effect<void>
}

interface ApplierState {
  applied: LogIndex
  reads: Array<{ readonly index: LogIndex; readonly run: (sm: unknown) => unknown; readonly reply: Deferred.Deferred<unknown, RaftRequestError> }>
}

export interface ApplierHandle<R, SM> {
  readonly actor: Actor.Actor<ApplierMessage<R, SM>>
  readonly applied: Effect.Effect<LogIndex>
  /** The same, read synchronously (hot paths). */
  readonly appliedNow: () => LogIndex
}

export const make = <R, SM>(options: ApplierOptions<R, SM>): Effect.Effect<ApplierHandle<R, SM>, never, Scope.Scope> =>
  Effect.gen(function*() {
    const sm = options.stateMachine
    const watch = options.diskFull ?? DiskFullWatchModule.make()
    // Where a concurrent snapshot job runs: it ends with the applier.
    const scope = yield* Effect.scope
    // Published after each batch; a plain variable (read synchronously, replaced whole).
    let appliedPublished = options.appliedIndex
    const actor = yield* Actor.make<ApplierState, ApplierMessage<R, SM>, never>({
      name: options.name,
      mailboxCapacity: options.mailboxCapacity,
      batchMax: options.batchMax,
      // A restart must not re-apply: the state machine lives outside the actor's state.
      initial: Effect.sync(() => ({ applied: appliedPublished, reads: [] })),
      supervision: { restartsMax: 0, windowMs: 1000 },
      receive: (state, batch) =>
        Effect.gen(function*() {
          const batchStarted = performance.now()
          const appliedBefore = state.applied
          let restored = false
          // Callback replies (the leader's writer) run once the batch is applied and published:
          // in this fiber, with no resumption of a waiting one.
          let callbacks: Array<() => void> | null = null
          for (const message of batch) {
            switch (message._tag) {
              case "Apply":
                if (message.entries.length > 0) trace("apply.start", message.entries[message.entries.length - 1]!.index)
                for (const entry of message.entries) {
                  if (entry.index <= state.applied) continue // replay after a restore
                  assert(entry.index === state.applied + 1, `apply ${entry.index} after ${state.applied}`)
                  const result = yield* untilWritten(watch, sm.apply(entry))
                  state.applied = entry.index
                  const waiter = message.waiters.get(entry.index)
                  if (waiter === undefined) continue
                  trace("apply.answer", entry.index)
                  const exit = Exit.succeed({ index: entry.index, term: entry.term, result })
                  if (typeof waiter === "function") (callbacks ??= []).push(callWith(waiter, exit))
                  else Deferred.unsafeDone(waiter, exit)
                }
                break
              case "Restore":
                yield* untilWritten(watch, sm.restore(message.meta, message.source))
                state.applied = message.meta.index
                restored = true
                break
              case "Read":
                state.reads.push({ index: message.index, run: message.run as (sm: unknown) => unknown, reply: message.reply })
                break
              case "Snapshot": {
                assert(message.meta.index === state.applied, `snapshot at ${message.meta.index}, applied ${state.applied}`)
                const meta = message.meta
                const save = (write: (sink: SnapshotSink) => Effect.Effect<void, unknown>) =>
                  Effect.flatMap(Effect.either(options.saveSnapshot(meta, write)), (saved) =>
                    saved._tag === "Right" ? options.onSnapshotSaved(meta) : (options.onSnapshotFailed ?? Effect.void))
                if (sm.prepareSnapshot === undefined) {
                  yield* save(sm.snapshot)
                  break
                }
                // A full disk can hold the snapshot up (SQLite finishing a step-down's discard first): waited out.
                const prepared = yield* untilWritten(watch, sm.prepareSnapshot)
                const job = { ...prepared, save: Effect.ensuring(save(prepared.write), prepared.release) }
                // A defect in a concurrent job cannot stop the applier that forked it: it is logged
                // loudly and the snapshot counted as failed (the Raft actor asks again later).
                if (job.concurrent) {
                  yield* Effect.forkIn(
                    job.save.pipe(Effect.catchAllCause((cause) =>
                      Effect.zipRight(Effect.logError(`snapshot ${meta.index} failed`, cause), options.onSnapshotFailed ?? Effect.void))),
                    scope
                  )
                }
                else yield* job.save
                break
              }
            }
            // Reads see a state at or after their read index: run them as soon as it is reached.
            if (state.reads.length > 0) {
              const ready = state.reads.filter((r) => r.index <= state.applied)
              const waiting = state.reads.filter((r) => r.index > state.applied)
              for (const read of ready) Deferred.unsafeDone(read.reply, Exit.succeed(read.run(sm)))
              // A read answered meanwhile (its caller timed out) waits no longer: a session index
              // this node never reaches must not hold a closure forever.
              state.reads = []
              for (const read of waiting) if (!(yield* Deferred.isDone(read.reply))) state.reads.push(read)
            }
          }
          if (sm.sync !== undefined && (restored || state.applied !== appliedBefore)) {
            yield* untilWritten(watch, sm.sync)
            trace("apply.synced", state.applied)
            traceDuration("apply.batch.ms", batchStarted)
            // Pages written and synced: whatever reported the state machine's disk full (this
            // applier, or the leader's SQLite) is over.
            if (watch.isFull("state machine")) yield* watch.clear("state machine")
          }
          const moved = state.applied !== appliedPublished
          appliedPublished = state.applied
          if (moved && options.onApplied !== undefined) yield* options.onApplied(state.applied)
          if (callbacks !== null) for (const call of callbacks) call()
          return state
        })
    })
    return { actor, applied: Effect.sync(() => appliedPublished), appliedNow: () => appliedPublished }
  })

const callWith = <A>(callback: ReplyCallback<A>, exit: Exit.Exit<A, RaftRequestError>) => () => callback(exit)

/** Runs `step` until it does not die of a full disk; any other defect passes through. The common
 * case, a step that succeeds with no episode open, costs no more than the step. */
const untilWritten = <A>(watch: DiskFullWatch, step: Effect.Effect<A>): Effect.Effect<A> =>
  Effect.catchAllCause(step, (cause) => retryUntilWritten(watch, step, cause))

const retryUntilWritten = <A>(watch: DiskFullWatch, step: Effect.Effect<A>, firstCause: Cause.Cause<never>): Effect.Effect<A> =>
  Effect.gen(function*() {
    let backoffMs: number | null = null
    let cause = firstCause
    while (true) {
      const defect = Cause.dieOption(cause)
      if (Option.isNone(defect) || !isDiskFull(defect.value)) return yield* Effect.failCause(cause)
      yield* watch.report("state machine", whereOf(defect.value, "state machine"))
      backoffMs = nextBackoffMs(backoffMs)
      yield* Effect.sleep(Duration.millis(backoffMs))
      const exit = yield* Effect.exit(step)
      if (Exit.isSuccess(exit)) {
        yield* watch.clear("state machine")
        return exit.value
      }
      cause = exit.cause
    }
  })
