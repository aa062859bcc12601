// The expected failures of durable storage: one tag per thing a caller does differently.
// Broken invariants (a non-contiguous append, a term going backwards) are not here: those are
// `AssertionError`s (src/assert.ts) and take the node down.
import { Data } from "effect"

/** A file-system call failed for a reason other than a full disk. `code` is the errno name
 * (`ENOENT`, `EIO`, …) when there is one. The node should stop: after a failed write or fsync
 * the state of the file is unknown (see "fsyncgate"), so nothing is retried in place. */
export class DiskError extends Data.TaggedError("DiskError")<{
  readonly op: string
  readonly path: string
  readonly code: string | undefined
  readonly cause: unknown
}> {
  constructor(args: { readonly op: string; readonly path: string; readonly code: string | undefined; readonly cause: unknown }) {
    super(args)
    this.message = `${args.op} ${args.path}: ${args.code ?? describe(args.cause)}`
  }
}

/** ENOSPC / EDQUOT: the operator must free space; what was acknowledged before is intact. */
export class DiskFull extends Data.TaggedError("DiskFull")<{
  readonly op: string
  readonly path: string
  readonly cause: unknown
}> {
  constructor(args: { readonly op: string; readonly path: string; readonly cause: unknown }) {
    super(args)
    this.message = `${args.op} ${args.path}: disk full`
  }
}

export type DiskFailure = DiskError | DiskFull

/** A record (or a metadata/segment structure) failed its checksum or does not make sense, in
 * a place where it cannot be a torn write that was never acknowledged. The node refuses to
 * start: silently dropping it could lose acknowledged entries. `offset` is the byte offset in
 * `file` of the record (or structure) that is bad. */
export class LogCorrupted extends Data.TaggedError("LogCorrupted")<{
  readonly file: string
  readonly offset: number
  readonly reason: string
}> {
  constructor(args: { readonly file: string; readonly offset: number; readonly reason: string }) {
    super(args)
    this.message = `log corrupted: ${args.file} at byte ${args.offset}: ${args.reason}`
  }
}

/** The data directory was written by a format this build does not know. */
export class UnknownFormatVersion extends Data.TaggedError("UnknownFormatVersion")<{
  readonly file: string
  readonly version: number
  readonly supported: ReadonlyArray<number>
}> {
  constructor(args: { readonly file: string; readonly version: number; readonly supported: ReadonlyArray<number> }) {
    super(args)
    this.message = `${args.file}: format version ${args.version} is not supported (this build reads ${args.supported.join(", ")})`
  }
}

/** The data directory belongs to another cluster: starting on it would mix two clusters' logs. */
export class ClusterIdMismatch extends Data.TaggedError("ClusterIdMismatch")<{
  readonly file: string
  readonly expected: string
  readonly found: string
}> {
  constructor(args: { readonly file: string; readonly expected: string; readonly found: string }) {
    super(args)
    this.message = `${args.file}: data directory belongs to cluster "${args.found}", this node is configured for "${args.expected}"`
  }
}

/** An earlier `persist` failed half-way, so what is on disk is no longer known to the store.
 * Every later call fails with this until the node restarts and recovers from the disk. */
export class LogStoreBroken extends Data.TaggedError("LogStoreBroken")<{
  readonly cause: unknown
}> {
  constructor(args: { readonly cause: unknown }) {
    super(args)
    this.message = `log store stopped after an earlier failure (restart to recover): ${describe(args.cause)}`
  }
}

/** `LogStore.read` asked for entries the log does not hold (compacted, truncated or never
 * written): the caller's view of the log moved on meanwhile. */
export class EntriesUnavailable extends Data.TaggedError("EntriesUnavailable")<{
  readonly lo: number
  readonly hi: number
  readonly base: number
  readonly last: number
}> {
  constructor(args: { readonly lo: number; readonly hi: number; readonly base: number; readonly last: number }) {
    super(args)
    this.message = `entries ${args.lo}..${args.hi} are not in the log (it holds ${args.base + 1}..${args.last})`
  }
}

/** Everything `LogStore.load` / `persist` / `read` (and opening a store) can fail with. */
export type StorageError = DiskError | DiskFull | LogCorrupted | UnknownFormatVersion | ClusterIdMismatch | LogStoreBroken | EntriesUnavailable

/** No committed snapshot with this index and term exists (pruned, or never written). */
export class SnapshotMissing extends Data.TaggedError("SnapshotMissing")<{
  readonly index: number
  readonly term: number
}> {
  constructor(args: { readonly index: number; readonly term: number }) {
    super(args)
    this.message = `no snapshot at index ${args.index} term ${args.term}`
  }
}

/** A committed snapshot file fails its checksums or framing. */
export class SnapshotCorrupted extends Data.TaggedError("SnapshotCorrupted")<{
  readonly file: string
  readonly offset: number
  readonly reason: string
}> {
  constructor(args: { readonly file: string; readonly offset: number; readonly reason: string }) {
    super(args)
    this.message = `snapshot corrupted: ${args.file} at byte ${args.offset}: ${args.reason}`
  }
}

export type SnapshotError = DiskError | DiskFull | SnapshotMissing | SnapshotCorrupted

function describe(cause: unknown): string {
  if (cause instanceof Error) return cause.message
  return String(cause)
}
