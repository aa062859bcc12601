// The applier actor: owns the replicated state machine, applies committed entries in index
// order, answers the proposals waiting on them, runs reads once the state machine has reached
// their read index, and takes snapshots when the Raft actor asks.
//
// A full disk under the state machine (ENOSPC / EDQUOT / SQLITE_FULL, thrown as a defect by
// `apply`, `sync` or `restore`) is waited out: the same step is retried with a bounded backoff
// until it succeeds, and the applied index is published only after the batch's `sync` did. Page
// sets are full page images and a restore replaces whole files, so running a step again is safe.
//
// The steady state is plain code (issue 12): a batch of committed entries is applied with the
// state machine's `applyNow`, synced with `syncNow` when no file is due, published, and its
// waiters answered, with no Effect operation of its own; what needs one (a restore, a snapshot,
// a large entry, a due fdatasync, a full disk) is returned as an Effect that goes on with the
// rest of the batch, in the same order. What is left per batch is the mailbox's wake-up.
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
  /** Optional, the steady state in plain code: applies `entry` at once and returns its result, or
   * `applyLater` having done nothing when only `apply` can (SQLite writes a large entry's pages on
   * the thread pool). Throws what `apply` dies of: a full disk is then waited out with `apply`. */
  readonly applyNow?: (entry: Entry) => R | typeof applyLater
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
  /** Optional, beside `sync`: its work in plain code when that needs no wait (nothing due for an
   * fdatasync, no lock held): true when done, false when `sync` must run. Throws what `sync` dies
   * of (a full disk: waited out with `sync`). */
  readonly syncNow?: () => boolean
  /** Optional: sees a snapshot's bytes as they arrive from the leader, beside the snapshot store
   * (the node wiring puts it between the transport and the store's inbox): a state machine may
   * prepare its install meanwhile (SQLite writes each image into a file of its own, renamed into
   * place by `restore` instead of copied). Returns the transfer the transport writes into. */
  readonly receiveAlongside?: (incoming: IncomingSnapshot) => Effect.Effect<IncomingSnapshot>
}

/** `StateMachine.applyNow`'s answer for an entry it leaves to `apply`. */
export const applyLater: unique symbol = Symbol.for("tqlite/Applier/applyLater")

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
  /** The same in plain code, used instead of `onApplied` when given. */
  readonly onAppliedNow?: (index: LogIndex) => void
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

    /** The batch's committed entries, reads and their order in plain code (the steady state: no
     * Effect operation, no resumption); a step that needs an Effect (a restore, a snapshot, an
     * entry or sync only `apply` / `sync` can do, a full disk waited out) returns one that goes on
     * from the next step when it is done. */
    const receive = (state: ApplierState, batch: ReadonlyArray<ApplierMessage<R, SM>>): ApplierState | Effect.Effect<ApplierState> => {
      const run: BatchRun = { startedMs: performance.now(), appliedBefore: state.applied, restored: false, callbacks: null, readsToPrune: false }
      return handleFrom(state, batch, run, 0, 0)
    }

    /** Handles `batch` from its message `from` (an Apply from its entry `entryFrom`) on. */
    const handleFrom = (state: ApplierState, batch: ReadonlyArray<ApplierMessage<R, SM>>, run: BatchRun, from: number, entryFrom: number): ApplierState | Effect.Effect<ApplierState> => {
      const next = (m: number, e: number) => () => asEffect(handleFrom(state, batch, run, m, e))
      for (let m = from; m < batch.length; m++) {
        const message = batch[m]!
        switch (message._tag) {
          case "Apply": {
            const entries = message.entries
            const first = m === from ? entryFrom : 0
            if (first === 0 && entries.length > 0) trace("apply.start", entries[entries.length - 1]!.index)
            for (let e = first; e < entries.length; e++) {
              const entry = entries[e]!
              if (entry.index <= state.applied) continue // replay after a restore
              assert(entry.index === state.applied + 1, `apply ${entry.index} after ${state.applied}`)
              let result: R | typeof applyLater = applyLater
              if (sm.applyNow !== undefined) {
                try {
                  result = sm.applyNow(entry)
                } catch (error) {
                  // As `apply` dying: a full disk is waited out, anything else stops the applier.
                  return Effect.flatMap(retryUntilWritten(watch, sm.apply(entry), Cause.die(error)), (result) => {
                    applied(state, message, entry, result, run)
                    return next(m, e + 1)()
                  })
                }
              }
              if (result === applyLater) {
                return Effect.flatMap(untilWritten(watch, sm.apply(entry)), (result) => {
                  applied(state, message, entry, result, run)
                  return next(m, e + 1)()
                })
              }
              applied(state, message, entry, result, run)
            }
            break
          }
          case "Restore":
            return Effect.flatMap(untilWritten(watch, sm.restore(message.meta, message.source)), () => {
              state.applied = message.meta.index
              run.restored = true
              runReadyReads(state, run)
              return next(m + 1, 0)()
            })
          case "Read":
            state.reads.push({ index: message.index, run: message.run as (sm: unknown) => unknown, reply: message.reply })
            break
          case "Snapshot":
            return Effect.flatMap(takeSnapshot(state, message.meta), () => {
              runReadyReads(state, run)
              return next(m + 1, 0)()
            })
        }
        runReadyReads(state, run)
      }
      return endBatch(state, run)
    }

    /** An entry applied: counted, and the proposal waiting on it answered (a callback once the
     * batch is published, in this fiber, with no resumption of a waiting one). */
    const applied = (state: ApplierState, message: Extract<ApplierMessage<R, SM>, { _tag: "Apply" }>, entry: Entry, result: R, run: BatchRun): void => {
      state.applied = entry.index
      const waiter = message.waiters.get(entry.index)
      if (waiter === undefined) return
      trace("apply.answer", entry.index)
      const exit = Exit.succeed({ index: entry.index, term: entry.term, result })
      if (typeof waiter === "function") (run.callbacks ??= []).push(callWith(waiter, exit))
      else Deferred.unsafeDone(waiter, exit)
    }

    /** Reads see a state at or after their read index: run as soon as it is reached. */
    const runReadyReads = (state: ApplierState, run: BatchRun): void => {
      if (state.reads.length === 0) return
      const waiting: ApplierState["reads"] = []
      for (const read of state.reads) {
        if (read.index <= state.applied) Deferred.unsafeDone(read.reply, Exit.succeed(read.run(sm)))
        else waiting.push(read)
      }
      state.reads = waiting
      if (waiting.length > 0) run.readsToPrune = true
    }

    /** After the batch's messages: the sync (once, if anything was applied or restored), then the
     * applied index published, then the callback replies. */
    const endBatch = (state: ApplierState, run: BatchRun): ApplierState | Effect.Effect<ApplierState> => {
      if (sm.sync === undefined || !(run.restored || state.applied !== run.appliedBefore)) return publish(state, run)
      const afterSync = () => asEffect(synced(state, run))
      if (sm.syncNow !== undefined) {
        let done: boolean
        try {
          done = sm.syncNow()
        } catch (error) {
          return Effect.flatMap(retryUntilWritten(watch, sm.sync, Cause.die(error)), afterSync)
        }
        if (done) return synced(state, run)
      }
      return Effect.flatMap(untilWritten(watch, sm.sync), afterSync)
    }

    const synced = (state: ApplierState, run: BatchRun): ApplierState | Effect.Effect<ApplierState> => {
      trace("apply.synced", state.applied)
      traceDuration("apply.batch.ms", run.startedMs)
      // Pages written and synced: whatever reported the state machine's disk full (this
      // applier, or the leader's SQLite) is over.
      if (watch.isFull("state machine")) return Effect.flatMap(watch.clear("state machine"), () => asEffect(publish(state, run)))
      return publish(state, run)
    }

    const publish = (state: ApplierState, run: BatchRun): ApplierState | Effect.Effect<ApplierState> => {
      // A read answered meanwhile (its caller timed out) waits no longer: a session index this
      // node never reaches must not hold a closure forever.
      if (run.readsToPrune) {
        run.readsToPrune = false
        return Effect.flatMap(
          Effect.filter(state.reads, (read) => Effect.map(Deferred.isDone(read.reply), (done) => !done)),
          (waiting) => {
            state.reads = waiting
            return asEffect(publish(state, run))
          }
        )
      }
      const moved = state.applied !== appliedPublished
      appliedPublished = state.applied
      const answer = () => {
        if (run.callbacks !== null) for (const call of run.callbacks) call()
        return state
      }
      if (!moved) return answer()
      if (options.onAppliedNow !== undefined) {
        options.onAppliedNow(state.applied)
        return answer()
      }
      return options.onApplied === undefined ? answer() : Effect.map(options.onApplied(state.applied), answer)
    }

    const takeSnapshot = (state: ApplierState, meta: SnapshotMeta): Effect.Effect<void> =>
      Effect.gen(function*() {
        assert(meta.index === state.applied, `snapshot at ${meta.index}, applied ${state.applied}`)
        const save = (write: (sink: SnapshotSink) => Effect.Effect<void, unknown>) =>
          Effect.flatMap(Effect.either(options.saveSnapshot(meta, write)), (saved) =>
            saved._tag === "Right" ? options.onSnapshotSaved(meta) : (options.onSnapshotFailed ?? Effect.void))
        if (sm.prepareSnapshot === undefined) return yield* save(sm.snapshot)
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
      })

    const actor = yield* Actor.make<ApplierState, ApplierMessage<R, SM>, never>({
      name: options.name,
      mailboxCapacity: options.mailboxCapacity,
      batchMax: options.batchMax,
      // A restart must not re-apply: the state machine lives outside the actor's state.
      initial: Effect.sync(() => ({ applied: appliedPublished, reads: [] })),
      supervision: { restartsMax: 0, windowMs: 1000 },
      receive
    })
    return { actor, applied: Effect.sync(() => appliedPublished), appliedNow: () => appliedPublished }
  })

/** What one batch has done so far. */
interface BatchRun {
  readonly startedMs: number
  readonly appliedBefore: LogIndex
  restored: boolean
  /** Callback replies (the leader's writer), called once the batch is applied and published. */
  callbacks: Array<() => void> | null
  /** Some reads still wait: those answered meanwhile are dropped before the batch ends. */
  readsToPrune: boolean
}

const asEffect = <S>(next: S | Effect.Effect<S>): Effect.Effect<S> => (Effect.isEffect(next) ? next as Effect.Effect<S> : Effect.succeed(next))

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
