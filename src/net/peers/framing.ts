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
const initialBufferBytes = 64 * 1024

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

  /** May be changed between frames, e.g. raised once a handshake has succeeded. */
  constructor(public frameBytesMax: number) {
    assert(Number.isSafeInteger(frameBytesMax) && frameBytesMax > 0 && frameBytesMax <= frameBytesLimit, "0 < frameBytesMax < 2^32")
  }

  get bufferedBytes(): number {
    return this.end - this.start
  }

  push(chunk: Uint8Array): void {
    if (chunk.byteLength === 0) return
    if (this.end + chunk.byteLength > this.buffer.byteLength) this.makeRoom(chunk.byteLength)
    this.buffer.set(chunk, this.end)
    this.end += chunk.byteLength
  }

  /** The next whole frame's payload; `null` when more bytes are needed. */
  next(): Either.Either<Uint8Array | null, FrameError> {
    if (this.bufferedBytes < lengthPrefixBytes) return Either.right(null)
    const b = this.buffer
    const s = this.start
    const frameBytes = (b[s]! | (b[s + 1]! << 8) | (b[s + 2]! << 16)) + b[s + 3]! * 0x1000000
    if (frameBytes > this.frameBytesMax) return Either.left(new FrameTooLarge({ frameBytes, frameBytesMax: this.frameBytesMax }))
    if (frameBytes === 0) return Either.left(new MalformedFrame({ detail: "empty frame" }))
    if (this.bufferedBytes < lengthPrefixBytes + frameBytes) return Either.right(null)
    this.start += lengthPrefixBytes
    return Either.right(this.take(frameBytes))
  }

  /** Removes and returns the first `n` buffered bytes (a copy). Requires `n <= bufferedBytes`. */
  take(n: number): Uint8Array {
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

export interface FramePacker {
  /** One frame's payload. Frames of a connection must be sent in the order packed. */
  readonly pack: (frame: PeerFrame) => Uint8Array
}

export interface FrameUnpacker {
  /** Decodes and checks one payload; frames of a connection must be unpacked in order. */
  readonly unpack: (payload: Uint8Array) => Either.Either<PeerFrame, MalformedFrame>
}

/** A fresh encoder for one connection. */
export function makePacker(): FramePacker {
  const packr = new Packr(codecOptions())
  return { pack: (frame) => packr.pack(frame) }
}

/** A fresh decoder for one connection. */
export function makeUnpacker(): FrameUnpacker {
  const unpackr = new Unpackr(codecOptions())
  return {
    unpack: (payload) => {
      let value: unknown
      try {
        value = unpackr.unpack(payload)
      } catch (cause) {
        return Either.left(new MalformedFrame({ detail: `not msgpack (${printable(String(cause))})`, cause }))
      }
      const problem = frameProblem(value)
      return problem === null ? Either.right(value as PeerFrame) : Either.left(new MalformedFrame({ detail: problem }))
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
