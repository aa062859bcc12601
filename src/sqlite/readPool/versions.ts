// The shared memory through which a leading database's writer (main thread) and its readers
// (worker threads, or the in-thread pool) agree on what a read may see. See README.md "Reads in
// worker threads" for the argument; in short:
// - `walVersion` is a seqlock over the WAL's content: the writer makes it odd right before its
//   local COMMIT and even right after (LeaderDatabase.commitLocally). An even value names the
//   content of the WAL at that moment.
// - `committedVersion` is the walVersion whose content Raft has committed (markCommitted; or the
//   current one when the WAL holds nothing uncommitted). A reader serves a snapshot pinned at v
//   only once committedVersion has reached v.
// - `epoch` changes whenever the WAL is cut or the connections close: a pin of an older epoch
//   names content that may never commit, and its read fails (retryably).
// - `openConnections` counts the worker connections open on the file, so closing can wait for
//   them (a connection left open would keep SQLite's in-process wal-index of a WAL being cut).
// Versions are Int32 that wrap: compare them with `reached`, never with < directly.

const walVersionCell = 0
const committedVersionCell = 1
const epochCell = 2
const openConnectionsCell = 3
const cells = 4

export class ReadVersions {
  readonly cells: Int32Array

  constructor(readonly buffer: SharedArrayBuffer) {
    this.cells = new Int32Array(buffer)
  }

  static create(): ReadVersions {
    return new ReadVersions(new SharedArrayBuffer(cells * Int32Array.BYTES_PER_ELEMENT))
  }

  // ---- writer side (main thread) --------------------------------------------------------------

  /** Right before the writer's local COMMIT: the version turns odd. */
  beginLocalCommit(): void {
    const before = Atomics.add(this.cells, walVersionCell, 1)
    if ((before & 1) !== 0) throw new Error("local commits do not nest")
  }

  /** Right after it (committed or failed): the version turns even again and is returned. */
  endLocalCommit(): number {
    const version = (Atomics.add(this.cells, walVersionCell, 1) + 1) | 0
    Atomics.notify(this.cells, walVersionCell)
    return version
  }

  /** Raft committed the WAL content of `version` (or nothing uncommitted is left in the WAL). */
  markCommitted(version: number): void {
    Atomics.store(this.cells, committedVersionCell, version)
    Atomics.notify(this.cells, committedVersionCell)
  }

  /** Everything in the WAL is committed: the current content is. */
  markAllCommitted(): void {
    this.markCommitted(this.walVersion())
  }

  /** The WAL is about to be cut or the connections to close: every pin taken so far is void. */
  newEpoch(): void {
    Atomics.add(this.cells, epochCell, 1)
    // Wake every reader waiting for a version or a commit: they recheck the epoch.
    Atomics.notify(this.cells, committedVersionCell)
    Atomics.notify(this.cells, walVersionCell)
  }

  // ---- both sides -----------------------------------------------------------------------------

  walVersion(): number {
    return Atomics.load(this.cells, walVersionCell)
  }

  committedVersion(): number {
    return Atomics.load(this.cells, committedVersionCell)
  }

  epoch(): number {
    return Atomics.load(this.cells, epochCell)
  }

  openConnections(): number {
    return Atomics.load(this.cells, openConnectionsCell)
  }

  connectionOpened(): void {
    Atomics.add(this.cells, openConnectionsCell, 1)
  }

  connectionClosed(): void {
    Atomics.sub(this.cells, openConnectionsCell, 1)
    Atomics.notify(this.cells, openConnectionsCell)
  }

  /** Blocks the calling thread until the WAL version differs from `seen` or `timeoutMs` passed. */
  waitWalVersionChange(seen: number, timeoutMs: number): void {
    Atomics.wait(this.cells, walVersionCell, seen, Math.max(0, timeoutMs))
  }

  /** Blocks the calling thread until committedVersion differs from `seen` or `timeoutMs`. */
  waitCommittedChange(seen: number, timeoutMs: number): void {
    Atomics.wait(this.cells, committedVersionCell, seen, Math.max(0, timeoutMs))
  }

  /** Blocks (the main thread, when closing) until no worker connection is open or `timeoutMs`
   * passed; true when none is open. */
  waitConnectionsClosed(timeoutMs: number): boolean {
    const deadline = performance.now() + timeoutMs
    for (;;) {
      const open = this.openConnections()
      if (open <= 0) return true
      const left = deadline - performance.now()
      if (left <= 0) return false
      Atomics.wait(this.cells, openConnectionsCell, open, left)
    }
  }
}

/** True when version `a` is at or past `b` (wrapping Int32 versions). */
export function reached(a: number, b: number): boolean {
  return ((a - b) | 0) >= 0
}
