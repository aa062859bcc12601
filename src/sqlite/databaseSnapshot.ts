// A Raft snapshot of the SQLite state machine: every database's file image at one applied index,
// and the index of the last change to each (the chain check of writeEntry.ts continues from it).
// One Uint8Array for now: a large data set will need the images streamed from and to the files.
//
//   offset  size  field (little-endian)
//   0       4     magic "TQDS"
//   4       4     format version (1)
//   8       4     database count n
//   then n times:
//           2     name length (UTF-8 bytes)     …  name
//           8     last change index (f64)       8  image size in bytes (f64)   …  image

import { assert } from "../assert.ts"
import { PageSetDecodeError } from "./errors.ts"

export interface DatabaseImage {
  readonly name: string
  readonly lastChangeIndex: number
  readonly image: Uint8Array
}

const magic = 0x53445154 // "TQDS"
const formatVersion = 1
const encoder = new TextEncoder()
const decoder = new TextDecoder("utf-8", { fatal: true })

export function encodeDatabaseSnapshot(databases: ReadonlyArray<DatabaseImage>): Uint8Array {
  const names = databases.map((d) => encoder.encode(d.name))
  let bytes = 12
  databases.forEach((d, i) => {
    bytes += 2 + names[i]!.length + 16 + d.image.length
  })
  const out = new Uint8Array(bytes)
  const view = new DataView(out.buffer)
  view.setUint32(0, magic, true)
  view.setUint32(4, formatVersion, true)
  view.setUint32(8, databases.length, true)
  let at = 12
  databases.forEach((d, i) => {
    const name = names[i]!
    assert(name.length > 0 && name.length < 65536, "database name length fits")
    view.setUint16(at, name.length, true)
    out.set(name, at + 2)
    at += 2 + name.length
    view.setFloat64(at, d.lastChangeIndex, true)
    view.setFloat64(at + 8, d.image.length, true)
    out.set(d.image, at + 16)
    at += 16 + d.image.length
  })
  assert(at === bytes, "snapshot encoding filled exactly")
  return out
}

export function decodeDatabaseSnapshot(data: Uint8Array): Array<DatabaseImage> {
  const fail = (reason: string, offset: number): never => {
    throw new PageSetDecodeError({ reason: `database snapshot: ${reason}`, offset })
  }
  if (data.length < 12) fail("too short", 0)
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength)
  if (view.getUint32(0, true) !== magic) fail("bad magic", 0)
  if (view.getUint32(4, true) !== formatVersion) fail("unknown version", 4)
  const count = view.getUint32(8, true)
  const out: Array<DatabaseImage> = []
  let at = 12
  for (let i = 0; i < count; i++) {
    if (at + 2 > data.length) fail("truncated name length", at)
    const nameBytes = view.getUint16(at, true)
    if (at + 2 + nameBytes + 16 > data.length) fail("truncated entry", at)
    const name = decoder.decode(data.subarray(at + 2, at + 2 + nameBytes))
    at += 2 + nameBytes
    const lastChangeIndex = view.getFloat64(at, true)
    const size = view.getFloat64(at + 8, true)
    if (!Number.isSafeInteger(size) || size < 0 || at + 16 + size > data.length) fail(`image size ${size}`, at + 8)
    if (!Number.isSafeInteger(lastChangeIndex) || lastChangeIndex < 0) fail(`last change index ${lastChangeIndex}`, at)
    out.push({ name, lastChangeIndex, image: data.subarray(at + 16, at + 16 + size) })
    at += 16 + size
  }
  if (at !== data.length) fail(`${data.length - at} bytes after the last database`, at)
  return out
}
