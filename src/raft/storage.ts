// What the core exchanges with durable storage: what a node recovers at start, and what one
// Ready asks to make durable. Defined here, beside the core that produces and consumes them;
// src/storage/LogStore.ts documents the contract a store keeps for them.
import type { Entry, HardState, LogIndex, LogSlot, SnapshotMeta, Term } from "./types.ts"

/** What a node recovers from its storage at start. */
export interface Recovered {
  /** {term: 0, vote: null, commit: 0} for a new log. */
  readonly hardState: HardState
  /** Entries <= base.index were compacted away ({0, 0} when none were). */
  readonly base: { readonly index: LogIndex; readonly term: Term }
  /** base.index + 1 .. last, contiguous. */
  readonly entries: ReadonlyArray<Entry>
  /** The last snapshot installed through a persist (`PersistBatch.snapshot`), or null. A node's
   * own snapshots are in the snapshot store: at start-up take the newer of the two. */
  readonly snapshot: SnapshotMeta | null
}

/** What a node recovers when its store keeps the entry cache's bound from the start: command
 * entries older than the newest bytes of data are EvictedEntry (their data stays on disk). */
export interface RecoveredBounded extends Omit<Recovered, "entries"> {
  readonly entries: ReadonlyArray<LogSlot>
}

/** One Ready's durable part (its rules: src/storage/LogStore.ts). */
export interface PersistBatch {
  readonly hardState?: HardState
  readonly snapshot?: SnapshotMeta
  readonly truncateFrom?: LogIndex
  readonly entries: ReadonlyArray<Entry>
  readonly compactUpTo?: { readonly index: LogIndex; readonly term: Term }
}
