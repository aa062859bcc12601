// The on-disk record format of the Raft log, as pure functions over bytes.
//
// A segment file is a sequence of records, each a 32-byte header and a payload:
//
//   offset size field
//        0    4 crc32c     CRC32C (Castagnoli) of bytes [4, 32 + payloadBytes) — header and payload
//        4    2 magic      0x7174 ("tq" little-endian): cheap resynchronisation when scanning
//        6    1 kind       RecordKind
//        7    1 reserved   0
//        8    4 payloadBytes
//       12    4 writeStart byte offset in this segment where the write that carried this record
//                          began (every persist is one write per segment); tells a torn last write
//                          from damage in an earlier, acknowledged one
//       16    8 index      log index (meaning per kind, below), little-endian unsigned
//       24    8 term       term (meaning per kind), little-endian unsigned
//       32    … payload
//
// Kinds: the three entry kinds carry one Raft entry (index, term; payload = the command bytes,
// the msgpackr-encoded membership, nothing). The others are state records; the log is append-only
// and its state is the replay of its records (see logState.ts):
//   hardState  index = commit, term = term, payload = 8 bytes: vote + 1 (0 = no vote)
//   truncate   index = first index removed (entries >= index are gone)
//   compact    index, term = the new base (entries <= index are gone)
//   snapshot   index, term of an installed snapshot, payload = msgpackr membership: the log is
//              reset to start after it
//   checkpoint the first record of every segment: index, term = last index and term of the log
//              when the segment began, payload = msgpackr { segment, hardState, base, snapshot },
//              so a segment can be replayed without the ones before it (prefix removal).
import { crc32c } from "@node-rs/crc32"
import { Packr } from "msgpackr"
import { assert } from "../assert.ts"
import type { Entry, HardState, LogIndex, Member, Membership, SnapshotMeta, Term } from "../raft/types.ts"

export const recordHeaderBytes = 32
export const recordMagic = 0x7174

export const RecordKind = {
  command: 1,
  config: 2,
  barrier: 3,
  hardState: 16,
  truncate: 17,
  compact: 18,
  snapshot: 19,
  checkpoint: 20
} as const
export type RecordKind = (typeof RecordKind)[keyof typeof RecordKind]
const knownKinds: ReadonlySet<number> = new Set(Object.values(RecordKind))

/** A payload this large is certainly damage, not data (far above any entry bound). */
export const recordPayloadBytesMax = 1024 * 1024 * 1024

export interface Base {
  readonly index: LogIndex
  readonly term: Term
}

/** The state a segment starts from (see `checkpoint` above). */
export interface Checkpoint {
  readonly segment: number
  readonly hardState: HardState
  readonly base: Base
  readonly snapshot: SnapshotMeta | null
  readonly lastIndex: LogIndex
  readonly lastTerm: Term
}

/** A record before encoding: header fields and payload. */
export interface RecordDraft {
  readonly kind: RecordKind
  readonly index: number
  readonly term: number
  readonly payload: Uint8Array
}

/** A decoded, checksum-verified record. `payload` is a view into the scanned buffer. */
export interface RecordView extends RecordDraft {
  readonly offset: number
  readonly bytes: number
  readonly writeStart: number
}

const packr = new Packr({ useRecords: false, mapsAsObjects: true })
const emptyPayload = new Uint8Array(0)

// --- little-endian u64 as two u32 halves (indexes and terms are safe integers) --------------

function writeU64(view: DataView, offset: number, value: number): void {
  assert(Number.isSafeInteger(value) && value >= 0, `u64 field must be a non-negative safe integer, got ${value}`)
  view.setUint32(offset, value >>> 0, true)
  view.setUint32(offset + 4, Math.floor(value / 0x1_0000_0000), true)
}

function readU64(view: DataView, offset: number): number {
  return view.getUint32(offset, true) + view.getUint32(offset + 4, true) * 0x1_0000_0000
}

// --- drafts ------------------------------------------------------------------------------

export function entryDraft(entry: Entry): RecordDraft {
  switch (entry.kind) {
    case "command":
      return { kind: RecordKind.command, index: entry.index, term: entry.term, payload: entry.data }
    case "config":
      return { kind: RecordKind.config, index: entry.index, term: entry.term, payload: encodeMembership(entry.config) }
    case "barrier":
      return { kind: RecordKind.barrier, index: entry.index, term: entry.term, payload: emptyPayload }
  }
}

export function hardStateDraft(hardState: HardState): RecordDraft {
  const payload = new Uint8Array(8)
  writeU64(new DataView(payload.buffer), 0, hardState.vote === null ? 0 : hardState.vote + 1)
  return { kind: RecordKind.hardState, index: hardState.commit, term: hardState.term, payload }
}

export function truncateDraft(from: LogIndex): RecordDraft {
  return { kind: RecordKind.truncate, index: from, term: 0, payload: emptyPayload }
}

export function compactDraft(base: Base): RecordDraft {
  return { kind: RecordKind.compact, index: base.index, term: base.term, payload: emptyPayload }
}

export function snapshotDraft(meta: SnapshotMeta): RecordDraft {
  return { kind: RecordKind.snapshot, index: meta.index, term: meta.term, payload: encodeMembership(meta.config) }
}

export function checkpointDraft(checkpoint: Checkpoint): RecordDraft {
  const payload = packr.pack({
    segment: checkpoint.segment,
    hardState: checkpoint.hardState,
    base: checkpoint.base,
    snapshot: checkpoint.snapshot
  }) as Uint8Array
  return { kind: RecordKind.checkpoint, index: checkpoint.lastIndex, term: checkpoint.lastTerm, payload }
}

export function recordBytes(draft: RecordDraft): number {
  return recordHeaderBytes + draft.payload.byteLength
}

/** Encodes `drafts` back to back; every record gets `writeStart`. Into `scratch` when it is large
 * enough (every byte of the result is written, so it needs no clearing), else into a new buffer. */
export function encodeRecords(drafts: ReadonlyArray<RecordDraft>, writeStart: number, scratch?: Uint8Array): Uint8Array {
  let total = 0
  for (const draft of drafts) total += recordBytes(draft)
  const buffer = scratch !== undefined && scratch.byteLength >= total ? scratch.subarray(0, total) : new Uint8Array(total)
  const view = new DataView(buffer.buffer, buffer.byteOffset, buffer.byteLength)
  let offset = 0
  for (const draft of drafts) {
    offset = encodeRecordInto(buffer, view, offset, draft, writeStart)
  }
  assert(offset === total, "encoded size matches the computed size")
  return buffer
}

/** A record's header alone (its checksum covering the header and `draft.payload`), for a large
 * payload written as it is after it instead of copied behind the header: the same bytes on
 * disk as `encodeRecords([draft])`, without a second copy of the payload in memory. */
export function encodeRecordHeader(draft: RecordDraft, writeStart: number): Uint8Array {
  const header = new Uint8Array(recordHeaderBytes)
  const view = new DataView(header.buffer)
  const payloadBytes = draft.payload.byteLength
  assert(payloadBytes <= recordPayloadBytesMax, `record payload of ${payloadBytes} bytes exceeds the format bound`)
  view.setUint16(4, recordMagic, true)
  view.setUint8(6, draft.kind)
  view.setUint8(7, 0)
  view.setUint32(8, payloadBytes, true)
  view.setUint32(12, writeStart, true)
  writeU64(view, 16, draft.index)
  writeU64(view, 24, draft.term)
  view.setUint32(0, crc32c(asBuffer(draft.payload), crc32c(asBuffer(header.subarray(4)))), true)
  return header
}

const asBuffer = (bytes: Uint8Array): Buffer => (Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength))

function encodeRecordInto(buffer: Uint8Array, view: DataView, offset: number, draft: RecordDraft, writeStart: number): number {
  const payloadBytes = draft.payload.byteLength
  assert(payloadBytes <= recordPayloadBytesMax, `record payload of ${payloadBytes} bytes exceeds the format bound`)
  view.setUint16(offset + 4, recordMagic, true)
  view.setUint8(offset + 6, draft.kind)
  view.setUint8(offset + 7, 0)
  view.setUint32(offset + 8, payloadBytes, true)
  view.setUint32(offset + 12, writeStart, true)
  writeU64(view, offset + 16, draft.index)
  writeU64(view, offset + 24, draft.term)
  buffer.set(draft.payload, offset + recordHeaderBytes)
  const end = offset + recordHeaderBytes + payloadBytes
  view.setUint32(offset, crc32c(buffer.subarray(offset + 4, end)), true)
  return end
}

// --- decoding ----------------------------------------------------------------------------

export type DecodeResult =
  | { readonly ok: true; readonly record: RecordView }
  | { readonly ok: false; readonly reason: string }

/** Decodes and verifies the record at `offset` of `buffer` (which ends at `buffer.length`). */
export function decodeRecordAt(buffer: Uint8Array, offset: number): DecodeResult {
  if (buffer.byteLength - offset < recordHeaderBytes) {
    return { ok: false, reason: `incomplete record header (${buffer.byteLength - offset} bytes left)` }
  }
  const view = new DataView(buffer.buffer, buffer.byteOffset, buffer.byteLength)
  if (view.getUint16(offset + 4, true) !== recordMagic) return { ok: false, reason: "bad record magic" }
  const kind = view.getUint8(offset + 6)
  if (!knownKinds.has(kind) || view.getUint8(offset + 7) !== 0) {
    return { ok: false, reason: `unknown record kind ${kind}` }
  }
  const payloadBytes = view.getUint32(offset + 8, true)
  const end = offset + recordHeaderBytes + payloadBytes
  if (end > buffer.byteLength) {
    return { ok: false, reason: `record of ${payloadBytes} payload bytes runs past the end of the file` }
  }
  const expected = view.getUint32(offset, true)
  const actual = crc32c(buffer.subarray(offset + 4, end))
  if (expected !== actual) return { ok: false, reason: "checksum mismatch" }
  return {
    ok: true,
    record: {
      kind: kind as RecordKind,
      index: readU64(view, offset + 16),
      term: readU64(view, offset + 24),
      payload: buffer.subarray(offset + recordHeaderBytes, end),
      offset,
      bytes: recordHeaderBytes + payloadBytes,
      writeStart: view.getUint32(offset + 12, true)
    }
  }
}

/** The result of scanning one segment file. `validBytes` is where the valid records end; when
 * `damage` is set the bytes from there are bad (`tornTail` says whether that may be cut off). */
export interface SegmentScan {
  readonly records: ReadonlyArray<RecordView>
  readonly validBytes: number
  readonly damage: { readonly offset: number; readonly reason: string; readonly tornTail: boolean } | null
}

/**
 * Reads every record of a segment. At the first record that does not decode, decides whether the
 * bytes from there are a torn last write (never acknowledged: safe to cut) or damage:
 *
 * Only the last write to a log can be incomplete — `persist` returns after fdatasync, and the next
 * write starts after that. So the bad bytes are a torn tail iff this is the last segment and every
 * valid record found anywhere after them belongs to that same last write: its `writeStart` is the
 * start of the write the last good record belongs to, or the bad offset itself. A valid record of
 * any later write behind the bad bytes means an acknowledged record went bad: refuse. (With no
 * valid record behind, this is the plain "nothing valid follows" rule; the `writeStart` test also
 * accepts a last write whose pages reached the disk out of order.)
 *
 * What this cannot tell apart: damage inside the last write after it was acknowledged looks like
 * a torn write, and that write's records from the damage on are cut.
 */
export function scanSegment(buffer: Uint8Array, isLastSegment: boolean): SegmentScan {
  const records: RecordView[] = []
  let offset = 0
  while (offset < buffer.byteLength) {
    const result = decodeRecordAt(buffer, offset)
    if (!result.ok) {
      const lastGood = records[records.length - 1]
      const tornTail = isLastSegment && onlySameWriteFollows(buffer, offset, lastGood?.writeStart ?? 0)
      return { records, validBytes: offset, damage: { offset, reason: result.reason, tornTail } }
    }
    records.push(result.record)
    offset += result.record.bytes
  }
  return { records, validBytes: offset, damage: null }
}

function onlySameWriteFollows(buffer: Uint8Array, badOffset: number, lastGoodWriteStart: number): boolean {
  const view = new DataView(buffer.buffer, buffer.byteOffset, buffer.byteLength)
  let lastWriteStart: number | null = null
  for (let position = badOffset + 1; position + recordHeaderBytes <= buffer.byteLength; position++) {
    if (view.getUint16(position + 4, true) !== recordMagic) continue
    const result = decodeRecordAt(buffer, position)
    if (!result.ok) continue
    const writeStart = result.record.writeStart
    if (writeStart !== badOffset && writeStart !== lastGoodWriteStart) return false
    // Every survivor must claim the same write: the last one.
    if (lastWriteStart !== null && writeStart !== lastWriteStart) return false
    lastWriteStart = writeStart
  }
  return true
}

// --- payloads ----------------------------------------------------------------------------

export function encodeMembership(config: Membership): Uint8Array {
  return packr.pack({ members: config.members.map((m) => ({ id: m.id, address: m.address, role: m.role })) }) as Uint8Array
}

/** Decodes a membership payload; `null` when the bytes are not one (a bug or version skew,
 * since the record checksum passed). */
export function decodeMembership(payload: Uint8Array): Membership | null {
  const value = unpackOrNull(payload)
  return isMembership(value) ? copyMembership(value) : null
}

function copyMembership(config: Membership): Membership {
  return { members: config.members.map((m) => ({ id: m.id, address: m.address, role: m.role })) }
}

export function decodeVote(payload: Uint8Array): number | null | undefined {
  if (payload.byteLength !== 8) return undefined
  const encoded = readU64(new DataView(payload.buffer, payload.byteOffset, 8), 0)
  return encoded === 0 ? null : encoded - 1
}

export function decodeCheckpoint(record: RecordView): Checkpoint | null {
  const value = unpackOrNull(record.payload)
  if (typeof value !== "object" || value === null) return null
  const v = value as Record<string, unknown>
  if (typeof v["segment"] !== "number" || !isHardState(v["hardState"]) || !isBase(v["base"])) return null
  const snapshot = v["snapshot"]
  if (snapshot !== null && !isSnapshotMeta(snapshot)) return null
  return {
    segment: v["segment"],
    hardState: { term: v["hardState"].term, vote: v["hardState"].vote, commit: v["hardState"].commit },
    base: { index: v["base"].index, term: v["base"].term },
    snapshot: snapshot === null ? null : { index: snapshot.index, term: snapshot.term, config: copyMembership(snapshot.config) },
    lastIndex: record.index,
    lastTerm: record.term
  }
}

function unpackOrNull(payload: Uint8Array): unknown {
  try {
    return packr.unpack(payload)
  } catch {
    return null
  }
}

const isCount = (x: unknown): x is number => typeof x === "number" && Number.isSafeInteger(x) && x >= 0

function isHardState(x: unknown): x is HardState {
  if (typeof x !== "object" || x === null) return false
  const v = x as Record<string, unknown>
  return isCount(v["term"]) && isCount(v["commit"]) && (v["vote"] === null || isCount(v["vote"]))
}

function isBase(x: unknown): x is Base {
  if (typeof x !== "object" || x === null) return false
  const v = x as Record<string, unknown>
  return isCount(v["index"]) && isCount(v["term"])
}

function isMember(x: unknown): x is Member {
  if (typeof x !== "object" || x === null) return false
  const v = x as Record<string, unknown>
  return isCount(v["id"]) && typeof v["address"] === "string" &&
    (v["role"] === "voter" || v["role"] === "standby" || v["role"] === "spare")
}

function isMembership(x: unknown): x is Membership {
  if (typeof x !== "object" || x === null) return false
  const members = (x as Record<string, unknown>)["members"]
  return Array.isArray(members) && members.every(isMember)
}

function isSnapshotMeta(x: unknown): x is SnapshotMeta {
  return isBase(x) && isMembership((x as unknown as Record<string, unknown>)["config"])
}
