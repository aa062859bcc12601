// A Raft snapshot of the SQLite state machine, as a byte stream: a small manifest (every
// database's name, the index of its last change — the chain check of writeEntry.ts continues
// from it — and its image size), then the images in manifest order, each the database's main
// file as of the snapshot's index. Written and read in bounded chunks (SqliteMachine), never
// assembled in memory; the snapshot store and the transfer check a CRC32C over all of it.
//
//   offset  size  field (little-endian)
//   0       4     magic "TQDS"
//   4       4     format version (2)
//   8       4     manifest bytes m (what follows, up to and including its CRC)
//   12      4     database count n
//   then n times:
//           2     name length (UTF-8 bytes)     …  name
//           8     last change index (f64)       8  image size in bytes (f64)
//   12 + m − 4    4  crc32c of bytes [0, 12 + m − 4)
//   then the n images, concatenated.

import { crc32c } from "@node-rs/crc32"
import { assert } from "../assert.ts"
import { PageSetDecodeError } from "./errors.ts"

export interface DatabaseEntry {
  readonly name: string
  readonly lastChangeIndex: number
  readonly sizeBytes: number
}

const magic = 0x53445154 // "TQDS"
const formatVersion = 2
/** The manifest is read whole: bound it (65,536 databases of 1 KiB names fit). */
export const manifestBytesMax = 80 * 1024 * 1024
/** Bytes before the manifest's own length is known. */
export const manifestPrefixBytes = 12
const encoder = new TextEncoder()
const decoder = new TextDecoder("utf-8", { fatal: true })

export function encodeManifest(databases: ReadonlyArray<DatabaseEntry>): Uint8Array {
  const names = databases.map((d) => encoder.encode(d.name))
  let bytes = 16
  for (const name of names) bytes += 2 + name.length + 16
  bytes += 4
  const out = new Uint8Array(bytes)
  const view = new DataView(out.buffer)
  view.setUint32(0, magic, true)
  view.setUint32(4, formatVersion, true)
  view.setUint32(8, bytes - manifestPrefixBytes, true)
  view.setUint32(12, databases.length, true)
  let at = 16
  databases.forEach((d, i) => {
    const name = names[i]!
    assert(name.length > 0 && name.length < 65536, "database name length fits")
    assert(Number.isSafeInteger(d.sizeBytes) && d.sizeBytes >= 0, `image size ${d.sizeBytes}`)
    view.setUint16(at, name.length, true)
    out.set(name, at + 2)
    at += 2 + name.length
    view.setFloat64(at, d.lastChangeIndex, true)
    view.setFloat64(at + 8, d.sizeBytes, true)
    at += 16
  })
  view.setUint32(at, crc32c(out.subarray(0, at)), true)
  assert(at + 4 === bytes, "manifest encoding filled exactly")
  return out
}

/** The manifest's total length from its first 12 bytes. */
export function manifestLength(prefix: Uint8Array): number {
  const fail = (reason: string, offset: number): never => {
    throw new PageSetDecodeError({ reason: `database snapshot: ${reason}`, offset })
  }
  if (prefix.length < manifestPrefixBytes) fail("too short", 0)
  const view = new DataView(prefix.buffer, prefix.byteOffset, prefix.byteLength)
  if (view.getUint32(0, true) !== magic) fail("bad magic", 0)
  if (view.getUint32(4, true) !== formatVersion) fail("unknown version", 4)
  const rest = view.getUint32(8, true)
  if (rest < 8 || rest > manifestBytesMax) fail(`manifest of ${rest} bytes`, 8)
  return manifestPrefixBytes + rest
}

export function decodeManifest(data: Uint8Array): Array<DatabaseEntry> {
  const fail = (reason: string, offset: number): never => {
    throw new PageSetDecodeError({ reason: `database snapshot: ${reason}`, offset })
  }
  const length = manifestLength(data)
  if (data.length !== length) fail(`manifest has ${data.length} of ${length} bytes`, 0)
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength)
  if (view.getUint32(length - 4, true) !== crc32c(data.subarray(0, length - 4))) fail("manifest checksum mismatch", length - 4)
  const count = view.getUint32(12, true)
  const out: Array<DatabaseEntry> = []
  let at = 16
  const end = length - 4
  for (let i = 0; i < count; i++) {
    if (at + 2 > end) fail("truncated name length", at)
    const nameBytes = view.getUint16(at, true)
    if (at + 2 + nameBytes + 16 > end) fail("truncated entry", at)
    const name = decoder.decode(data.subarray(at + 2, at + 2 + nameBytes))
    at += 2 + nameBytes
    const lastChangeIndex = view.getFloat64(at, true)
    const sizeBytes = view.getFloat64(at + 8, true)
    if (!Number.isSafeInteger(sizeBytes) || sizeBytes < 0) fail(`image size ${sizeBytes}`, at + 8)
    if (!Number.isSafeInteger(lastChangeIndex) || lastChangeIndex < 0) fail(`last change index ${lastChangeIndex}`, at)
    out.push({ name, lastChangeIndex, sizeBytes })
    at += 16
  }
  if (at !== end) fail(`${end - at} bytes after the last database`, at)
  return out
}
