// The applier actor: owns the replicated state machine, applies committed entries in index
// order, answers the proposals waiting on them, runs reads once the state machine has reached
// their read index, and takes snapshots when the Raft actor asks.
import type { Scope } from "effect"
import { Deferred, Effect, Exit } from "effect"
import { assert } from "../assert.ts"
import type { Entry, LogIndex, SnapshotMeta } from "../raft/types.ts"
import * as Actor from "./Actor.ts"
import type { RaftRequestError } from "./raftErrors.ts"

/** The replicated state machine, pluggable: the simulator's key-value map, tqlite's SQLite. */
export interface StateMachine<R> {
  /** Applies one committed entry (config and barrier entries too; most ignore them). */
  readonly apply: (entry: Entry) => Effect.Effect<R>
  /** The state as of the last applied entry. */
  readonly snapshot: Effect.Effect<Uint8Array>
  readonly restore: (meta: SnapshotMeta, data: Uint8Array) => Effect.Effect<void>
  /** Optional: runs once after each mailbox batch that applied or restored anything, before the
   * applied index is published, so a state machine can make a whole batch durable with one
   * fsync (SQLite's page applier) instead of one per entry. */
  readonly sync?: Effect.Effect<void>
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
    readonly waiters: ReadonlyMap<LogIndex, Deferred.Deferred<Applied<R>, RaftRequestError>>
  }
  | { readonly _tag: "Restore"; readonly meta: SnapshotMeta; readonly data: Uint8Array }
  | { readonly _tag: "Read"; readonly index: LogIndex; readonly run: (sm: SM) => unknown; readonly reply: Deferred.Deferred<unknown, RaftRequestError> }
  | { readonly _tag: "Snapshot"; readonly meta: SnapshotMeta }

export interface ApplierOptions<R, SM> {
  readonly name: string
  readonly stateMachine: SM & StateMachine<R>
  readonly mailboxCapacity: number
  readonly batchMax: number
  /** Where a snapshot goes once taken (the snapshot store); then the Raft actor hears of it. */
  readonly saveSnapshot: (meta: SnapshotMeta, data: Uint8Array) => Effect.Effect<void>
  readonly onSnapshotSaved: (meta: SnapshotMeta) => Effect.Effect<void>
  /** Applied index starts here (the snapshot the node booted from). */
  readonly appliedIndex: LogIndex
}

interface ApplierState {
  applied: LogIndex
  reads: Array<{ readonly index: LogIndex; readonly run: (sm: unknown) => unknown; readonly reply: Deferred.Deferred<unknown, RaftRequestError> }>
}

export interface ApplierHandle<R, SM> {
  readonly actor: Actor.Actor<ApplierMessage<R, SM>>
  readonly applied: Effect.Effect<LogIndex>
}

export const make = <R, SM>(options: ApplierOptions<R, SM>): Effect.Effect<ApplierHandle<R, SM>, never, Scope.Scope> =>
  Effect.gen(function*() {
    const sm = options.stateMachine
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
          const appliedBefore = state.applied
          let restored = false
          for (const message of batch) {
            switch (message._tag) {
              case "Apply":
                for (const entry of message.entries) {
                  if (entry.index <= state.applied) continue // replay after a restore
                  assert(entry.index === state.applied + 1, `apply ${entry.index} after ${state.applied}`)
                  const result = yield* sm.apply(entry)
                  state.applied = entry.index
                  const waiter = message.waiters.get(entry.index)
                  if (waiter !== undefined) Deferred.unsafeDone(waiter, Exit.succeed({ index: entry.index, term: entry.term, result }))
                }
                break
              case "Restore":
                yield* sm.restore(message.meta, message.data)
                state.applied = message.meta.index
                restored = true
                break
              case "Read":
                state.reads.push({ index: message.index, run: message.run as (sm: unknown) => unknown, reply: message.reply })
                break
              case "Snapshot": {
                assert(message.meta.index === state.applied, `snapshot at ${message.meta.index}, applied ${state.applied}`)
                const data = yield* sm.snapshot
                yield* options.saveSnapshot(message.meta, data)
                yield* options.onSnapshotSaved(message.meta)
                break
              }
            }
            // Reads see a state at or after their read index: run them as soon as it is reached.
            if (state.reads.length > 0) {
              const ready = state.reads.filter((r) => r.index <= state.applied)
              state.reads = state.reads.filter((r) => r.index > state.applied)
              for (const read of ready) Deferred.unsafeDone(read.reply, Exit.succeed(read.run(sm)))
            }
          }
          if (sm.sync !== undefined && (restored || state.applied !== appliedBefore)) yield* sm.sync
          appliedPublished = state.applied
          return state
        })
    })
    return { actor, applied: Effect.sync(() => appliedPublished) }
  })
