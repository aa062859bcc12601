// Where each live entry's record is in the segment files: the offset index that lets the Raft
// driver read entries the core evicted from memory (LogStore `read`). It follows the log's
// operations exactly as LogState does — append, truncate, compact, install a snapshot — in the
// writer (as records are written) and in replay (as records are read), so after a restart or an
// undone full-disk persist it is rebuilt by the same replay that rebuilds the log's state.
// Parallel number arrays (not an object per entry): ~32 bytes per live entry.
import { assert } from "../assert.ts"
import type { LogIndex } from "../raft/types.ts"

export interface EntryPosition {
  /** Segment number (SegmentLog's file sequence). */
  readonly seq: number
  /** Byte offset of the record's header in that segment. */
  readonly offset: number
  /** Header plus payload. */
  readonly bytes: number
  /** The record's kind (RecordKind: command, config or barrier). */
  readonly kind: number
}

export class EntryPositions {
  /** The index of the first position held; entries below it are compacted or were never read
   * (a replay that started at a later segment: they must end up compacted away). */
  private first: LogIndex
  private seqs: number[] = []
  private offsets: number[] = []
  private sizes: number[] = []
  private kinds: number[] = []

  constructor(nextIndex: LogIndex) {
    this.first = nextIndex
  }

  /** The index the next appended entry must have. */
  get next(): LogIndex {
    return this.first + this.seqs.length
  }

  /** Forgets everything: the log continues at `nextIndex` (a snapshot, or a replay checkpoint). */
  reset(nextIndex: LogIndex): void {
    this.first = nextIndex
    this.seqs = []
    this.offsets = []
    this.sizes = []
    this.kinds = []
  }

  append(index: LogIndex, position: EntryPosition): void {
    assert(index === this.next, `entry position ${index} appended after ${this.next - 1}`)
    this.seqs.push(position.seq)
    this.offsets.push(position.offset)
    this.sizes.push(position.bytes)
    this.kinds.push(position.kind)
  }

  /** Entries >= from are gone. */
  truncate(from: LogIndex): void {
    if (from < this.first) {
      this.reset(from)
      return
    }
    const keep = from - this.first
    if (keep >= this.seqs.length) return
    this.seqs.length = keep
    this.offsets.length = keep
    this.sizes.length = keep
    this.kinds.length = keep
  }

  /** Entries <= base are gone. */
  compact(base: LogIndex): void {
    const drop = Math.min(base + 1 - this.first, this.seqs.length)
    if (drop <= 0) return
    this.seqs.splice(0, drop)
    this.offsets.splice(0, drop)
    this.sizes.splice(0, drop)
    this.kinds.splice(0, drop)
    this.first += drop
  }

  at(index: LogIndex): EntryPosition | undefined {
    const i = index - this.first
    if (i < 0 || i >= this.seqs.length) return undefined
    return { seq: this.seqs[i]!, offset: this.offsets[i]!, bytes: this.sizes[i]!, kind: this.kinds[i]! }
  }
}
