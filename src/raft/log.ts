// The core's in-memory view of the log, as in C-raft (used by dqlite): every entry since the last
// compaction is held here, so replication never waits on a disk read. `stable` says how much of
// it is durable; only durable entries count for the leader's own match and are applied.
import { assert } from "../assert.ts"
import type { Entry, LogIndex, Term } from "./types.ts"
import { entrySizeBytes } from "./types.ts"

export interface RaftLog {
  /** The last compacted entry (a snapshot covers it and everything before). */
  base: { index: LogIndex; term: Term }
  /** Entries base.index + 1 .. lastIndex, contiguous. */
  entries: Entry[]
  /** Everything up to here is durable on this node. */
  stable: LogIndex
  /** Known committed. Never decreases. */
  committed: LogIndex
  /** Handed to the state machine up to here. Never decreases. */
  applied: LogIndex
}

export function makeLog(base: { index: LogIndex; term: Term }, entries: ReadonlyArray<Entry>, committed: LogIndex): RaftLog {
  entries.forEach((e, i) => assert(e.index === base.index + 1 + i, `log entries contiguous from ${base.index + 1}`))
  const last = base.index + entries.length
  const commit = Math.min(Math.max(committed, base.index), last)
  return { base: { ...base }, entries: [...entries], stable: last, committed: commit, applied: base.index }
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

export function entryAt(log: RaftLog, index: LogIndex): Entry | undefined {
  if (index <= log.base.index) return undefined
  return log.entries[index - log.base.index - 1]
}

export function matchTerm(log: RaftLog, index: LogIndex, term: Term): boolean {
  return termAt(log, index) === term
}

/** Entries lo..hi (inclusive) bounded by count and bytes; always at least one when lo <= hi. */
export function slice(log: RaftLog, lo: LogIndex, hi: LogIndex, countMax: number, bytesMax: number): Entry[] {
  assert(lo > log.base.index, `slice from ${lo} below the compacted base ${log.base.index}`)
  const out: Entry[] = []
  let bytes = 0
  for (let i = lo; i <= hi && out.length < countMax; i++) {
    const entry = entryAt(log, i)
    assert(entry !== undefined, `slice: entry ${i} missing (last ${lastIndex(log)})`)
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
}

/** Drops entries from `index` on (a conflict). Committed entries are never truncated. */
export function truncateFrom(log: RaftLog, index: LogIndex): void {
  assert(index > log.committed, `truncating committed entry ${index} (commit ${log.committed}): was the log corrupted?`)
  assert(index > log.base.index, "truncating below the compacted base")
  log.entries.length = Math.max(0, index - log.base.index - 1)
  log.stable = Math.min(log.stable, index - 1)
}

/** Forgets entries up to `index` (a durable snapshot covers them). */
export function compactTo(log: RaftLog, index: LogIndex): void {
  if (index <= log.base.index) return
  assert(index <= log.applied, `compacting ${index} past applied ${log.applied}`)
  const term = termAt(log, index)
  assert(term !== undefined, `compacting to ${index}: entry missing`)
  log.entries.splice(0, index - log.base.index)
  log.base = { index, term }
}

/** Replaces the whole log with a snapshot's position (a follower installing a snapshot). */
export function restore(log: RaftLog, index: LogIndex, term: Term): void {
  assert(index > log.committed, "restoring a snapshot at or below commit")
  log.base = { index, term }
  log.entries = []
  log.stable = index
  log.committed = index
  log.applied = index
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
