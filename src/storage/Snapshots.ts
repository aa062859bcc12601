// The snapshot store: the state machine's data at an applied index, plus its metadata, in one
// file per snapshot. Written under a temporary name, fdatasynced, renamed, directory fsynced;
// older snapshots pruned to a bound. Read and written in chunks with offsets, which is what a
// resumable InstallSnapshot transfer needs.
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
import { Context, Effect, Layer, Option, Stream } from "effect"
import type { Scope } from "effect"
import { Packr } from "msgpackr"
import { assert } from "../assert.ts"
import type { SnapshotMeta } from "../raft/types.ts"
import type { DiskFile, DiskService } from "./Disk.ts"
import { Disk, ensureDir } from "./Disk.ts"
import { SnapshotCorrupted, SnapshotMissing } from "./errors.ts"
import type { DiskFailure, SnapshotError } from "./errors.ts"
import { decodeMembership, encodeMembership } from "./format.ts"

export interface SnapshotsOptions {
  readonly dir: string
  /** Committed snapshots kept; older ones are deleted after each commit. Default 2. */
  readonly retain?: number
  /** The largest chunk `read` returns and `write` accepts. Default 1 MiB. */
  readonly chunkBytesMax?: number
}

export const snapshotRetainDefault = 2
export const snapshotChunkBytesMaxDefault = 1024 * 1024

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
  readonly create: (meta: SnapshotMeta) => Effect.Effect<SnapshotWriter, SnapshotError, Scope.Scope>
  /** The newest committed snapshot (its header and trailer checked), or null. */
  readonly latest: Effect.Effect<SnapshotMeta | null, SnapshotError>
  /** Committed snapshots, oldest first (by index, then term), from their file names. */
  readonly list: Effect.Effect<ReadonlyArray<{ readonly index: number; readonly term: number }>, SnapshotError>
  readonly open: (meta: { readonly index: number; readonly term: number }) => Effect.Effect<SnapshotReader, SnapshotError, Scope.Scope>
}

export class Snapshots extends Context.Tag("tqlite/storage/Snapshots")<Snapshots, SnapshotsService>() {
  static layer(options: SnapshotsOptions): Layer.Layer<Snapshots, SnapshotError, Disk> {
    return Layer.effect(Snapshots, makeSnapshots(options))
  }
}

/** A whole snapshot's data in memory (for state machines small enough to hold it; a large
 * one streams through `open(meta).chunks`). */
export const readSnapshotData = (snapshots: SnapshotsService, meta: SnapshotMeta): Effect.Effect<Uint8Array, SnapshotError> =>
  Effect.scoped(
    Effect.gen(function*() {
      const reader = yield* snapshots.open(meta)
      const data = new Uint8Array(reader.sizeBytes)
      let offset = 0
      while (offset < reader.sizeBytes) {
        const chunk = yield* reader.read(offset)
        if (chunk.length === 0) break
        data.set(chunk, offset)
        offset += chunk.length
      }
      assert(offset === reader.sizeBytes, `snapshot ${meta.index} ended at ${offset} of ${reader.sizeBytes} bytes`)
      return data
    })
  )

/** Stores `data` as the snapshot `meta`, in chunks, durably (see SnapshotWriter.commit). */
export const writeSnapshotData = (snapshots: SnapshotsService, meta: SnapshotMeta, data: Uint8Array): Effect.Effect<void, SnapshotError> =>
  Effect.scoped(
    Effect.gen(function*() {
      const writer = yield* snapshots.create(meta)
      for (let offset = 0; offset < data.length; offset += snapshots.chunkBytesMax) {
        yield* writer.write(data.subarray(offset, offset + snapshots.chunkBytesMax))
      }
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

function makeSnapshots(options: SnapshotsOptions): Effect.Effect<SnapshotsService, SnapshotError, Disk> {
  return Effect.gen(function* () {
    const disk = yield* Disk
    const dir = options.dir
    const retain = options.retain ?? snapshotRetainDefault
    const chunkBytesMax = options.chunkBytesMax ?? snapshotChunkBytesMaxDefault
    assert(retain >= 1, "keep at least one snapshot")
    assert(chunkBytesMax >= 1, "chunkBytesMax must be positive")
    yield* ensureDir(disk, dir)
    for (const name of yield* disk.list(dir)) {
      if (name.endsWith(".tmp")) yield* disk.unlink(path.join(dir, name))
    }
    let tmpCounter = 0

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

    const prune = Effect.gen(function* () {
      const all = yield* list
      for (const old of all.slice(0, Math.max(0, all.length - retain))) {
        yield* disk.unlink(path.join(dir, snapshotFileName(old.index, old.term)))
      }
    })

    const create = (meta: SnapshotMeta) =>
      Effect.gen(function* () {
        const finalPath = path.join(dir, snapshotFileName(meta.index, meta.term))
        const tmpPath = `${finalPath}.${tmpCounter++}.tmp`
        const header = encodeHeader(meta)
        let committed = false
        const handle = yield* Effect.acquireRelease(disk.open(tmpPath, "write"), (h) =>
          Effect.ignore(Effect.zipRight(h.close, committed ? Effect.void : disk.unlink(tmpPath))))
        yield* handle.truncate(0)
        yield* handle.write(0, header)
        return makeWriter({ disk, dir, meta, handle, header, tmpPath, finalPath, chunkBytesMax, prune, onCommit: () => (committed = true) })
      })

    return { chunkBytesMax, create, latest, list, open }
  })
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
  readonly prune: Effect.Effect<void, DiskFailure>
  readonly onCommit: () => void
}): SnapshotWriter {
  const { disk, handle, header } = args
  let written = 0
  let dataCrc = 0
  let state: "open" | "committed" = "open"

  const append = (chunk: Uint8Array): Effect.Effect<void, DiskFailure> =>
    Effect.suspend(() => {
      assert(state === "open", "write after commit")
      assert(chunk.byteLength <= args.chunkBytesMax, `chunk of ${chunk.byteLength} bytes exceeds chunkBytesMax ${args.chunkBytesMax}`)
      const position = header.byteLength + written
      written += chunk.byteLength
      dataCrc = crc32c(chunk, dataCrc)
      return handle.write(position, chunk)
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
    meta: args.meta,
    bytesWritten: Effect.sync(() => written),
    write: (chunk) => append(chunk),
    writeAt,
    commit
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
      for (let offset = 0; offset < sizeBytes;) {
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
