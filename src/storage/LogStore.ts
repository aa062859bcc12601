// The durable Raft log as the Raft driver sees it: one `load` at start-up, then `persist` of
// whatever the core asked to make durable, one group at a time. Two implementations:
// `LogStore.layerMemory` (fast tests) and `SegmentLog.layer` (segment files on a `Disk`).
import { Context, Effect, Layer } from "effect"
import { assert } from "../assert.ts"
import type { PersistBatch, Recovered, RecoveredBounded } from "../raft/storage.ts"
import type { Entry, LogIndex } from "../raft/types.ts"
import { entrySizeBytes } from "../raft/types.ts"
import type { DiskFailure, StorageError } from "./errors.ts"
import { EntriesUnavailable } from "./errors.ts"
import { LogState } from "./logState.ts"
import type { LogOperation } from "./logState.ts"

/**
 * A PersistBatch (src/raft/storage.ts) is one Raft "Ready" to make durable. Its parts apply in this order:
 * 1. `hardState` replaces the hard state;
 * 2. `snapshot`: a follower installed a snapshot (its data is already committed in the snapshot
 *    store): every entry goes, and the log continues at snapshot.index + 1 with base
 *    (snapshot.index, snapshot.term);
 * 3. `truncateFrom` removes the entries with index >= truncateFrom (a conflict), before appending;
 *    base.index < truncateFrom <= last + 1;
 * 4. `entries` are appended: contiguous, the first at last + 1, terms never below the last term;
 * 5. `compactUpTo`: entries <= index may be dropped (a snapshot covers them) and (index, term)
 *    becomes the base; base.index <= index <= last, and `term` is that entry's term.
 * A batch that breaks these rules is a bug in the caller: `persist` dies with an AssertionError.
 */
export type { PersistBatch, Recovered }

export interface LogStoreService {
  /** The durable state. Call once at start-up (it is also valid later, for tests and tools). */
  readonly load: Effect.Effect<Recovered, StorageError>
  /** `load` for a node starting: only the newest `dataBytesMax` bytes of command data (at least
   * the last command) are read; older commands come as EvictedEntry (the Raft core's entry cache
   * reads them back with `read` when needed), so start-up memory does not grow with the log. */
  readonly loadBounded: (dataBytesMax: number) => Effect.Effect<RecoveredBounded, StorageError>
  /** Applies all batches in order and makes them durable with one fdatasync (a segment roll adds
   * one for the closed segment and a directory fsync). Returns when everything is durable. At most
   * {@link persistEntriesMax} entries and {@link persistBytesMax} bytes per call (see
   * {@link groupPersistBatches}). After a failure the store is broken: every later call fails
   * with `LogStoreBroken` until the node restarts and reloads — or, after a full disk, until
   * `recover` succeeds. */
  readonly persist: (batches: ReadonlyArray<PersistBatch>) => Effect.Effect<void, StorageError>
  /** After a `persist` that failed for a full disk (`DiskFull`): puts the files back to the state
   * the last successful `persist` left durable and reloads from them, so that the same batches can
   * be persisted again. Nothing the failed call wrote is kept. Fails with `DiskFull` when that
   * is not possible yet (try again later) and with `LogStoreBroken` when the failure cannot be
   * undone in place (a failure other than a full disk, or one while old segments were being
   * removed): then only a restart recovers. A no-op when the store is not broken. */
  readonly recover: Effect.Effect<void, StorageError>
  /** Entries lo..hi (inclusive) of the durable log, for the Raft driver's read-backs of entries
   * the core evicted from memory. Fails with `EntriesUnavailable` when any of them is not in the
   * log (compacted, truncated or not yet written), `LogCorrupted` when a record read back is not
   * the entry the index says (checksum, index or term), `LogStoreBroken` while the store is
   * broken. lo > hi reads nothing. */
  readonly read: (lo: LogIndex, hi: LogIndex) => Effect.Effect<ReadonlyArray<Entry>, StorageError>
  /** Deletes the files the open found no longer part of the log (segments before the base, left
   * by a compaction or an interrupted removal), on the thread pool: the node runs it once it
   * serves, so a restart never waits for them. Until then, and after a crash, they are harmless:
   * the next open leaves them out again. Absent: nothing to remove (the memory store). */
  readonly removeLeftovers?: Effect.Effect<void, DiskFailure>
}

export class LogStore extends Context.Tag("tqlite/storage/LogStore")<LogStore, LogStoreService>() {
  /** In memory, for tests that do not exercise the disk. Same rules as the segment log; the state
   * lives as long as the layer. */
  static readonly layerMemory: Layer.Layer<LogStore> = Layer.sync(LogStore, () => makeMemoryLogStore())
}

// --- group-commit bounds -------------------------------------------------------------------

/** Entries in one `persist` call: bounds the latency of the fsync everyone in the group waits for. */
export const persistEntriesMax = 16_384
/** Bytes (as `entrySizeBytes` counts them) in one `persist` call; bounds the write buffer too. */
export const persistBytesMax = 32 * 1024 * 1024

export function persistBatchBytes(batch: PersistBatch): number {
  let bytes = 0
  for (const entry of batch.entries) bytes += entrySizeBytes(entry)
  return bytes
}

export function assertPersistBounds(batches: ReadonlyArray<PersistBatch>): void {
  let entries = 0
  let bytes = 0
  for (const batch of batches) {
    entries += batch.entries.length
    bytes += persistBatchBytes(batch)
  }
  assert(entries <= persistEntriesMax, `persist of ${entries} entries exceeds persistEntriesMax ${persistEntriesMax}`)
  assert(bytes <= persistBytesMax, `persist of ${bytes} bytes exceeds persistBytesMax ${persistBytesMax}`)
}

/** Cuts a drained queue of batches into groups that each fit one `persist` call, keeping order.
 * For the log writer: `for (const group of groupPersistBatches(drained)) yield* store.persist(group)`.
 * A single batch larger than the bounds is a bug in whoever produced it (an assertion fails). */
export function groupPersistBatches(batches: ReadonlyArray<PersistBatch>): ReadonlyArray<ReadonlyArray<PersistBatch>> {
  const groups: Array<Array<PersistBatch>> = []
  let group: Array<PersistBatch> = []
  let entries = 0
  let bytes = 0
  for (const batch of batches) {
    const batchBytes = persistBatchBytes(batch)
    assert(
      batch.entries.length <= persistEntriesMax && batchBytes <= persistBytesMax,
      `one persist batch of ${batch.entries.length} entries / ${batchBytes} bytes exceeds the persist bounds`
    )
    if (group.length > 0 && (entries + batch.entries.length > persistEntriesMax || bytes + batchBytes > persistBytesMax)) {
      groups.push(group)
      group = []
      entries = 0
      bytes = 0
    }
    group.push(batch)
    entries += batch.entries.length
    bytes += batchBytes
  }
  if (group.length > 0) groups.push(group)
  return groups
}

/** `store.persist` for a drained queue of any length: one call (one fsync) per group that fits
 * the bounds. This is what the Raft driver's log writer is given. */
export function persistInGroups(store: LogStoreService): (batches: ReadonlyArray<PersistBatch>) => Effect.Effect<void, StorageError> {
  return (batches) => Effect.forEach(groupPersistBatches(batches), (group) => store.persist(group), { discard: true })
}

/** Like {@link persistInGroups}, for a caller that retries after a full disk: when a call fails
 * after some of its groups were made durable, a retry with the same array (the same reference,
 * after `store.recover`) starts at the group that failed — the groups before it are durable and
 * appending them again would break the log's contiguity. Remembers one failed call at most. */
export function persistInGroupsResumable(store: LogStoreService): (batches: ReadonlyArray<PersistBatch>) => Effect.Effect<void, StorageError> {
  let unfinished: { readonly batches: ReadonlyArray<PersistBatch>; groupsDone: number } | null = null
  return (batches) =>
    Effect.suspend(() => {
      const groups = groupPersistBatches(batches)
      // One group and nothing unfinished (the common case): nothing to resume should it fail
      // half-way, so no bookkeeping.
      if (groups.length === 1 && unfinished === null) {
        unfinished = { batches, groupsDone: 0 }
        return Effect.map(store.persist(groups[0]!), () => void (unfinished = null))
      }
      const progress = unfinished !== null && unfinished.batches === batches ? unfinished : { batches, groupsDone: 0 }
      unfinished = progress
      return Effect.forEach(groups.slice(progress.groupsDone), (group) =>
        Effect.tap(store.persist(group), () => Effect.sync(() => void progress.groupsDone++)), { discard: true }).pipe(
        Effect.tap(() => Effect.sync(() => void (unfinished = null)))
      )
    })
}

/** The steps of one batch, in the order they apply. */
export function* operationsOf(batch: PersistBatch): Generator<LogOperation> {
  if (batch.hardState !== undefined) yield { _tag: "hardState", hardState: batch.hardState }
  if (batch.snapshot !== undefined) yield { _tag: "snapshot", meta: batch.snapshot }
  if (batch.truncateFrom !== undefined) yield { _tag: "truncate", from: batch.truncateFrom }
  for (const entry of batch.entries) yield { _tag: "append", entry }
  if (batch.compactUpTo !== undefined) {
    yield { _tag: "compact", base: { index: batch.compactUpTo.index, term: batch.compactUpTo.term } }
  }
}

/** Applies `operation` to `state`, or fails the assertion that the caller kept the contract. */
export function applyOrDie(state: LogState, operation: LogOperation): void {
  const problem = state.apply(operation)
  assert(problem === null, `persist: ${problem}`)
}

export function recoveredOf(state: LogState): Recovered {
  return { hardState: state.hardState, base: state.base, entries: state.liveEntries(), snapshot: state.snapshot }
}

/** The in-memory store behind `LogStore.layerMemory`. */
export function makeMemoryLogStore(): LogStoreService {
  const state = new LogState({ keepEntries: true })
  return {
    load: Effect.sync(() => recoveredOf(state)),
    // Memory holds every entry anyway: nothing to leave on disk.
    loadBounded: () => Effect.sync(() => recoveredOf(state)),
    persist: (batches) =>
      Effect.sync(() => {
        assertPersistBounds(batches)
        for (const batch of batches) {
          for (const operation of operationsOf(batch)) applyOrDie(state, operation)
        }
      }),
    // Memory never fills up: persist fails only on a broken contract, which is a defect.
    recover: Effect.void,
    read: (lo, hi) =>
      Effect.suspend(() => {
        if (lo > hi) return Effect.succeed([])
        const entries = state.entriesIn(lo, hi)
        return entries === undefined ? Effect.fail(new EntriesUnavailable({ lo, hi, base: state.base.index, last: state.lastIndex })) : Effect.succeed(entries)
      })
  }
}
