// The payload of a Raft command entry written by a leader's writer: who wrote it, what it builds
// on, and the page set (pageSet.ts) of one database.
//
// - origin (node, epoch, seq): the writer that captured it. The node that proposed it recognizes
//   its own entries while that writer is still attached: their frames are already in its WAL, so
//   applying them only marks them applied (see SqliteMachine). Epochs are unique per node process
//   and writer, and an entry's Raft term names the leadership, so (term, node, epoch, seq) never
//   repeats.
// - previousChangeIndex: the Raft index of the last entry that changed this database when the
//   writer captured these pages, i.e. the state the page images were computed on. Every node
//   applies an entry only if that is still the last change it applied to the database, and
//   skips it otherwise — deterministically, so all nodes agree. Normally every entry passes; the
//   check makes a re-proposed copy of an entry whose first copy did commit (after a timeout left
//   its outcome unknown) a no-op, and turns any ordering bug into a visible skip instead of pages
//   laid over the wrong state.
//
//   offset  size  field (little-endian)
//   0       4     magic "TQWE"
//   4       1     format version (1)
//   5       1     flags (0)
//   6       2     zero
//   8       8     origin node id (f64, a safe integer)
//   16      8     origin epoch (f64)
//   24      8     origin sequence number (f64)
//   32      8     previous change index (f64)
//   40      …     the page set's encoding (pageSet.ts), database name included

import { assert } from "../assert.ts"
import { PageSetDecodeError } from "./errors.ts"
import type { DecodedPageSet, PageSet } from "./pageSet.ts"
import { decodePageSet, encodePageSetAfterSteps, runSteps } from "./pageSet.ts"

export interface WriteOrigin {
  readonly node: number
  readonly epoch: number
  readonly seq: number
}

export interface WriteEntry {
  readonly origin: WriteOrigin
  readonly previousChangeIndex: number
  readonly database: string
  readonly pageSet: PageSet
}

export interface DecodedWriteEntry extends DecodedPageSet {
  readonly origin: WriteOrigin
  readonly previousChangeIndex: number
}

const magic = 0x45575154 // "TQWE" read as a little-endian u32
const formatVersion = 1
export const writeEntryHeaderBytes = 40

export function encodeWriteEntry(entry: WriteEntry): Uint8Array {
  return runSteps(encodeWriteEntrySteps(entry, Number.POSITIVE_INFINITY))
}

/** `encodeWriteEntry` as steps of `stepBytes` of pages copied (see encodePageSetAfterSteps). */
export function* encodeWriteEntrySteps(entry: WriteEntry, stepBytes: number): Generator<void, Uint8Array> {
  const { origin } = entry
  for (const value of [origin.node, origin.epoch, origin.seq, entry.previousChangeIndex]) {
    assert(Number.isSafeInteger(value) && value >= 0, `write entry field ${value} is a non-negative safe integer`)
  }
  const payload = yield* encodePageSetAfterSteps(writeEntryHeaderBytes, entry.database, entry.pageSet, stepBytes)
  const view = new DataView(payload.buffer, payload.byteOffset, writeEntryHeaderBytes)
  view.setUint32(0, magic, true)
  view.setUint8(4, formatVersion)
  view.setUint8(5, 0)
  view.setUint16(6, 0, true)
  view.setFloat64(8, origin.node, true)
  view.setFloat64(16, origin.epoch, true)
  view.setFloat64(24, origin.seq, true)
  view.setFloat64(32, entry.previousChangeIndex, true)
  return payload
}

/** True when `data` starts like a write entry (a cheap test before decoding). */
export function isWriteEntry(data: Uint8Array): boolean {
  return data.length >= writeEntryHeaderBytes && new DataView(data.buffer, data.byteOffset, 4).getUint32(0, true) === magic
}

/** Decodes a write entry; page images are views into `data`. Throws PageSetDecodeError. */
export function decodeWriteEntry(data: Uint8Array): DecodedWriteEntry {
  if (!isWriteEntry(data)) throw new PageSetDecodeError({ reason: "not a write entry (bad magic or too short)", offset: 0 })
  const view = new DataView(data.buffer, data.byteOffset, writeEntryHeaderBytes)
  if (view.getUint8(4) !== formatVersion) throw new PageSetDecodeError({ reason: `unknown write entry version ${view.getUint8(4)}`, offset: 4 })
  if (view.getUint8(5) !== 0 || view.getUint16(6, true) !== 0) throw new PageSetDecodeError({ reason: "unknown write entry flags", offset: 5 })
  const fields = [8, 16, 24, 32].map((at) => view.getFloat64(at, true))
  fields.forEach((value, i) => {
    if (!Number.isSafeInteger(value) || value < 0) {
      throw new PageSetDecodeError({ reason: `write entry field ${value} is not a non-negative integer`, offset: 8 + 8 * i })
    }
  })
  const decoded = decodePageSet(data.subarray(writeEntryHeaderBytes))
  return {
    ...decoded,
    origin: { node: fields[0]!, epoch: fields[1]!, seq: fields[2]! },
    previousChangeIndex: fields[3]!
  }
}

