// What drivers pass around for a snapshot's bytes, so no layer ever holds a whole snapshot: a
// source read in bounded chunks (the snapshot store's file on the sender, the received file on
// the receiver), a sink written in order (a state machine taking a snapshot), and an inbox that
// receives a transfer into a temporary file and can resume it from its offset.
// The Raft core sees only `SnapshotData` (size and checksum): src/raft imports no Effect.
import { Data, Effect } from "effect"
import type { SnapshotData } from "../raft/messages.ts"
import type { Entry, LogIndex, SnapshotMeta } from "../raft/types.ts"

export interface SnapshotSource extends SnapshotData {
  readonly meta: SnapshotMeta
  /** Up to `lengthMax` bytes (never more than the store's chunk bound) from `offset`; empty at
   * the end. Fails (SnapshotMissing) once the snapshot was pruned: the caller gives up and the
   * leader offers a newer one. With `into` (at least `lengthMax` bytes), an implementation may
   * read into it and return a view of it (the caller's to reuse afterwards). */
  readonly read: (offset: number, lengthMax: number, into?: Uint8Array) => Effect.Effect<Uint8Array, unknown>
  /** Keeps the snapshot from being pruned until the returned function is called (a peer link
   * pins what it is sending, so a transfer longer than the time between two snapshots still
   * ends). Absent: nothing to pin. */
  readonly pin?: () => () => void
}

export function isSnapshotSource(data: SnapshotData): data is SnapshotSource {
  return "read" in data && typeof (data as { read?: unknown }).read === "function" && "meta" in data
}

/** The node's log as its state machine may read it while it opens (before Raft runs): to bring
 * files that are older than the boot snapshot up to it from the log, as a restart replays
 * anyway, instead of reading the whole snapshot (issue 17: a restarted leader restored its
 * snapshot, 1–3.9 s at 300 MB, because its main file lags to its last checkpoint). Entries
 * `firstIndex`..`lastIndex` are durable and contiguous; those up to the boot snapshot's index
 * are committed (it was taken at an applied index). */
export interface BootLog {
  readonly firstIndex: LogIndex
  readonly lastIndex: LogIndex
  /** Entries from `lo` on, at most up to `hiMax`: at least one, and a bounded number of bytes
   * (a few MiB, or the one entry at `lo`). */
  readonly readFrom: (lo: LogIndex, hiMax: LogIndex) => Effect.Effect<ReadonlyArray<Entry>, unknown>
}

/** What a node boots its state machine from: its newest snapshot (`load` opens its data, read
 * in chunks, only if needed) and, when the node has one, its log. */
export interface BootSnapshot {
  readonly meta: SnapshotMeta
  readonly load: Effect.Effect<SnapshotSource>
  readonly log?: BootLog
}

/** Where a state machine writes its snapshot, in order, each chunk at most `chunkBytesMax`. */
export interface SnapshotSink {
  readonly chunkBytesMax: number
  readonly write: (chunk: Uint8Array) => Effect.Effect<void, unknown>
}

/** One snapshot being received: its bytes go to a temporary file that survives a restart. */
export interface IncomingSnapshot {
  readonly meta: SnapshotMeta
  readonly sizeBytes: number
  readonly crc32c: number
  /** Data bytes received so far (after a restart: those that were made durable): where the
   * sender continues. */
  readonly offset: Effect.Effect<number>
  /** Writes what of `chunk` (at data offset `offset`) extends the data; ignores what was
   * already received and a chunk past the end (a gap). Returns the offset afterwards. */
  readonly writeAt: (offset: number, chunk: Uint8Array) => Effect.Effect<number, unknown>
  /** Every byte arrived: checks size and checksum, makes the data durable and returns it as a
   * source. It becomes a snapshot of the store only when the Raft actor adopts it. */
  readonly finish: Effect.Effect<SnapshotSource, unknown>
  /** The transfer stopped early: makes what arrived durable, so a later one resumes from it. */
  readonly pause: Effect.Effect<void, unknown>
}

/** A node's receiving end for snapshots (the snapshot store). It keeps one transfer: receiving
 * another snapshot discards the partial one. */
export interface SnapshotInbox {
  readonly receive: (meta: SnapshotMeta, sizeBytes: number, crc32c: number) => Effect.Effect<IncomingSnapshot, unknown>
}

/** A snapshot given up for now without harm (the state moved under it, a leader changed): the
 * Raft actor asks for one again later, as after a full disk. */
export class SnapshotSkipped extends Data.TaggedError("SnapshotSkipped")<{ readonly reason: string }> {}

/** Reads `length` bytes of `source` from `offset` (in chunks; for small parts such as a manifest). */
export const readExactly = (source: SnapshotSource, offset: number, length: number, chunkBytes: number): Effect.Effect<Uint8Array, unknown> =>
  Effect.gen(function*() {
    const out = new Uint8Array(length)
    let done = 0
    while (done < length) {
      const data = yield* source.read(offset + done, Math.min(chunkBytes, length - done))
      if (data.byteLength === 0) return yield* new SnapshotSkipped({ reason: `snapshot ${source.meta.index} ends at ${offset + done}, ${length - done} bytes short` })
      out.set(data, done)
      done += data.byteLength
    }
    return out
  })

/** Releases the event loop (I/O, timers, sockets run) between two chunks of a long copy. */
export const yieldEventLoop: Effect.Effect<void> = Effect.async<void>((resume) => {
  const handle = setImmediate(() => resume(Effect.void))
  return Effect.sync(() => clearImmediate(handle))
})

// --- for state machines small enough to hold their state (tests, the simulator's map) ----------

/** A snapshot taker that writes `bytes` (made when the snapshot is taken) in sink-sized chunks. */
export const snapshotOfBytes = <E>(bytes: Effect.Effect<Uint8Array, E>) => (sink: SnapshotSink): Effect.Effect<void, unknown> =>
  Effect.flatMap(bytes, (data) =>
    Effect.gen(function*() {
      for (let at = 0; at < data.byteLength; at += sink.chunkBytesMax) yield* sink.write(data.subarray(at, at + sink.chunkBytesMax))
    }))

/** All of `source` in one buffer: only for state machines that hold their whole state anyway. */
export const readAllBytes = (source: SnapshotSource, chunkBytes = 1024 * 1024): Effect.Effect<Uint8Array, unknown> =>
  readExactly(source, 0, source.sizeBytes, chunkBytes)

/** Raft I/O for snapshots that never happen (tests with no snapshot store): any use is a defect. */
export const noSnapshotIo = {
  saveSnapshot: () => Effect.void,
  adoptSnapshot: () => Effect.dieMessage("no snapshot store"),
  snapshotSource: () => Effect.dieMessage("no snapshot store")
} as const
