// The log's durable state as plain data, and the rules for changing it. The in-memory store
// applies persist batches to it; the segment log applies them too (to know terms and where
// segments may be dropped) and rebuilds it at start-up by replaying records. One set of rules,
// so both stores agree on what a batch means.
//
// Every operation returns `null` when it applies, or a sentence saying why it cannot. A caller
// that is persisting turns that into an assertion failure (the Raft driver broke the contract);
// replay turns it into `LogCorrupted` (the records on disk make no sense).
import type { Entry, HardState, LogIndex, SnapshotMeta, Term } from "../raft/types.ts"
import type { Base } from "./format.ts"

export type Problem = string | null

export const initialHardState: HardState = { term: 0, vote: null, commit: 0 }
export const initialBase: Base = { index: 0, term: 0 }

/** One step of a persist batch, in the order a batch applies them. */
export type LogOperation =
  | { readonly _tag: "hardState"; readonly hardState: HardState }
  | { readonly _tag: "snapshot"; readonly meta: SnapshotMeta }
  | { readonly _tag: "truncate"; readonly from: LogIndex }
  | { readonly _tag: "append"; readonly entry: Entry }
  | { readonly _tag: "compact"; readonly base: Base }

export class LogState {
  hardState: HardState = initialHardState
  base: Base = initialBase
  snapshot: SnapshotMeta | null = null
  /** terms[i] is the term of entry base.index + 1 + i. NaN marks an entry known to exist but not
   * read (replay that starts at a later segment: those entries must end up compacted away). */
  private terms: Array<number> = []
  /** The entries themselves, parallel to `terms`, or null when this state keeps terms only. */
  private readonly entries: Array<Entry | undefined> | null

  constructor(options: { readonly keepEntries: boolean }) {
    this.entries = options.keepEntries ? [] : null
  }

  get lastIndex(): LogIndex {
    return this.base.index + this.terms.length
  }

  get lastTerm(): Term {
    return this.terms.length === 0 ? this.base.term : this.terms[this.terms.length - 1]!
  }

  /** The term of the entry at `index` (the base's term at the base), NaN if unknown, undefined
   * if outside [base.index, lastIndex]. */
  termAt(index: LogIndex): Term | undefined {
    if (index === this.base.index) return this.base.term
    if (index < this.base.index || index > this.lastIndex) return undefined
    return this.terms[index - this.base.index - 1]
  }

  /** Entries base.index+1 .. lastIndex; only for a state that keeps entries and has no gaps. */
  liveEntries(): ReadonlyArray<Entry> {
    if (this.entries === null) throw new Error("this log state keeps terms only")
    const live: Array<Entry> = []
    for (let i = 0; i < this.entries.length; i++) {
      const entry = this.entries[i]
      if (entry === undefined) throw new Error(`entry ${this.base.index + 1 + i} was never read`)
      live.push(entry)
    }
    return live
  }

  /** Entries lo..hi (inclusive); only for a state that keeps entries. Undefined when any of them
   * is outside the log or was never read. */
  entriesIn(lo: LogIndex, hi: LogIndex): ReadonlyArray<Entry> | undefined {
    if (this.entries === null) throw new Error("this log state keeps terms only")
    if (lo <= this.base.index || hi > this.lastIndex) return undefined
    const out: Array<Entry> = []
    for (let i = lo; i <= hi; i++) {
      const entry = this.entries[i - this.base.index - 1]
      if (entry === undefined) return undefined
      out.push(entry)
    }
    return out
  }

  /** The first index whose entry is known to exist but was not read, or null. */
  firstUnknown(): LogIndex | null {
    const i = this.terms.findIndex((t) => Number.isNaN(t))
    return i === -1 ? null : this.base.index + 1 + i
  }

  apply(operation: LogOperation): Problem {
    switch (operation._tag) {
      case "hardState":
        return this.setHardState(operation.hardState)
      case "snapshot":
        return this.installSnapshot(operation.meta)
      case "truncate":
        return this.truncate(operation.from)
      case "append":
        return this.append(operation.entry)
      case "compact":
        return this.compact(operation.base)
    }
  }

  /** Whether applying `operation` would change nothing (so no record needs writing). */
  isNoop(operation: LogOperation): boolean {
    switch (operation._tag) {
      case "hardState": {
        const hs = operation.hardState
        return hs.term === this.hardState.term && hs.vote === this.hardState.vote && hs.commit === this.hardState.commit
      }
      case "truncate":
        return operation.from === this.lastIndex + 1
      case "compact":
        return operation.base.index === this.base.index && operation.base.term === this.base.term
      case "snapshot":
      case "append":
        return false
    }
  }

  /** Starts a replay at a segment's checkpoint: the entries up to `lastIndex` exist in earlier
   * segments that are not read. */
  startAt(checkpoint: { readonly hardState: HardState; readonly base: Base; readonly snapshot: SnapshotMeta | null; readonly lastIndex: LogIndex }): void {
    this.hardState = checkpoint.hardState
    this.base = checkpoint.base
    this.snapshot = checkpoint.snapshot
    this.assumeUnread(checkpoint.lastIndex)
  }

  /** The same state without the entries (terms only), for a writer that needs no payloads. */
  termsOnly(): LogState {
    const copy = new LogState({ keepEntries: false })
    copy.hardState = this.hardState
    copy.base = this.base
    copy.snapshot = this.snapshot
    copy.terms = this.terms.slice()
    return copy
  }

  setHardState(next: HardState): Problem {
    const prev = this.hardState
    if (next.term < prev.term) return `term goes back from ${prev.term} to ${next.term}`
    if (next.term === prev.term && prev.vote !== null && next.vote !== prev.vote) {
      return `vote changes from ${prev.vote} to ${next.vote} within term ${next.term}`
    }
    this.hardState = { term: next.term, vote: next.vote, commit: next.commit }
    return null
  }

  /** A snapshot was installed: the whole log is replaced by it. */
  installSnapshot(meta: SnapshotMeta): Problem {
    if (meta.index < this.base.index) {
      return `snapshot at ${meta.index} is older than the log's base ${this.base.index}`
    }
    this.snapshot = meta
    this.base = { index: meta.index, term: meta.term }
    this.terms = []
    if (this.entries !== null) this.entries.length = 0
    return null
  }

  /** Removes entries >= from. */
  truncate(from: LogIndex): Problem {
    if (from <= this.base.index || from > this.lastIndex + 1) {
      return `truncate from ${from} outside (${this.base.index}, ${this.lastIndex + 1}]`
    }
    const keep = from - this.base.index - 1
    this.terms.length = keep
    if (this.entries !== null) this.entries.length = keep
    return null
  }

  append(entry: Entry): Problem {
    if (entry.index !== this.lastIndex + 1) {
      return `entry ${entry.index} does not follow the last index ${this.lastIndex}`
    }
    const lastTerm = this.lastTerm
    if (!Number.isNaN(lastTerm) && entry.term < lastTerm) {
      return `entry ${entry.index} has term ${entry.term} below the previous entry's term ${lastTerm}`
    }
    this.terms.push(entry.term)
    if (this.entries !== null) this.entries.push(entry)
    return null
  }

  private assumeUnread(lastIndex: LogIndex): void {
    const count = lastIndex - this.base.index
    this.terms = count > 0 ? new Array<number>(count).fill(Number.NaN) : []
    if (this.entries !== null) this.entries.length = Math.max(count, 0)
  }

  /** Entries <= base.index are dropped; `base` becomes the log's base. */
  compact(base: Base): Problem {
    if (base.index < this.base.index || base.index > this.lastIndex) {
      return `compact up to ${base.index} outside [${this.base.index}, ${this.lastIndex}]`
    }
    const term = this.termAt(base.index)
    if (term !== undefined && !Number.isNaN(term) && term !== base.term) {
      return `compact up to ${base.index} with term ${base.term}, but that entry has term ${term}`
    }
    const drop = base.index - this.base.index
    this.terms.splice(0, drop)
    if (this.entries !== null) this.entries.splice(0, drop)
    this.base = { index: base.index, term: base.term }
    return null
  }
}
