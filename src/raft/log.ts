// The core's in-memory view of the log. Terms and indexes of every entry since the last
// compaction are here; the DATA of command entries is kept only for a suffix of at most
// `entryCacheBytesMax` bytes (the entry cache): older, durable entries are reduced to their
// metadata (EvictedEntry) and read back from the log store when a follower or the applier needs
// them (see entryCache.ts). `stable` says how much is durable; only durable entries count for
// the leader's own match, are applied, or may be evicted.
import { assert } from "../assert.ts"
import type { Entry, EvictedEntry, LogIndex, LogSlot, Term } from "./types.ts"
import { entrySizeBytes, slotSizeBytes } from "./types.ts"

export interface RaftLog {
  /** The last compacted entry (a snapshot covers it and everything before). */
  base: { index: LogIndex; term: Term }
  /** Entries base.index + 1 .. lastIndex, contiguous. Below `residentFrom` a command entry may
   * be an EvictedEntry; from `residentFrom` on every slot is a whole entry. */
  entries: LogSlot[]
  /** Everything up to here is durable on this node. */
  stable: LogIndex
  /** Known committed. Never decreases. */
  committed: LogIndex
  /** Handed to the state machine up to here. Never decreases. */
  applied: LogIndex
  /** First index whose slot is surely whole: the cache is the suffix residentFrom .. last. */
  residentFrom: LogIndex
  /** Bytes of command data held for indexes >= residentFrom. */
  residentBytes: number
  /** Entries read back from the store, usable during the one step that received them (cleared
   * when the step ends, so they never count against the cache). Contiguous from `lo`. */
  loaded: { readonly lo: LogIndex; readonly entries: ReadonlyArray<Entry> } | null
}

export function makeLog(base: { index: LogIndex; term: Term }, entries: ReadonlyArray<LogSlot>, committed: LogIndex): RaftLog {
  entries.forEach((e, i) => assert(e.index === base.index + 1 + i, `log entries contiguous from ${base.index + 1}`))
  const last = base.index + entries.length
  const commit = Math.min(Math.max(committed, base.index), last)
  let residentFrom = base.index + 1
  entries.forEach((e) => {
    if (e.kind === "evicted") residentFrom = e.index + 1
  })
  let residentBytes = 0
  for (let i = residentFrom; i <= last; i++) residentBytes += dataBytes(entries[i - base.index - 1]!)
  return { base: { ...base }, entries: [...entries], stable: last, committed: commit, applied: base.index, residentFrom, residentBytes, loaded: null }
}

/** Bytes of an entry's payload that the cache counts (commands only: configs and barriers are
 * metadata-sized and never evicted). */
function dataBytes(slot: LogSlot): number {
  return slot.kind === "command" ? slot.data.byteLength : 0
}

export function lastIndex(log: RaftLog): LogIndex {
  return log.base.index + log.entries.length
}

export function lastTerm(log: RaftLog): Term {
  const last = log.entries[log.entries.length - 1]
  return last === undefined ? log.base.term : last.term
}

/** The term of the entry at `index`, or undefined when it is compacted away or beyond the end. */
export function termAt(log: RaftLog, index: LogIndex): Term | undefined {
  if (index === log.base.index) return log.base.term
  if (index < log.base.index) return undefined
  return log.entries[index - log.base.index - 1]?.term
}

/** The slot at `index` (possibly an evicted entry's metadata), or undefined outside the log. */
export function slotAt(log: RaftLog, index: LogIndex): LogSlot | undefined {
  if (index <= log.base.index) return undefined
  return log.entries[index - log.base.index - 1]
}

/** The whole entry at `index`, from the cache or from what this step loaded; undefined when it
 * is outside the log or its data is not in memory. */
export function entryAt(log: RaftLog, index: LogIndex): Entry | undefined {
  const slot = slotAt(log, index)
  if (slot === undefined) return undefined
  if (slot.kind !== "evicted") return slot
  const loaded = log.loaded
  if (loaded === null || index < loaded.lo) return undefined
  return loaded.entries[index - loaded.lo]
}

export function matchTerm(log: RaftLog, index: LogIndex, term: Term): boolean {
  return termAt(log, index) === term
}

/** Entries lo..hi (inclusive) bounded by count and bytes, up to the first one whose data is not
 * in memory; at least one when lo <= hi and the entry at lo is in memory. */
export function slice(log: RaftLog, lo: LogIndex, hi: LogIndex, countMax: number, bytesMax: number): Entry[] {
  assert(lo > log.base.index, `slice from ${lo} below the compacted base ${log.base.index}`)
  const out: Entry[] = []
  let bytes = 0
  for (let i = lo; i <= hi && out.length < countMax; i++) {
    const entry = entryAt(log, i)
    if (entry === undefined) {
      assert(slotAt(log, i)?.kind === "evicted", `slice: entry ${i} missing (last ${lastIndex(log)})`)
      break
    }
    const size = entrySizeBytes(entry)
    if (out.length > 0 && bytes + size > bytesMax) break
    out.push(entry)
    bytes += size
  }
  return out
}

export function append(log: RaftLog, entry: Entry): void {
  assert(entry.index === lastIndex(log) + 1, `append at ${entry.index} after last ${lastIndex(log)}`)
  assert(entry.term >= lastTerm(log), "appended entry's term goes backwards")
  log.entries.push(entry)
  log.residentBytes += dataBytes(entry)
}

/** Drops entries from `index` on (a conflict). Committed entries are never truncated. */
export function truncateFrom(log: RaftLog, index: LogIndex): void {
  assert(index > log.committed, `truncating committed entry ${index} (commit ${log.committed}): was the log corrupted?`)
  assert(index > log.base.index, "truncating below the compacted base")
  for (let i = Math.max(index, log.residentFrom); i <= lastIndex(log); i++) log.residentBytes -= dataBytes(log.entries[i - log.base.index - 1]!)
  log.entries.length = Math.max(0, index - log.base.index - 1)
  log.stable = Math.min(log.stable, index - 1)
  log.residentFrom = Math.min(log.residentFrom, index)
  assert(log.residentBytes >= 0, "resident bytes below zero after a truncation")
}

/** Forgets entries up to `index` (a durable snapshot covers them). */
export function compactTo(log: RaftLog, index: LogIndex): void {
  if (index <= log.base.index) return
  assert(index <= log.applied, `compacting ${index} past applied ${log.applied}`)
  const term = termAt(log, index)
  assert(term !== undefined, `compacting to ${index}: entry missing`)
  for (let i = log.residentFrom; i <= index; i++) log.residentBytes -= dataBytes(log.entries[i - log.base.index - 1]!)
  log.entries.splice(0, index - log.base.index)
  log.base = { index, term }
  log.residentFrom = Math.max(log.residentFrom, index + 1)
  assert(log.residentBytes >= 0, "resident bytes below zero after a compaction")
}

/** Replaces the whole log with a snapshot's position (a follower installing a snapshot). */
export function restore(log: RaftLog, index: LogIndex, term: Term): void {
  assert(index > log.committed, "restoring a snapshot at or below commit")
  log.base = { index, term }
  log.entries = []
  log.stable = index
  log.committed = index
  log.applied = index
  log.residentFrom = index + 1
  log.residentBytes = 0
  log.loaded = null
}

/** Drops the data of the oldest durable entries until at most `bytesMax` bytes of data are held
 * (entries not yet durable stay: nothing could read them back). */
export function evict(log: RaftLog, bytesMax: number): void {
  while (log.residentBytes > bytesMax && log.residentFrom <= log.stable) {
    const at = log.residentFrom - log.base.index - 1
    const slot = log.entries[at]
    assert(slot !== undefined && slot.kind !== "evicted", `resident entry ${log.residentFrom} missing`)
    if (slot.kind === "command") {
      const stub: EvictedEntry = { kind: "evicted", term: slot.term, index: slot.index, sizeBytes: slotSizeBytes(slot) }
      log.entries[at] = stub
      log.residentBytes -= slot.data.byteLength
    }
    log.residentFrom++
  }
}

/** What is wrong with the cache's bookkeeping, or null (O(entries): for tests and simulators). */
export function cacheProblem(log: RaftLog): string | null {
  let bytes = 0
  for (let i = log.base.index + 1; i <= lastIndex(log); i++) {
    const slot = log.entries[i - log.base.index - 1]!
    if (slot.index !== i) return `slot ${i} holds index ${slot.index}`
    if (slot.kind === "evicted" && i >= log.residentFrom) return `entry ${i} evicted at or above residentFrom ${log.residentFrom}`
    if (slot.kind === "evicted" && i > log.stable) return `entry ${i} evicted but not durable (stable ${log.stable})`
    if (i >= log.residentFrom) bytes += dataBytes(slot)
  }
  if (bytes !== log.residentBytes) return `residentBytes ${log.residentBytes}, counted ${bytes}`
  return null
}

/** First index of the run of entries with `term` that ends at or contains `index`. */
export function firstIndexOfTerm(log: RaftLog, index: LogIndex, term: Term): LogIndex {
  let i = index
  while (i - 1 > log.base.index && termAt(log, i - 1) === term) i--
  return i
}

/** Last index holding an entry of `term`, or undefined when the log has none. */
export function lastIndexOfTerm(log: RaftLog, term: Term): LogIndex | undefined {
  for (let i = lastIndex(log); i > log.base.index; i--) {
    const t = termAt(log, i)
    if (t === term) return i
    if (t !== undefined && t < term) return undefined
  }
  return undefined
}
