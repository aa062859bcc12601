// Peer frames: a u32 little-endian payload length, then the payload. Payloads after the
// handshake are msgpackr records, encoded per connection in msgpackr's "sequential" mode: a
// record's structure is defined inline the first time it crosses the connection and referenced
// by id afterwards, so both ends must see every frame of that connection in order, and a new
// connection starts both codecs afresh.
import { Either } from "effect"
import { Packr, Unpackr } from "msgpackr"
import { assert } from "../../assert.ts"
import type { Envelope } from "../../raft/messages.ts"
import type { InstallSnapshot, Message } from "../../raft/messages.ts"
import { entrySizeBytes } from "../../raft/types.ts"
import type { FrameError } from "./errors.ts"
import { FrameTooLarge, MalformedFrame } from "./errors.ts"
import { messageProblem } from "./validate.ts"

export const lengthPrefixBytes = 4
/** The u32 prefix cannot describe more. */
export const frameBytesLimit = 0xffffffff

/** What travels in one frame after the handshake. An envelope without snapshot data is one
 * `Message` frame; one with data is a `SnapshotBegin` and `SnapshotChunk`s that each say at
 * which data offset they start (see snapshots.ts), interleaved with other frames. */
export type PeerFrame =
  | { readonly _tag: "Message"; readonly message: Message }
  | {
    readonly _tag: "SnapshotBegin"
    readonly transfer: number
    readonly message: InstallSnapshot
    readonly totalBytes: number
    /** CRC32C of all the data: the receiver checks it before the snapshot is delivered. */
    readonly crc32c: number
  }
  | { readonly _tag: "SnapshotChunk"; readonly transfer: number; readonly offset: number; readonly data: Uint8Array }

// ---------------------------------------------------------------------------------------------
// Length-prefixed frames

/** All `payloads` as consecutive frames in one buffer, ready for a single socket write. */
export function encodeFrames(payloads: ReadonlyArray<Uint8Array>): Uint8Array {
  let totalBytes = 0
  for (const payload of payloads) totalBytes += lengthPrefixBytes + payload.byteLength
  const out = Buffer.allocUnsafe(totalBytes)
  let offset = 0
  for (const payload of payloads) {
    assert(payload.byteLength > 0 && payload.byteLength <= frameBytesLimit, "a frame payload is 1 .. 2^32-1 bytes")
    out.writeUInt32LE(payload.byteLength, offset)
    out.set(payload, offset + lengthPrefixBytes)
    offset += lengthPrefixBytes + payload.byteLength
  }
  assert(offset === totalBytes, "frames fill the buffer exactly")
  return out
}

export function encodeFrame(payload: Uint8Array): Uint8Array {
  return encodeFrames([payload])
}

/** Buffers above this are dropped once empty, so one big frame does not pin memory forever. */
const retainedBufferBytesMax = 1024 * 1024
/** Frames from this size are received into their own buffer (FrameDecoder.receiveLarge): one
 * copy of their bytes instead of two (into the reused buffer, then out of it). An append of a
 * write batch is 50-250 KiB; copying it out of the buffer (`take`) was ~6 % of a follower's main
 * thread under kvwrite ×64 (issue 12). */
export const largeFrameBytes = 64 * 1024
const initialBufferBytes = 64 * 1024
/** Large frames a decoder keeps for reuse (FrameDecoder.recycle): a snapshot receiver holds one
 * while it writes it and reads the next into another. */
export const recycledFramesMax = 2

/**
 * Streaming decoder: `push` chunks of any size as they arrive, then call `next` until it says
 * it needs more. Bytes are copied into one contiguous buffer that holds at most the frame in
 * progress plus the last chunk pushed (when the caller pulls frames before pushing more), and
 * every frame returned owns its bytes. A length above `frameBytesMax` is an error before
 * anything of that size is allocated; so is an empty frame (no valid payload is empty).
 */
export class FrameDecoder {
  private buffer = new Uint8Array(0)
  private start = 0
  private end = 0
  /** A large frame being received straight into a buffer of its own size (no growing buffer,
   * no copy out of it): allocated without zeroing, so its memory is touched only as chunks
   * arrive, spread over the reads instead of one long step (fresh memory is slow on some VMs). */
  private large: { readonly frame: Uint8Array; filled: number } | null = null
  /** Large frames their consumer handed back (`recycle`), reused for the next large frame of
   * the same size: a snapshot's chunks all have one size, and fresh memory costs ~0.9 ms per MiB
   * on the dev VM (a 1 GiB join paid it once per chunk). At most `recycledFramesMax`. */
  private readonly recycled: Array<Uint8Array> = []

  /** May be changed between frames, e.g. raised once a handshake has succeeded. */
  constructor(public frameBytesMax: number) {
    assert(Number.isSafeInteger(frameBytesMax) && frameBytesMax > 0 && frameBytesMax <= frameBytesLimit, "0 < frameBytesMax < 2^32")
  }

  get bufferedBytes(): number {
    return this.end - this.start + (this.large?.filled ?? 0)
  }

  push(chunk: Uint8Array): void {
    const large = this.large
    if (large !== null && large.filled < large.frame.byteLength) {
      const n = Math.min(chunk.byteLength, large.frame.byteLength - large.filled)
      large.frame.set(chunk.subarray(0, n), large.filled)
      large.filled += n
      chunk = chunk.subarray(n)
    }
    if (chunk.byteLength === 0) return
    if (this.end + chunk.byteLength > this.buffer.byteLength) this.makeRoom(chunk.byteLength)
    this.buffer.set(chunk, this.end)
    this.end += chunk.byteLength
  }

  /** The next whole frame's payload; `null` when more bytes are needed. */
  next(): Either.Either<Uint8Array | null, FrameError> {
    const large = this.large
    if (large !== null) {
      if (large.filled < large.frame.byteLength) return Either.right(null)
      this.large = null
      return Either.right(large.frame)
    }
    if (this.bufferedBytes < lengthPrefixBytes) return Either.right(null)
    const b = this.buffer
    const s = this.start
    const frameBytes = (b[s]! | (b[s + 1]! << 8) | (b[s + 2]! << 16)) + b[s + 3]! * 0x1000000
    if (frameBytes > this.frameBytesMax) return Either.left(new FrameTooLarge({ frameBytes, frameBytesMax: this.frameBytesMax }))
    if (frameBytes === 0) return Either.left(new MalformedFrame({ detail: "empty frame" }))
    if (this.bufferedBytes < lengthPrefixBytes + frameBytes) {
      if (frameBytes >= largeFrameBytes) this.receiveLarge(frameBytes)
      return Either.right(null)
    }
    this.start += lengthPrefixBytes
    return Either.right(this.take(frameBytes))
  }

  /** Moves the start of a large frame (everything buffered after its prefix) into a buffer of
   * the frame's size, which `push` fills from then on. */
  private receiveLarge(frameBytes: number): void {
    const reuse = this.recycled.findIndex((frame) => frame.byteLength === frameBytes)
    const frame = reuse >= 0 ? this.recycled.splice(reuse, 1)[0]! : new Uint8Array(Buffer.allocUnsafeSlow(frameBytes).buffer, 0, frameBytes)
    const have = this.end - this.start - lengthPrefixBytes
    assert(have >= 0 && have < frameBytes, "a large frame starts with part of it buffered")
    frame.set(this.buffer.subarray(this.start + lengthPrefixBytes, this.end), 0)
    this.large = { frame, filled: have }
    this.reset()
  }

  /** Hands back a large frame this decoder returned, once nothing refers to its bytes any more
   * (the caller's promise): it may be filled again by a later frame. Others are ignored. */
  recycle(frame: Uint8Array): void {
    if (frame.byteLength < largeFrameBytes || frame.byteOffset !== 0 || frame.byteLength !== frame.buffer.byteLength) return
    if (this.recycled.length >= recycledFramesMax || this.recycled.includes(frame)) return
    this.recycled.push(frame)
  }

  /** Removes and returns the first `n` buffered bytes (a copy). Requires `n <= bufferedBytes`. */
  take(n: number): Uint8Array {
    assert(this.large === null, "no large frame in progress (take is for handshakes)")
    assert(n >= 0 && n <= this.bufferedBytes, "take no more than is buffered")
    const out = this.buffer.slice(this.start, this.start + n)
    this.start += n
    if (this.start === this.end) this.reset()
    return out
  }

  /** Removes and returns everything buffered (a copy). */
  takeAll(): Uint8Array {
    return this.take(this.bufferedBytes)
  }

  private reset(): void {
    this.start = 0
    this.end = 0
    if (this.buffer.byteLength > retainedBufferBytesMax) this.buffer = new Uint8Array(0)
  }

  /** Compacts when that makes room, else grows (at least doubling, so growth is amortized). */
  private makeRoom(incomingBytes: number): void {
    const keptBytes = this.bufferedBytes
    const neededBytes = keptBytes + incomingBytes
    if (neededBytes <= this.buffer.byteLength) {
      this.buffer.copyWithin(0, this.start, this.end)
    } else {
      const grown = new Uint8Array(Math.max(neededBytes, initialBufferBytes, this.buffer.byteLength * 2))
      grown.set(this.buffer.subarray(this.start, this.end))
      this.buffer = grown
    }
    this.start = 0
    this.end = keptBytes
  }
}

/** One frame's payload as the buffers to write, in order, after its length prefix: never copied
 * together (a data chunk's bytes are a view of an entry's data, as the Raft core holds it). */
export interface PackedFrame {
  readonly parts: ReadonlyArray<Uint8Array>
  readonly byteLength: number
  /** Called once the socket has handed every part to the kernel (or was destroyed first): a
   * sender may reuse the parts' memory from then on (snapshot chunks, snapshots.ts). */
  readonly written?: () => void
}

export interface FramePacker {
  /** One frame's payload, all msgpack. Frames of a connection must be sent in the order packed. */
  readonly pack: (frame: PeerFrame) => Uint8Array
  /** One frame as the buffers to write: an AppendEntries carrying at least `inlineDataBytes` of
   * command data is an inline data frame (its entries' data are parts of their own, views of the
   * entries: packed for no follower, the same bytes for all), any other frame `pack`'s one part. */
  readonly packFrame: (frame: PeerFrame) => PackedFrame
  /** A Message whose entries carry at least `outOfBandDataBytes` of command data, as a data
   * message (see below): its header frame, and its entries' data to send in chunk frames
   * (`dataChunkFrame`) right after, in order. Null for any other frame (use `pack`). */
  readonly packData: (frame: PeerFrame) => { readonly header: Uint8Array; readonly data: ReadonlyArray<Uint8Array> } | null
}

export interface FrameUnpacker {
  /** Decodes and checks one payload; frames of a connection must be unpacked in order. A data
   * message's header or chunk is not a frame of its own: see `receive`. */
  readonly unpack: (payload: Uint8Array) => Either.Either<PeerFrame, MalformedFrame>
  /** Like `unpack`, and assembles data messages: null while one is incomplete (its header and
   * chunks so far are kept), the whole Message once its last chunk arrived. */
  readonly receive: (payload: Uint8Array) => Either.Either<PeerFrame | null, MalformedFrame>
}

// ---------------------------------------------------------------------------------------------
// Data messages: a Message with large entries, their data in chunks beside other frames
//
// msgpackr copies every byte it packs into its own buffer: measured on the dev VM, packing a
// 20 MiB entry took 550-680 ms of the event loop, once per follower, in one piece; and a 20 MiB
// frame, however written, holds every frame behind it (heartbeats included) until it is read:
// 1.6-2 s on the loaded VM, long enough for the leader to lose its quorum (issue 17). So a
// Message carrying at least `outOfBandDataBytes` of command data is sent as
//   header frame  u8 0xc1 | msgpackr {_tag: "Message", message, dataBytes}
//                 (this connection's codec; every command entry's data replaced by an empty one,
//                 `dataBytes` their lengths in order)
//   chunk frames  u8 0xc2 | the next bytes of the entries' data, concatenated in order
// Other frames (never an AppendEntries or a snapshot: PeerLink holds those back) may come between
// the chunks, so heartbeats keep flowing. 0xc1 is the one byte msgpack never uses and 0xc2 is
// `false`, which no frame is: neither starts a msgpack frame. One data message at a time per
// connection; its data is at most `dataBytesMax` (the frame bound: what a receiver assembles).

/** The first byte of a data message's header frame and of its chunk frames. */
export const dataHeaderMarker = 0xc1
export const dataChunkMarker = 0xc2
/** Messages with at least this much command data are sent as data messages. */
export const outOfBandDataBytes = 256 * 1024
const emptyData = new Uint8Array(0)
const dataChunkPrefix = Uint8Array.of(dataChunkMarker)

/** Bytes of command data an AppendEntries carries. */
export function commandDataBytes(message: Message): number {
  if (message._tag !== "AppendEntries") return 0
  let bytes = 0
  for (const entry of message.entries) if (entry.kind === "command") bytes += entry.data.byteLength
  return bytes
}

/** A chunk frame carrying `data` (a view: not copied). */
export function dataChunkFrame(data: Uint8Array): PackedFrame {
  return { parts: [dataChunkPrefix, data], byteLength: 1 + data.byteLength }
}

// ---------------------------------------------------------------------------------------------
// Inline data frames: an append's entries' data after its header, in one frame
//
// msgpackr copies every byte it packs, and a packer is per connection (its record structures
// are): packing an append of ~100 pages copied them once per follower, ~6 % of a busy leader's
// main thread under kvwrite ×64 (issue 12). So an AppendEntries with at least `inlineDataBytes`
// of command data (below `outOfBandDataBytes`, or small enough to be written in place) is
//   u8 0xc3 | u32 LE headerBytes | msgpackr {_tag: "Message", message, dataBytes} | data
// the header as in a data message (this connection's codec, every command's data emptied,
// `dataBytes` their lengths), then the entries' data concatenated. Only the header is packed per
// follower; the data parts are the entries' own bytes, written by reference (a writev). The
// receiver views each entry's data inside the frame (no copy). 0xc3 is msgpack `true`, which no
// frame is.

/** The first byte of an inline data frame. */
export const inlineDataMarker = 0xc3
/** Appends with at least this much command data are inline data frames: below it the copy is
 * cheaper than a writev part per entry. */
export const inlineDataBytes = 16 * 1024
const inlinePrefixBytes = 5
/** Consecutive entries' data smaller than this are copied into one part (fewer writev parts). */
const inlinePartBytesMin = 4 * 1024

function packInline(packr: Packr, message: Message & { readonly _tag: "AppendEntries" }): PackedFrame {
  const { data, header } = packHeaderOf(packr, message)
  const prefix = Buffer.allocUnsafe(inlinePrefixBytes + header.byteLength)
  prefix[0] = inlineDataMarker
  prefix.writeUInt32LE(header.byteLength, 1)
  prefix.set(header, inlinePrefixBytes)
  const parts: Array<Uint8Array> = [prefix]
  let byteLength = prefix.byteLength
  let small: Array<Uint8Array> = []
  const flushSmall = () => {
    if (small.length === 1) parts.push(small[0]!)
    else if (small.length > 1) parts.push(Buffer.concat(small))
    small = []
  }
  for (const part of data) {
    byteLength += part.byteLength
    if (part.byteLength < inlinePartBytesMin) {
      small.push(part)
      continue
    }
    flushSmall()
    parts.push(part)
  }
  flushSmall()
  return { parts, byteLength }
}

/** A data message's or an inline frame's header: the message with every command's data emptied,
 * and the non-empty data in order. */
function packHeaderOf(packr: Packr, message: Message & { readonly _tag: "AppendEntries" }): { header: Uint8Array; data: Array<Uint8Array> } {
  const dataBytes: Array<number> = []
  const data: Array<Uint8Array> = []
  const entries = message.entries.map((entry) => {
    if (entry.kind !== "command") return entry
    dataBytes.push(entry.data.byteLength)
    if (entry.data.byteLength > 0) data.push(entry.data)
    return { ...entry, data: emptyData }
  })
  const header = packr.pack({ _tag: "Message", message: { ...message, entries }, dataBytes }) as Uint8Array
  return { header, data }
}

function packDataHeader(packr: Packr, message: Message & { readonly _tag: "AppendEntries" }): { header: Uint8Array; data: Array<Uint8Array> } {
  const { data, header: packed } = packHeaderOf(packr, message)
  const header = new Uint8Array(1 + packed.byteLength)
  header[0] = dataHeaderMarker
  header.set(packed, 1)
  return { header, data }
}

// ---------------------------------------------------------------------------------------------
// Snapshot chunks: raw bytes behind a fixed header (peer protocol 4)
//
//   u8 0xc0 | f64 transfer | f64 offset | the data
//
// msgpackr copied each chunk into fresh memory on the sender, and that copy was the largest
// single cost of a transfer (fresh memory is ~0.9 ms/MiB on the dev VM, issue 17's join). Written
// as a header and a view of the read buffer (one writev); received as a view of the frame. 0xc0 is
// msgpack's nil, which no frame is (0xc1-0xc3 mark data messages and inline data frames).
export const snapshotChunkMarker = 0xc0
export const snapshotChunkHeaderBytes = 17

/** A chunk frame carrying `data` (a view: not copied); `written` as in PackedFrame. */
export function snapshotChunkFrame(transfer: number, offset: number, data: Uint8Array, written?: () => void): PackedFrame {
  assert(Number.isSafeInteger(transfer) && transfer >= 0 && Number.isSafeInteger(offset) && offset >= 0, "a chunk's transfer and offset are counts")
  const header = new Uint8Array(snapshotChunkHeaderBytes)
  const view = new DataView(header.buffer)
  header[0] = snapshotChunkMarker
  view.setFloat64(1, transfer, true)
  view.setFloat64(9, offset, true)
  const parts = [header, data]
  const byteLength = snapshotChunkHeaderBytes + data.byteLength
  return written === undefined ? { parts, byteLength } : { parts, byteLength, written }
}

/** A chunk frame's payload as a SnapshotChunk whose data views the payload. */
export function decodeSnapshotChunk(payload: Uint8Array): Either.Either<PeerFrame, MalformedFrame> {
  if (payload.byteLength <= snapshotChunkHeaderBytes) return Either.left(new MalformedFrame({ detail: `a snapshot chunk frame of ${payload.byteLength} bytes carries no data` }))
  const view = new DataView(payload.buffer, payload.byteOffset, snapshotChunkHeaderBytes)
  const transfer = view.getFloat64(1, true)
  const offset = view.getFloat64(9, true)
  if (!isCount(transfer) || !isCount(offset)) return Either.left(new MalformedFrame({ detail: "snapshot chunk has a bad transfer or offset" }))
  return Either.right({ _tag: "SnapshotChunk", transfer, offset, data: payload.subarray(snapshotChunkHeaderBytes) })
}

interface Assembling {
  readonly message: Message & { readonly _tag: "AppendEntries" }
  readonly dataBytes: ReadonlyArray<number>
  readonly data: Uint8Array
  filled: number
}

/** The Message of a complete data message, its command entries' data viewing `assembled.data`. */
function assembled(assembling: Assembling): PeerFrame {
  let at = 0
  let next = 0
  const entries = assembling.message.entries.map((entry) => {
    if (entry.kind !== "command") return entry
    const length = assembling.dataBytes[next++]!
    const data = assembling.data.subarray(at, at + length)
    at += length
    return { ...entry, data }
  })
  return { _tag: "Message", message: { ...assembling.message, entries } }
}

// ---------------------------------------------------------------------------------------------
// msgpackr encoding of frames

// msgpackr stores the record structures in the options object it is given (`structures`), so
// every codec gets its own copy: a shared one would share structures across connections.
const codecOptions = () => ({
  useRecords: true,
  sequential: true,
  // A u64/i64 on the wire (only a foreign encoder writes one) becomes a number, never a bigint.
  int64AsType: "number",
  mapsAsObjects: true,
  // Uint8Array and Buffer are written as msgpack bin and read back as Buffer (a Uint8Array).
  moreTypes: false
} as const)

/** A fresh encoder for one connection. */
export function makePacker(): FramePacker {
  const packr = new Packr(codecOptions())
  const pack = (frame: PeerFrame) => packr.pack(frame) as Uint8Array
  return {
    pack,
    packFrame: (frame) => {
      if (frame._tag === "Message" && frame.message._tag === "AppendEntries" && commandDataBytes(frame.message) >= inlineDataBytes) {
        return packInline(packr, frame.message)
      }
      const packed = pack(frame)
      return { parts: [packed], byteLength: packed.byteLength }
    },
    packData: (frame) =>
      frame._tag === "Message" && frame.message._tag === "AppendEntries" && commandDataBytes(frame.message) >= outOfBandDataBytes
        ? packDataHeader(packr, frame.message)
        : null
  }
}

/** A fresh decoder for one connection; a data message's data may total `dataBytesMax`. */
export function makeUnpacker(dataBytesMax: number = frameBytesLimit): FrameUnpacker {
  const unpackr = new Unpackr(codecOptions())
  let assembling: Assembling | null = null
  const malformed = (detail: string) => Either.left(new MalformedFrame({ detail }))
  const unpack = (payload: Uint8Array): Either.Either<PeerFrame, MalformedFrame> => {
    if (payload[0] === snapshotChunkMarker) return decodeSnapshotChunk(payload)
    let value: unknown
    try {
      value = unpackr.unpack(payload)
    } catch (cause) {
      return Either.left(new MalformedFrame({ detail: `not msgpack (${printable(String(cause))})`, cause }))
    }
    const problem = frameProblem(value)
    return problem === null ? Either.right(value as PeerFrame) : Either.left(new MalformedFrame({ detail: problem }))
  }
  /** A data message's or an inline frame's header, checked: the message and its data sizes. */
  const headerOf = (bytes: Uint8Array, what: string): Either.Either<{ message: Message & { readonly _tag: "AppendEntries" }; dataBytes: Array<number>; total: number }, MalformedFrame> => {
    let value: unknown
    try {
      value = unpackr.unpack(bytes)
    } catch (cause) {
      return Either.left(new MalformedFrame({ detail: `${what} header is not msgpack (${printable(String(cause))})`, cause }))
    }
    const fields = value as { _tag?: unknown; message?: unknown; dataBytes?: unknown } | null
    const dataBytes = fields?.dataBytes
    if (fields?._tag !== "Message" || !Array.isArray(dataBytes) || !dataBytes.every(isCount)) return malformed(`${what} header is not a Message with data sizes`)
    const problem = messageProblem(fields.message)
    if (problem !== null) return malformed(problem)
    const message = fields.message as Message
    if (message._tag !== "AppendEntries") return malformed(`${what} carries a ${message._tag}`)
    const commands = message.entries.filter((entry) => entry.kind === "command").length
    const total = (dataBytes as Array<number>).reduce((sum, n) => sum + n, 0)
    if (commands !== dataBytes.length) return malformed(`${what} has ${dataBytes.length} sizes for ${commands} commands`)
    if (total > dataBytesMax) return malformed(`${what} of ${total} bytes exceeds the ${dataBytesMax} allowed`)
    return Either.right({ message, dataBytes: dataBytes as Array<number>, total })
  }
  const header = (payload: Uint8Array): Either.Either<PeerFrame | null, MalformedFrame> => {
    if (assembling !== null) return malformed("a data message began before the last one ended")
    const parsed = headerOf(payload.subarray(1), "data message")
    if (Either.isLeft(parsed)) return Either.left(parsed.left)
    const { dataBytes, message, total } = parsed.right
    // Not zeroed: every byte is written by a chunk before the message is delivered.
    const data = new Uint8Array(Buffer.allocUnsafeSlow(total).buffer, 0, total)
    const started: Assembling = { message, dataBytes, data, filled: 0 }
    if (total === 0) return Either.right(assembled(started))
    assembling = started
    return Either.right(null)
  }
  /** An inline data frame: its entries' data are views of the payload (which the frame decoder
   * handed over whole: nothing else writes to it). */
  const inline = (payload: Uint8Array): Either.Either<PeerFrame, MalformedFrame> => {
    if (assembling !== null) return malformed("an AppendEntries inside a data message")
    if (payload.byteLength < inlinePrefixBytes) return malformed("inline data frame shorter than its prefix")
    const headerBytes = payload[1]! | (payload[2]! << 8) | (payload[3]! << 16) | (payload[4]! * 0x1000000)
    const dataAt = inlinePrefixBytes + headerBytes
    if (headerBytes === 0 || dataAt > payload.byteLength) return malformed(`inline data frame header of ${headerBytes} bytes in a frame of ${payload.byteLength}`)
    const parsed = headerOf(payload.subarray(inlinePrefixBytes, dataAt), "inline data frame")
    if (Either.isLeft(parsed)) return Either.left(parsed.left)
    const { dataBytes, message, total } = parsed.right
    if (total !== payload.byteLength - dataAt) return malformed(`inline data frame announces ${total} data bytes and carries ${payload.byteLength - dataAt}`)
    return Either.right(assembled({ message, dataBytes, data: payload.subarray(dataAt), filled: total }))
  }
  const chunk = (payload: Uint8Array): Either.Either<PeerFrame | null, MalformedFrame> => {
    const current = assembling
    if (current === null) return malformed("a data chunk without a data message")
    const bytes = payload.byteLength - 1
    if (bytes === 0 || current.filled + bytes > current.data.byteLength) return malformed(`a data chunk of ${bytes} bytes past the message's ${current.data.byteLength}`)
    current.data.set(payload.subarray(1), current.filled)
    current.filled += bytes
    if (current.filled < current.data.byteLength) return Either.right(null)
    assembling = null
    return Either.right(assembled(current))
  }
  return {
    unpack,
    receive: (payload) => {
      if (payload[0] === inlineDataMarker) return inline(payload)
      if (payload[0] === dataHeaderMarker) return header(payload)
      if (payload[0] === dataChunkMarker) return chunk(payload)
      if (assembling !== null) {
        // Only messages that may overtake an AppendEntries come between the chunks.
        const frame = unpack(payload)
        if (Either.isRight(frame) && frame.right._tag === "Message" && frame.right.message._tag === "AppendEntries") return malformed("an AppendEntries inside a data message")
        if (Either.isRight(frame) && frame.right._tag !== "Message") return malformed("a snapshot frame inside a data message")
        return frame
      }
      return unpack(payload)
    }
  }
}

/** Error texts of a decoder may quote the bytes: keep log lines short and printable. */
export function printable(text: string, lengthMax = 100): string {
  const clean = text.replace(/[^\x20-\x7e]/g, "?")
  return clean.length > lengthMax ? `${clean.slice(0, lengthMax)}…` : clean
}

const isCount = (value: unknown): value is number => typeof value === "number" && Number.isSafeInteger(value) && value >= 0

/** What is wrong with a decoded value as a PeerFrame, or null. */
export function frameProblem(value: unknown): string | null {
  if (typeof value !== "object" || value === null) return "frame is not a record"
  const frame = value as Record<string, unknown>
  switch (frame["_tag"]) {
    case "Message":
      return messageProblem(frame["message"])
    case "SnapshotBegin": {
      if (!isCount(frame["transfer"]) || !isCount(frame["totalBytes"]) || !isCount(frame["crc32c"]) || (frame["crc32c"] as number) > 0xffffffff) {
        return "snapshot header has a bad transfer, size or checksum"
      }
      const message = frame["message"] as Record<string, unknown> | null
      return messageProblem(message) ?? (message?.["_tag"] === "InstallSnapshot" ? null : "snapshot header carries no InstallSnapshot")
    }
    case "SnapshotChunk":
      if (!isCount(frame["transfer"]) || !isCount(frame["offset"])) return "snapshot chunk has a bad transfer or offset"
      return frame["data"] instanceof Uint8Array ? null : "snapshot chunk data is not bytes"
    default:
      return `frame tag ${String(frame["_tag"])} is unknown`
  }
}

/** A rough size of what an envelope holds in memory, for the outbound queue's byte bound. */
export function envelopeSizeBytes(envelope: Envelope): number {
  const message = envelope.message
  let bytes = 64
  if (message._tag === "AppendEntries") for (const entry of message.entries) bytes += entrySizeBytes(entry)
  // Snapshot data is read from its file a chunk at a time as it is sent: it takes no queue room.
  return bytes
}
