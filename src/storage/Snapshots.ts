// The snapshot store: the state machine's data at an applied index, plus its metadata, in one
// file per snapshot. Written under a temporary name, fdatasynced, renamed, directory fsynced;
// older snapshots pruned to a bound. Read and written in chunks with offsets, which is what a
// resumable InstallSnapshot transfer needs.
//
// Receiving a snapshot from the leader (`receive`, resumable): the data goes to
// `incoming-<index>-<term>.part` (the same layout without the trailer) beside `incoming.manifest`
// (what is expected, and how much of the file is durable). Both survive a restart, so a transfer
// broken by a lost connection or a crash resumes from the durable offset; receiving any other
// snapshot discards them. `adopt` turns the complete file into a snapshot of the store (trailer,
// fdatasync, rename, directory fsync) — the Raft actor does that before it persists the log
// batch that installs the snapshot. One incoming transfer per store bounds the disk it takes.
//
// Pruning keeps the newest `retain` snapshots, and any older one a peer link is still sending
// (`source(meta).pin`), so a transfer that outlasts the next snapshot still ends.
//
// File `snapshot-<index>-<term>.snap` (both zero-padded to 20 digits):
//
//   header   0  8 magic "TQLSNAP\n"
//            8  4 version (1)
//           12  4 metaBytes
//           16  … meta      msgpackr { index, term, config }
//       16 + m  4 crc32c    of header bytes [0, 16 + m)
//   data        … the state machine's bytes
//   trailer  0  8 magic "TQLSEND\n"
//            8  8 dataBytes
//           16  4 crc32c of the data
//           20  4 crc32c of trailer bytes [0, 20)
import * as path from "node:path"
import { crc32c } from "@node-rs/crc32"
import { Context, Effect, Fiber, Layer, Option, Queue, Stream } from "effect"
import type { Scope } from "effect"
import { Packr } from "msgpackr"
import { assert } from "../assert.ts"
import { traceDuration } from "../runtime/trace.ts"
import { yieldToLoop } from "../runtime/yieldToLoop.ts"
import type { SnapshotMeta } from "../raft/types.ts"
import type { DiskFile, DiskService } from "./Disk.ts"
import { Disk, ensureDir, readOffLoop, unlinkIfExists, unlinkOffLoop, withFile, writeFileAtomic, writeOffLoop } from "./Disk.ts"
import { SnapshotCorrupted, SnapshotMissing } from "./errors.ts"
import { WriteBehind } from "./writeBehind.ts"
import type { Leftovers } from "./leftovers.ts"
import { leftoversOf } from "./leftovers.ts"
import type { DiskFailure, SnapshotError } from "./errors.ts"
import type { IncomingSnapshot, SnapshotInbox, SnapshotSink, SnapshotSource } from "../actors/snapshotData.ts"
import { SnapshotSkipped } from "../actors/snapshotData.ts"
import { decodeMembership, encodeMembership } from "./format.ts"

export interface SnapshotsOptions {
  readonly dir: string
  /** Committed snapshots kept; older ones are deleted after each commit. Default 2. */
  readonly retain?: number
  /** The largest chunk `read` returns and `write` accepts. Default 1 MiB. */
  readonly chunkBytesMax?: number
  /** A snapshot being received is fdatasynced, and its manifest rewritten, each time this many
   * more bytes arrived: what a restart of the receiver can lose of a transfer. Default 64 MiB
   * (each step costs four fsyncs: bench snapshot-transfer gave 48–51 MB/s at 16 MiB and 102 MB/s at
   * 64 MiB on the loaded dev VM; noisy). */
  readonly incomingSyncBytes?: number
  /** A snapshot being taken (`create`) is fdatasynced in the background each time this many more
   * bytes were written, one sync at a time: the writer waits for the previous one before it
   * starts the next, so at most about twice this many of its bytes are dirty in the page cache.
   * Default `snapshotTakeSyncBytes`. */
  readonly takeSyncBytes?: number
}

export const snapshotRetainDefault = 2
export const snapshotChunkBytesMaxDefault = 1024 * 1024
export const incomingSyncBytesDefault = 64 * 1024 * 1024
/** Bytes of a snapshot being taken between background fdatasyncs (one at a time, so at most ~2×
 * this is dirty). Issue 17: with one fdatasync at the end, three nodes each put their whole 0.5–1
 * GiB snapshot into the page cache at once, and that final sync's writeback sat in front of every
 * log fdatasync on the device. Bounded, the writer goes at the disk's pace and a log sync waits
 * behind at most this much of each snapshot. Measured on the dev VM (scratch probe: three writers
 * of 512 MiB in 1 MiB writes, one 200-byte append + fdatasync every 5 ms beside them, two runs
 * each): sync only at the end, the probe's longest 724 · 1,048 ms; every 32 MiB 92 · 120 ms;
 * every 8 MiB 61 · 28 ms; the writers' throughput the same (850–1,060 MiB/s). A 1 GiB snapshot
 * pays 128 fdatasyncs of 8 MiB. */
export const snapshotTakeSyncBytes = 8 * 1024 * 1024

/** Receives one snapshot's data. Nothing is visible to `latest`/`open` until `commit`; closing the
 * scope without committing deletes the temporary file. */
export interface SnapshotWriter {
  readonly meta: SnapshotMeta
  /** Data bytes received so far: where the next chunk goes. */
  readonly bytesWritten: Effect.Effect<number>
  /** Appends `chunk` (≤ chunkBytesMax bytes). */
  readonly write: (chunk: Uint8Array) => Effect.Effect<void, SnapshotError>
  /** For a transfer that may repeat or skip chunks: writes what of `chunk` (which starts at data
   * offset `offset`) extends the data, ignores what was already received, writes nothing when
   * `offset` is past the end (a gap); returns `bytesWritten` afterwards, which the sender resumes
   * from. */
  readonly writeAt: (offset: number, chunk: Uint8Array) => Effect.Effect<number, SnapshotError>
  /** Makes the snapshot durable and visible, then prunes old ones. With `expected`, first checks
   * the data against the sender's size and checksum (SnapshotCorrupted if they differ). */
  readonly commit: (expected?: { readonly sizeBytes: number; readonly crc32c: number }) => Effect.Effect<void, SnapshotError>
}

export interface SnapshotReader {
  readonly meta: SnapshotMeta
  readonly sizeBytes: number
  /** CRC32C of the whole data, as recorded when it was written. */
  readonly crc32c: number
  /** Up to min(lengthMax, chunkBytesMax) data bytes from `offset` (empty at the end). */
  readonly read: (offset: number, lengthMax?: number) => Effect.Effect<Uint8Array, SnapshotError>
  /** The data from `fromOffset` on, in chunks of at most chunkBytesMax. */
  readonly chunks: (fromOffset?: number) => Stream.Stream<{ readonly offset: number; readonly data: Uint8Array }, SnapshotError>
  /** Reads all the data and checks it against the recorded checksum. */
  readonly verify: Effect.Effect<void, SnapshotError>
}

export interface SnapshotsService {
  readonly chunkBytesMax: number
  /** Starts writing snapshot `meta`. SnapshotSkipped while the store holds more than `retain`
   * snapshots (one pinned by a transfer): see the disk-use rule in `create`. */
  readonly create: (meta: SnapshotMeta) => Effect.Effect<SnapshotWriter, SnapshotError | SnapshotSkipped, Scope.Scope>
  /** The newest committed snapshot (its header and trailer checked), or null. */
  readonly latest: Effect.Effect<SnapshotMeta | null, SnapshotError>
  /** Committed snapshots, oldest first (by index, then term), from their file names. */
  readonly list: Effect.Effect<ReadonlyArray<{ readonly index: number; readonly term: number }>, SnapshotError>
  readonly open: (meta: { readonly index: number; readonly term: number }) => Effect.Effect<SnapshotReader, SnapshotError, Scope.Scope>
  /** A committed snapshot as a chunked source that holds no file open between reads (a peer
   * link sends from it for as long as a transfer takes; a pruned file fails the next read). */
  readonly source: (meta: SnapshotMeta) => Effect.Effect<SnapshotSource, SnapshotError>
  /** Receives a snapshot from the leader, resuming a partial one of the same snapshot. */
  readonly inbox: SnapshotInbox
  /** Makes the received snapshot `meta` (complete: `finish` returned) a committed snapshot of
   * the store. Already committed: nothing to do. */
  readonly adopt: (meta: SnapshotMeta) => Effect.Effect<void, SnapshotError>
  /** Unlinks, on the thread pool, what the open found left by an interrupted run (a snapshot
   * half taken or half received) and set aside: the node runs it once it serves (leftovers.ts). */
  readonly removeLeftovers: Effect.Effect<void, DiskFailure>
}

export class Snapshots extends Context.Tag("tqlite/storage/Snapshots")<Snapshots, SnapshotsService>() {
  static layer(options: SnapshotsOptions): Layer.Layer<Snapshots, SnapshotError, Disk> {
    return Layer.scoped(Snapshots, makeSnapshots(options))
  }
}

/** Writes the snapshot `meta` from `produce`, which streams the data into the sink in order; a
 * failure leaves no snapshot (the temporary file goes with the scope). */
export const writeSnapshotFrom = <E>(
  snapshots: SnapshotsService,
  meta: SnapshotMeta,
  produce: (sink: SnapshotSink) => Effect.Effect<void, E>
): Effect.Effect<void, SnapshotError | SnapshotSkipped | E> =>
  Effect.scoped(
    Effect.gen(function*() {
      const writer = yield* snapshots.create(meta)
      const chunkBytesMax = snapshots.chunkBytesMax
      yield* produce({
        chunkBytesMax,
        write: (chunk) =>
          Effect.gen(function*() {
            for (let at = 0; at < chunk.byteLength; at += chunkBytesMax) yield* writer.write(chunk.subarray(at, at + chunkBytesMax))
          })
      })
      yield* writer.commit()
    })
  )

/** One committed snapshot file opened read-only, outside any store: for offline tools (`tqlite
 * repair`) that must leave the directory as it is (a store removes leftover temporary files).
 * Null when `filePath` is not named like a snapshot. */
export const openSnapshotFile = (
  filePath: string,
  chunkBytesMax = snapshotChunkBytesMaxDefault
): Effect.Effect<SnapshotReader | null, SnapshotError, Disk | Scope.Scope> =>
  Effect.gen(function*() {
    const wanted = parseSnapshotFileName(path.basename(filePath))
    if (wanted === null) return null
    const disk = yield* Disk
    const handle = yield* Effect.acquireRelease(disk.open(filePath, "read"), (h) => Effect.ignore(h.close))
    return yield* makeReader(handle, wanted, chunkBytesMax)
  })

// --- format ------------------------------------------------------------------------------------

const headerMagic = new TextEncoder().encode("TQLSNAP\n")
const trailerMagic = new TextEncoder().encode("TQLSEND\n")
const snapshotFormatVersion = 1
const trailerBytes = 24
const metaBytesMax = 16 * 1024 * 1024
const packr = new Packr({ useRecords: false, mapsAsObjects: true })
const namePattern = /^snapshot-(\d{20})-(\d{20})\.snap$/

export function snapshotFileName(index: number, term: number): string {
  return `snapshot-${String(index).padStart(20, "0")}-${String(term).padStart(20, "0")}.snap`
}

function parseSnapshotFileName(name: string): { readonly index: number; readonly term: number } | null {
  const match = namePattern.exec(name)
  return match === null ? null : { index: Number(match[1]), term: Number(match[2]) }
}

function encodeHeader(meta: SnapshotMeta): Uint8Array {
  const metaBytes = packr.pack({ index: meta.index, term: meta.term, config: encodeMembership(meta.config) }) as Uint8Array
  const buffer = new Uint8Array(16 + metaBytes.byteLength + 4)
  const view = new DataView(buffer.buffer)
  buffer.set(headerMagic, 0)
  view.setUint32(8, snapshotFormatVersion, true)
  view.setUint32(12, metaBytes.byteLength, true)
  buffer.set(metaBytes, 16)
  view.setUint32(16 + metaBytes.byteLength, crc32c(buffer.subarray(0, 16 + metaBytes.byteLength)), true)
  return buffer
}

function encodeTrailer(dataBytes: number, dataCrc: number): Uint8Array {
  const buffer = new Uint8Array(trailerBytes)
  const view = new DataView(buffer.buffer)
  buffer.set(trailerMagic, 0)
  view.setUint32(8, dataBytes >>> 0, true)
  view.setUint32(12, Math.floor(dataBytes / 0x1_0000_0000), true)
  view.setUint32(16, dataCrc, true)
  view.setUint32(20, crc32c(buffer.subarray(0, 20)), true)
  return buffer
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.byteLength === b.byteLength && a.every((x, i) => x === b[i])
}

// --- the store ---------------------------------------------------------------------------------

function makeSnapshots(options: SnapshotsOptions): Effect.Effect<SnapshotsService, SnapshotError, Disk | Scope.Scope> {
  return Effect.gen(function* () {
    const disk = yield* Disk
    const dir = options.dir
    const retain = options.retain ?? snapshotRetainDefault
    const chunkBytesMax = options.chunkBytesMax ?? snapshotChunkBytesMaxDefault
    assert(retain >= 1, "keep at least one snapshot")
    assert(chunkBytesMax >= 1, "chunkBytesMax must be positive")
    yield* ensureDir(disk, dir)
    // What an interrupted run left (a snapshot half taken: up to the databases' size) is only
    // renamed now; `removeLeftovers` unlinks it once the node serves (leftovers.ts).
    const names = yield* disk.list(dir)
    const leftovers = leftoversOf(disk, dir, names)
    for (const name of names) {
      if (name.endsWith(".tmp")) yield* leftovers.discard(name)
    }
    // Snapshots past `retain` (one a peer link was still sending when the node stopped): no
    // transfer holds them now, and the disk holds one copy of the databases, not two.
    const committed = names.map(parseSnapshotFileName).filter((found) => found !== null).sort((a, b) => a.index - b.index || a.term - b.term)
    for (const old of committed.slice(0, Math.max(0, committed.length - retain))) yield* leftovers.discard(snapshotFileName(old.index, old.term))
    let tmpCounter = 0
    const incomingSyncBytes = options.incomingSyncBytes ?? incomingSyncBytesDefault
    assert(incomingSyncBytes >= chunkBytesMax, "incomingSyncBytes >= chunkBytesMax")
    const takeSyncBytes = options.takeSyncBytes ?? snapshotTakeSyncBytes
    assert(takeSyncBytes >= chunkBytesMax, "takeSyncBytes >= chunkBytesMax")

    const list = Effect.map(disk.list(dir), (names) => {
      const found: Array<{ index: number; term: number }> = []
      for (const name of names) {
        const parsed = parseSnapshotFileName(name)
        if (parsed !== null) found.push(parsed)
      }
      return found.sort((a, b) => a.index - b.index || a.term - b.term)
    })

    const open = (wanted: { readonly index: number; readonly term: number }) =>
      Effect.gen(function* () {
        const file = path.join(dir, snapshotFileName(wanted.index, wanted.term))
        if (!(yield* disk.exists(file))) return yield* new SnapshotMissing({ index: wanted.index, term: wanted.term })
        const handle = yield* Effect.acquireRelease(disk.open(file, "read"), (h) => Effect.ignore(h.close))
        return yield* makeReader(handle, wanted, chunkBytesMax)
      })

    const latest = Effect.gen(function* () {
      const all = yield* list
      const newest = all[all.length - 1]
      if (newest === undefined) return null
      return yield* Effect.scoped(Effect.map(open(newest), (reader) => reader.meta))
    })

    /** Snapshots a peer link is sending: kept past `retain` until it is done. */
    const pins = new Map<string, number>()
    /** Being unlinked now: a commit's prune and the background one never unlink the same file. */
    const pruning = new Set<string>()
    const prune = Effect.gen(function* () {
      const all = yield* list
      for (const old of all.slice(0, Math.max(0, all.length - retain))) {
        const name = snapshotFileName(old.index, old.term)
        if ((pins.get(name) ?? 0) > 0 || pruning.has(name)) continue
        pruning.add(name)
        // Off the loop: freeing a GiB of blocks takes the unlink ~0.45 s here.
        yield* Effect.ensuring(unlinkOffLoop(disk, path.join(dir, name)), Effect.sync(() => pruning.delete(name)))
      }
    })
    // A snapshot kept past `retain` only for a transfer goes when that transfer ends, not at the
    // next snapshot's commit (minutes later, or never on an idle cluster: issue 17 found a
    // leader holding two 2 GiB snapshots after a join). Pruned by a fiber of the store's scope,
    // woken by the release (a sliding queue of one coalesces the wake-ups).
    const pruneWake = yield* Queue.sliding<void>(1)
    yield* Queue.take(pruneWake).pipe(
      Effect.zipRight(prune),
      Effect.catchAll((error) => Effect.logWarning(`snapshots: could not prune a snapshot after its transfer ended (tried again at the next snapshot): ${String(error)}`)),
      Effect.forever,
      Effect.forkScoped
    )
    const pin = (meta: SnapshotMeta) => () => {
      const name = snapshotFileName(meta.index, meta.term)
      pins.set(name, (pins.get(name) ?? 0) + 1)
      let released = false
      return () => {
        if (released) return
        released = true
        const left = (pins.get(name) ?? 1) - 1
        if (left > 0) pins.set(name, left)
        else {
          pins.delete(name)
          Queue.unsafeOffer(pruneWake, undefined)
        }
      }
    }

    const create = (meta: SnapshotMeta) =>
      Effect.gen(function* () {
        // Disk use (issue 17: ≤ 2× the databases plus the log): a snapshot is written beside the
        // newest one, never beside a second one a transfer still holds (a third copy of the
        // databases). Skipped until the transfer ends; the Raft actor asks again later, and the
        // log keeps what the snapshot would have compacted meanwhile.
        const held = (yield* list).filter((found) => !pruning.has(snapshotFileName(found.index, found.term)))
        if (held.length > retain) {
          return yield* new SnapshotSkipped({ reason: `the store holds ${held.length} snapshots, ${held.length - retain} of them kept only for a transfer still under way: the next waits until it ends` })
        }
        const finalPath = path.join(dir, snapshotFileName(meta.index, meta.term))
        const tmpPath = `${finalPath}.${tmpCounter++}.tmp`
        const header = encodeHeader(meta)
        let committed = false
        // A background sync still running when the scope closes (an abandoned snapshot) ends
        // before its descriptor is closed.
        let settle: Effect.Effect<void> = Effect.void
        const handle = yield* Effect.acquireRelease(disk.open(tmpPath, "write"), (h) =>
          Effect.ignore(Effect.zipRight(Effect.suspend(() => settle), Effect.zipRight(h.close, committed ? Effect.void : disk.unlink(tmpPath)))))
        yield* handle.truncate(0)
        yield* handle.write(0, header)
        const writer = makeWriter({ disk, dir, meta, handle, header, tmpPath, finalPath, chunkBytesMax, syncBytes: takeSyncBytes, prune, onCommit: () => (committed = true) })
        settle = writer.settle
        return writer.writer
      })

    const source = (meta: SnapshotMeta) =>
      Effect.gen(function*() {
        const { sizeBytes, crc32c: dataCrc } = yield* Effect.scoped(open(meta))
        const file = path.join(dir, snapshotFileName(meta.index, meta.term))
        return { ...sourceOfFile(disk, file, meta, sizeBytes, dataCrc, chunkBytesMax, () => new SnapshotMissing({ index: meta.index, term: meta.term })), pin: pin(meta) }
      })

    const incoming = makeIncoming({ disk, dir, chunkBytesMax, syncBytes: incomingSyncBytes, prune })
    yield* incoming.recover(leftovers)

    return { chunkBytesMax, create, latest, list, open, source, inbox: { receive: incoming.receive }, adopt: incoming.adopt, removeLeftovers: leftovers.remove }
  })
}

/** Reads `file`'s data (after its header) per call: no descriptor is held between reads. */
function sourceOfFile(
  disk: DiskService,
  file: string,
  meta: SnapshotMeta,
  sizeBytes: number,
  dataCrc: number,
  chunkBytesMax: number,
  missing: () => SnapshotError
): SnapshotSource {
  const dataStart = encodeHeader(meta).byteLength
  return {
    meta,
    sizeBytes,
    crc32c: dataCrc,
    read: (offset, lengthMax, into) =>
      Effect.gen(function*() {
        assert(offset >= 0 && offset <= sizeBytes, `read offset ${offset} outside [0, ${sizeBytes}]`)
        const length = Math.min(lengthMax, chunkBytesMax, sizeBytes - offset)
        if (length === 0) return new Uint8Array(0)
        if (!(yield* disk.exists(file))) return yield* missing()
        const data = yield* withFile(disk, file, "read", (handle) => readOffLoop(handle, dataStart + offset, length, into))
        if (data.byteLength !== length) return yield* new SnapshotCorrupted({ file, offset: dataStart + offset, reason: `read ${data.byteLength} of ${length} bytes` })
        return data
      })
  }
}

// --- receiving ---------------------------------------------------------------------------------

const incomingManifestName = "incoming.manifest"
const incomingPattern = /^incoming-(\d{20})-(\d{20})\.part$/

function incomingFileName(index: number, term: number): string {
  return `incoming-${String(index).padStart(20, "0")}-${String(term).padStart(20, "0")}.part`
}

/** The transfer a store is receiving: its file, what was written, what is durable. */
interface Incoming {
  readonly manifest: IncomingManifest
  readonly handle: DiskFile
  /** The received bytes' writes, which the receive loop does not wait for: flushed before each
   * fdatasync and before the handle closes. */
  readonly writes: WriteBehind
  /** Data bytes received: handed to `writes` (on the disk once it is flushed). */
  written: number
  crc: number
  /** Data bytes fdatasynced and recorded in the manifest. */
  syncedBytes: number
  /** Data bytes covered by the latest sync started (durable once `syncing` ends). */
  syncStartedBytes: number
  syncing: Fiber.RuntimeFiber<void, DiskFailure> | null
  done: boolean
}

/** What `incoming.manifest` records: the snapshot expected and how much of it is durable. */
interface IncomingManifest {
  readonly index: number
  readonly term: number
  readonly config: Uint8Array
  readonly sizeBytes: number
  readonly crc32c: number
  /** Data bytes fdatasynced, and the CRC32C of those bytes (to continue the checksum). */
  readonly syncedBytes: number
  readonly syncedCrc: number
}

function encodeManifest(m: IncomingManifest): Uint8Array {
  const body = packr.pack(m) as Uint8Array
  const out = new Uint8Array(body.byteLength + 4)
  out.set(body, 0)
  new DataView(out.buffer).setUint32(body.byteLength, crc32c(body), true)
  return out
}

function decodeManifest(bytes: Uint8Array): IncomingManifest | null {
  if (bytes.byteLength < 5) return null
  const body = bytes.subarray(0, bytes.byteLength - 4)
  if (new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(body.byteLength, true) !== crc32c(body)) return null
  try {
    const v = packr.unpack(body) as Record<string, unknown>
    const numbers = ["index", "term", "sizeBytes", "crc32c", "syncedBytes", "syncedCrc"] as const
    if (!numbers.every((k) => typeof v[k] === "number") || !(v["config"] instanceof Uint8Array)) return null
    return v as unknown as IncomingManifest
  } catch {
    return null
  }
}

function makeIncoming(args: {
  readonly disk: DiskService
  readonly dir: string
  readonly chunkBytesMax: number
  readonly syncBytes: number
  readonly prune: Effect.Effect<void, DiskFailure>
}) {
  const { disk, dir, chunkBytesMax, syncBytes } = args
  const manifestPath = path.join(dir, incomingManifestName)
  /** The transfer being received now (one per store). */
  let current: Incoming | null = null
  /** The last transfer finished here, until adopted. */
  let finished: { readonly meta: SnapshotMeta; readonly sizeBytes: number; readonly crc32c: number } | null = null

  const partPath = (m: { readonly index: number; readonly term: number }) => path.join(dir, incomingFileName(m.index, m.term))

  /** Deletes every incoming file but `keep`, and the manifest when nothing is kept. */
  const discardAll = (keep: string | null) =>
    Effect.gen(function*() {
      for (const name of yield* disk.list(dir)) {
        if (incomingPattern.test(name) && name !== keep) yield* disk.unlink(path.join(dir, name))
      }
      if (keep === null) yield* unlinkIfExists(disk, manifestPath)
    })

  const closeCurrent = Effect.suspend(() => {
    const c = current
    current = null
    // Writes and a sync still running on the handle end first (their failure no longer matters here).
    return c === null ? Effect.void : Effect.zipRight(Effect.ignore(Effect.zipRight(c.writes.flush, awaitSync(c))), Effect.ignore(c.handle.close))
  })

  /** At start: a partial file without a readable manifest naming it is garbage, set aside in
   * `leftovers` (it may be GiBs: unlinked once the node serves). */
  const recover = (leftovers: Leftovers) =>
    Effect.gen(function*() {
      const manifest = (yield* disk.exists(manifestPath)) ? decodeManifest(yield* disk.readFile(manifestPath)) : null
      const named = manifest === null ? null : incomingFileName(manifest.index, manifest.term)
      const keep = named !== null && (yield* disk.exists(path.join(dir, named))) ? named : null
      for (const name of yield* disk.list(dir)) {
        if (incomingPattern.test(name) && name !== keep) yield* leftovers.discard(name)
      }
      if (keep === null) yield* unlinkIfExists(disk, manifestPath)
    })

  const writeManifest = (m: IncomingManifest) => writeFileAtomic(disk, manifestPath, encodeManifest(m))

  /** Waits for the background sync in flight, if any (its failure is the caller's). */
  const awaitSync = (c: Incoming): Effect.Effect<void, DiskFailure> =>
    Effect.suspend(() => {
      const syncing = c.syncing
      if (syncing === null) return Effect.void
      c.syncing = null
      return Fiber.join(syncing)
    })

  /** Makes the bytes written up to now durable and records them in the manifest. */
  const syncUpTo = (c: Incoming, upTo: number, crc: number): Effect.Effect<void, DiskFailure> =>
    Effect.gen(function*() {
      // The writes of the bytes up to `upTo` were all issued before this: they end first.
      yield* c.writes.flush
      yield* c.handle.sync
      yield* writeManifest({ ...c.manifest, syncedBytes: upTo, syncedCrc: crc })
      c.syncedBytes = upTo
    })

  /** Makes the bytes written so far durable and records them. */
  const syncNow = (c: Incoming) =>
    Effect.gen(function*() {
      yield* awaitSync(c)
      if (c.syncedBytes === c.written) return
      c.syncStartedBytes = c.written
      yield* syncUpTo(c, c.written, c.crc)
    })

  /** Starts making the bytes written so far durable while the transfer goes on writing: waiting
   * for each fdatasync of `syncBytes` stopped the receive (0.2 s per 64 MiB on the dev VM, a
   * third of a 1 GiB join). One sync at a time: the next waits for this one, so at most two
   * `syncBytes` of a transfer are not durable. */
  const syncInBackground = (c: Incoming) =>
    Effect.gen(function*() {
      yield* awaitSync(c)
      c.syncStartedBytes = c.written
      c.syncing = yield* Effect.forkDaemon(syncUpTo(c, c.written, c.crc))
    })

  const receive = (meta: SnapshotMeta, sizeBytes: number, dataCrc: number): Effect.Effect<IncomingSnapshot, SnapshotError> =>
    Effect.gen(function*() {
      assert(Number.isSafeInteger(sizeBytes) && sizeBytes >= 0, `snapshot size ${sizeBytes}`)
      const same = (m: IncomingManifest) => m.index === meta.index && m.term === meta.term && m.sizeBytes === sizeBytes && m.crc32c === dataCrc
      let resumed: IncomingManifest | null = null
      if (current !== null && same(current.manifest)) {
        resumed = { ...current.manifest, syncedBytes: current.syncedBytes, syncedCrc: current.crc }
        // Still open from the broken connection: what it wrote and did not sync stays usable.
        if (current.syncedBytes !== current.written) yield* syncNow(current)
        resumed = { ...current.manifest, syncedBytes: current.syncedBytes, syncedCrc: current.crc }
      }
      yield* closeCurrent
      if (resumed === null && (yield* disk.exists(manifestPath))) {
        const onDisk = decodeManifest(yield* disk.readFile(manifestPath))
        if (onDisk !== null && same(onDisk) && (yield* disk.exists(partPath(onDisk)))) resumed = onDisk
      }
      const file = partPath(meta)
      const header = encodeHeader(meta)
      if (resumed === null) {
        // A snapshot received whole and not adopted yet stays: the Raft actor may be about to.
        const keep = finished !== null && (finished.meta.index !== meta.index || finished.meta.term !== meta.term) ? incomingFileName(finished.meta.index, finished.meta.term) : null
        yield* discardAll(keep)
        if (keep !== null) yield* unlinkIfExists(disk, manifestPath)
        const manifest: IncomingManifest = { index: meta.index, term: meta.term, config: encodeMembership(meta.config), sizeBytes, crc32c: dataCrc, syncedBytes: 0, syncedCrc: 0 }
        const handle = yield* disk.open(file, "write")
        yield* handle.truncate(0)
        yield* handle.write(0, header)
        yield* handle.sync
        yield* disk.fsyncDir(dir)
        yield* writeManifest(manifest)
        current = { manifest, handle, writes: new WriteBehind(chunkBytesMax), written: 0, crc: 0, syncedBytes: 0, syncStartedBytes: 0, syncing: null, done: false }
      } else {
        const handle = yield* disk.open(file, "write")
        // Bytes past the durable offset may be torn: they are received again.
        yield* handle.truncate(header.byteLength + resumed.syncedBytes)
        current = { manifest: resumed, handle, writes: new WriteBehind(chunkBytesMax), written: resumed.syncedBytes, crc: resumed.syncedCrc, syncedBytes: resumed.syncedBytes, syncStartedBytes: resumed.syncedBytes, syncing: null, done: false }
      }
      const mine = current!
      const live = () => {
        assert(current === mine, "a snapshot transfer used after another one started")
        return mine
      }

      const writeAt = (offset: number, chunk: Uint8Array): Effect.Effect<number, SnapshotError> =>
        Effect.gen(function*() {
          const c = live()
          assert(offset >= 0, `chunk at ${offset}`)
          if (offset > c.written || offset + chunk.byteLength <= c.written) return c.written
          // Any chunk size the sender chose is written in pieces of at most chunkBytesMax.
          const fresh = chunk.subarray(c.written - offset, Math.min(chunk.byteLength, sizeBytes - offset))
          for (let at = 0; at < fresh.byteLength; at += chunkBytesMax) {
            const piece = fresh.subarray(at, at + chunkBytesMax)
            yield* c.writes.write(c.handle, header.byteLength + c.written, piece)
            c.written += piece.byteLength
            c.crc = crc32c(piece, c.crc)
            if (c.written - c.syncStartedBytes >= syncBytes) yield* syncInBackground(c)
          }
          return c.written
        })

      const finish: Effect.Effect<SnapshotSource, SnapshotError> = Effect.gen(function*() {
        const c = live()
        if (c.written !== sizeBytes || c.crc !== dataCrc) {
          // A bad transfer: nothing of it is worth resuming.
          yield* closeCurrent
          yield* discardAll(null)
          return yield* new SnapshotCorrupted({ file, offset: header.byteLength, reason: `received ${c.written} bytes with crc ${c.crc}, the sender has ${sizeBytes} bytes with crc ${dataCrc}` })
        }
        yield* syncNow(c)
        c.done = true
        finished = { meta, sizeBytes, crc32c: dataCrc }
        return sourceOfFile(disk, file, meta, sizeBytes, dataCrc, chunkBytesMax, () => new SnapshotMissing({ index: meta.index, term: meta.term }))
      })

      const pause = Effect.suspend(() => (current === mine ? Effect.zipRight(syncNow(mine), closeCurrent) : Effect.void))

      return { meta, sizeBytes, crc32c: dataCrc, offset: Effect.sync(() => mine.written), writeAt, finish, pause }
    })

  const adopt = (meta: SnapshotMeta): Effect.Effect<void, SnapshotError> =>
    Effect.gen(function*() {
      const finalPath = path.join(dir, snapshotFileName(meta.index, meta.term))
      const file = partPath(meta)
      if (!(yield* disk.exists(file))) {
        if (yield* disk.exists(finalPath)) return
        return yield* new SnapshotMissing({ index: meta.index, term: meta.term })
      }
      const done = finished
      assert(done !== null && done.meta.index === meta.index && done.meta.term === meta.term, `snapshot ${meta.index}/${meta.term} adopted before it was received whole`)
      if (current !== null && current.manifest.index === meta.index && current.manifest.term === meta.term) yield* closeCurrent
      const header = encodeHeader(meta)
      yield* withFile(disk, file, "write", (handle) =>
        Effect.gen(function*() {
          yield* handle.truncate(header.byteLength + done.sizeBytes)
          yield* handle.write(header.byteLength + done.sizeBytes, encodeTrailer(done.sizeBytes, done.crc32c))
          yield* handle.sync
        }))
      // The rename is the switch: before it the store has the old snapshots only, after it the new one.
      yield* disk.rename(file, finalPath)
      yield* disk.fsyncDir(dir)
      finished = null
      // The manifest describes the transfer in progress, which may be a newer one by now.
      const manifest = (yield* disk.exists(manifestPath)) ? decodeManifest(yield* disk.readFile(manifestPath)) : null
      if (manifest !== null && manifest.index === meta.index && manifest.term === meta.term) yield* disk.unlink(manifestPath)
      yield* args.prune
    })

  return { recover, receive, adopt }
}

function makeWriter(args: {
  readonly disk: DiskService
  readonly dir: string
  readonly meta: SnapshotMeta
  readonly handle: DiskFile
  readonly header: Uint8Array
  readonly tmpPath: string
  readonly finalPath: string
  readonly chunkBytesMax: number
  readonly syncBytes: number
  readonly prune: Effect.Effect<void, DiskFailure>
  readonly onCommit: () => void
}): { readonly writer: SnapshotWriter; readonly settle: Effect.Effect<void> } {
  const { disk, handle, header } = args
  let written = 0
  let dataCrc = 0
  let state: "open" | "committed" = "open"
  /** Data bytes written when the last background sync started, and that sync while it runs. */
  let syncStarted = 0
  let syncing: Fiber.RuntimeFiber<void, DiskFailure> | null = null

  /** Waits for the background sync in flight, if any (its failure is the caller's). Forgotten
   * only once it ended: a caller interrupted while waiting leaves it to `settle`. */
  const awaitSync: Effect.Effect<void, DiskFailure> = Effect.suspend(() => {
    const running = syncing
    if (running === null) return Effect.void
    const forget = Effect.sync(() => {
      if (syncing === running) syncing = null
    })
    return Fiber.join(running).pipe(Effect.tapBoth({ onSuccess: () => forget, onFailure: () => forget }))
  })

  const append = (chunk: Uint8Array): Effect.Effect<void, DiskFailure> =>
    Effect.gen(function*() {
      assert(state === "open", "write after commit")
      assert(chunk.byteLength <= args.chunkBytesMax, `chunk of ${chunk.byteLength} bytes exceeds chunkBytesMax ${args.chunkBytesMax}`)
      const position = header.byteLength + written
      written += chunk.byteLength
      dataCrc = crc32c(chunk, dataCrc)
      yield* writeOffLoop(handle, position, chunk)
      if (written - syncStarted >= args.syncBytes) {
        // One at a time: a disk slower than the copy makes the copy wait here, so the dirty
        // bytes stay bounded instead of the whole snapshot.
        const waited = performance.now()
        yield* awaitSync
        traceDuration("snapshot.take.syncWait.ms", waited)
        syncStarted = written
        syncing = yield* Effect.forkDaemon(handle.sync)
      }
    })

  const writeAt = (offset: number, chunk: Uint8Array): Effect.Effect<number, SnapshotError> =>
    Effect.suspend(() => {
      assert(offset >= 0, "chunk offset must not be negative")
      if (offset > written || offset + chunk.byteLength <= written) return Effect.void
      return append(chunk.subarray(written - offset))
    }).pipe(Effect.map(() => written))

  const commit = (expected?: { readonly sizeBytes: number; readonly crc32c: number }): Effect.Effect<void, SnapshotError> =>
    Effect.gen(function* () {
      assert(state === "open", "commit twice")
      if (expected !== undefined && (expected.sizeBytes !== written || expected.crc32c !== dataCrc)) {
        return yield* new SnapshotCorrupted({
          file: args.tmpPath,
          offset: header.byteLength,
          reason: `received ${written} bytes with crc ${dataCrc}, the sender has ${expected.sizeBytes} bytes with crc ${expected.crc32c}`
        })
      }
      yield* awaitSync
      yield* handle.write(header.byteLength + written, encodeTrailer(written, dataCrc))
      yield* handle.sync
      yield* handle.close
      yield* disk.rename(args.tmpPath, args.finalPath)
      yield* disk.fsyncDir(args.dir)
      state = "committed"
      args.onCommit()
      yield* args.prune
    })

  return {
    writer: {
      meta: args.meta,
      bytesWritten: Effect.sync(() => written),
      write: (chunk) => append(chunk),
      writeAt,
      commit
    },
    settle: Effect.ignore(awaitSync)
  }
}

function makeReader(
  handle: DiskFile,
  wanted: { readonly index: number; readonly term: number },
  chunkBytesMax: number
): Effect.Effect<SnapshotReader, SnapshotError> {
  return Effect.gen(function* () {
    const file = handle.path
    const corrupted = (offset: number, reason: string) => new SnapshotCorrupted({ file, offset, reason })
    const fileBytes = yield* handle.size
    const head = yield* handle.read(0, 16)
    if (head.byteLength < 16 || !sameBytes(head.subarray(0, 8), headerMagic)) return yield* corrupted(0, "bad header magic")
    const headView = new DataView(head.buffer, head.byteOffset, 16)
    const version = headView.getUint32(8, true)
    if (version !== snapshotFormatVersion) return yield* corrupted(8, `unknown snapshot format version ${version}`)
    const metaBytes = headView.getUint32(12, true)
    if (metaBytes > metaBytesMax || 16 + metaBytes + 4 + trailerBytes > fileBytes) return yield* corrupted(12, "bad metadata length")
    const header = yield* handle.read(0, 16 + metaBytes + 4)
    const headerView = new DataView(header.buffer, header.byteOffset, header.byteLength)
    if (headerView.getUint32(16 + metaBytes, true) !== crc32c(header.subarray(0, 16 + metaBytes))) {
      return yield* corrupted(16 + metaBytes, "header checksum mismatch")
    }
    const meta = decodeMeta(header.subarray(16, 16 + metaBytes))
    if (meta === null) return yield* corrupted(16, "unreadable metadata")
    if (meta.index !== wanted.index || meta.term !== wanted.term) {
      return yield* corrupted(16, `holds index ${meta.index} term ${meta.term}, its name says ${wanted.index}/${wanted.term}`)
    }
    const dataStart = header.byteLength
    const trailerStart = fileBytes - trailerBytes
    const trailer = yield* handle.read(trailerStart, trailerBytes)
    const trailerView = new DataView(trailer.buffer, trailer.byteOffset, trailer.byteLength)
    if (!sameBytes(trailer.subarray(0, 8), trailerMagic) || trailerView.getUint32(20, true) !== crc32c(trailer.subarray(0, 20))) {
      return yield* corrupted(trailerStart, "bad trailer")
    }
    const sizeBytes = trailerView.getUint32(8, true) + trailerView.getUint32(12, true) * 0x1_0000_0000
    const dataCrc = trailerView.getUint32(16, true)
    if (dataStart + sizeBytes !== trailerStart) return yield* corrupted(trailerStart, `trailer says ${sizeBytes} data bytes`)

    const read = (offset: number, lengthMax = chunkBytesMax): Effect.Effect<Uint8Array, SnapshotError> =>
      Effect.suspend(() => {
        assert(offset >= 0 && offset <= sizeBytes, `read offset ${offset} outside [0, ${sizeBytes}]`)
        const length = Math.min(lengthMax, chunkBytesMax, sizeBytes - offset)
        return length === 0 ? Effect.succeed(new Uint8Array(0)) : handle.read(dataStart + offset, length)
      })

    const chunks = (fromOffset = 0) =>
      Stream.paginateEffect(fromOffset, (offset) =>
        Effect.map(read(offset), (data) => {
          const next = offset + data.byteLength
          return [{ offset, data }, next < sizeBytes ? Option.some(next) : Option.none()] as const
        })).pipe(Stream.filter((chunk) => chunk.data.byteLength > 0))

    const verify = Effect.gen(function* () {
      let crc = 0
      let chunks = 0
      for (let offset = 0; offset < sizeBytes;) {
        // The event loop is free every few chunks (a few ms of reading and checksumming): a
        // node verifies its boot snapshot while it already serves (src/node/Node.ts).
        if (++chunks % 4 === 0) yield* yieldToLoop
        const data = yield* read(offset)
        if (data.byteLength === 0) return yield* corrupted(dataStart + offset, "data ends early")
        crc = crc32c(data, crc)
        offset += data.byteLength
      }
      if (crc !== dataCrc) return yield* corrupted(dataStart, "data checksum mismatch")
    })

    return { meta, sizeBytes, crc32c: dataCrc, read, chunks, verify }
  })
}

function decodeMeta(bytes: Uint8Array): SnapshotMeta | null {
  let value: unknown
  try {
    value = packr.unpack(bytes)
  } catch {
    return null
  }
  if (typeof value !== "object" || value === null) return null
  const v = value as Record<string, unknown>
  const index = v["index"]
  const term = v["term"]
  const configBytes = v["config"]
  if (typeof index !== "number" || typeof term !== "number" || !(configBytes instanceof Uint8Array)) return null
  const config = decodeMembership(configBytes)
  return config === null ? null : { index, term, config }
}
