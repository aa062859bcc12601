// Message framing: the 8-byte header, whole messages, the protocol version word, and a streaming
// decoder that accepts arbitrary chunks of a byte stream and yields whole messages.
//
// Header layout: bytes 0–3 body length in words (u32 LE), 4 type, 5 schema, 6–7 unused (written
// as 0, ignored on input).

import { assert } from "../../assert.ts"
import { ProtocolVersion, headerBytes, wordBytes } from "./codes.ts"
import { WireError } from "./errors.ts"

export interface MessageHeader {
  /** Body length in words; the body has 8 × this many bytes. */
  readonly bodyWords: number
  readonly type: number
  readonly schema: number
}

/** One whole message: its type, its schema and its body (a whole number of words). */
export interface Frame {
  readonly type: number
  readonly schema: number
  readonly body: Uint8Array
}

/** Default cap on a whole message (header + body). dqlite itself has none below 4 GiB; a cap
 * keeps a hostile or broken peer from making us buffer gigabytes. */
export const messageBytesMaxDefault = 64 * 1024 * 1024
/** The largest message the header can describe: 8 + 8 × (2^32 − 1) bytes. */
export const messageBytesMaxLimit = headerBytes + wordBytes * 0xffffffff

export function encodeHeader(header: MessageHeader): Uint8Array {
  assert(Number.isInteger(header.bodyWords) && header.bodyWords >= 0 && header.bodyWords <= 0xffffffff, "body words fit a u32")
  assert(Number.isInteger(header.type) && header.type >= 0 && header.type <= 0xff, "type fits a u8")
  assert(Number.isInteger(header.schema) && header.schema >= 0 && header.schema <= 0xff, "schema fits a u8")
  const bytes = new Uint8Array(headerBytes)
  const view = new DataView(bytes.buffer)
  view.setUint32(0, header.bodyWords, true)
  view.setUint8(4, header.type)
  view.setUint8(5, header.schema)
  return bytes
}

/** Decode the first 8 bytes of `bytes` as a header; the unused bytes 6–7 are ignored. */
export function decodeHeader(bytes: Uint8Array): MessageHeader {
  if (bytes.byteLength < headerBytes) {
    throw new WireError("Truncated", "header", `${bytes.byteLength} of ${headerBytes} bytes`)
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, headerBytes)
  return { bodyWords: view.getUint32(0, true), type: view.getUint8(4), schema: view.getUint8(5) }
}

/** Header + body as one buffer. The body must be whole words. */
export function encodeFrame(frame: Frame): Uint8Array {
  if (frame.body.byteLength % wordBytes !== 0) {
    throw new WireError("Unencodable", "body", `${frame.body.byteLength} bytes is not whole words`)
  }
  const bytes = new Uint8Array(headerBytes + frame.body.byteLength)
  bytes.set(encodeHeader({ bodyWords: frame.body.byteLength / wordBytes, type: frame.type, schema: frame.schema }))
  bytes.set(frame.body, headerBytes)
  return bytes
}

/** The message at the start of `bytes` as a frame (anything after it is not looked at). */
export function decodeFrame(bytes: Uint8Array, messageBytesMax = messageBytesMaxDefault): Frame {
  const header = decodeHeader(bytes)
  const messageBytes = headerBytes + header.bodyWords * wordBytes
  checkMessageSize(messageBytes, messageBytesMax)
  if (bytes.byteLength < messageBytes) {
    throw new WireError("Truncated", "body", `header announces ${messageBytes} bytes, got ${bytes.byteLength}`)
  }
  return { type: header.type, schema: header.schema, body: bytes.slice(headerBytes, messageBytes) }
}

function checkMessageSize(messageBytes: number, messageBytesMax: number): void {
  if (messageBytes > messageBytesMax) {
    throw new WireError("TooLarge", "header", `message of ${messageBytes} bytes exceeds the maximum ${messageBytesMax}`)
  }
}

// ---------------------------------------------------------------------------------------------
// Protocol version word

/** The first word of a connection. */
export type ProtocolVersionWord =
  | { readonly kind: "v1" }
  | { readonly kind: "legacy" }
  | { readonly kind: "unknown"; readonly value: bigint }

export function encodeProtocolVersion(version: "v1" | "legacy"): Uint8Array {
  const bytes = new Uint8Array(wordBytes)
  new DataView(bytes.buffer).setBigUint64(0, version === "v1" ? ProtocolVersion.one : ProtocolVersion.legacy, true)
  return bytes
}

export function decodeProtocolVersion(word: Uint8Array): ProtocolVersionWord {
  if (word.byteLength < wordBytes) {
    throw new WireError("Truncated", "protocol version", `${word.byteLength} of ${wordBytes} bytes`)
  }
  const value = new DataView(word.buffer, word.byteOffset, wordBytes).getBigUint64(0, true)
  if (value === ProtocolVersion.one) return { kind: "v1" }
  if (value === ProtocolVersion.legacy) return { kind: "legacy" }
  return { kind: "unknown", value }
}

// ---------------------------------------------------------------------------------------------
// Streaming decoder

export interface FrameDecoderOptions {
  /** Largest whole message (header + body) accepted; a header announcing more throws
   * `WireError("TooLarge")` as soon as its 8 bytes have arrived, before any body is buffered. */
  readonly messageBytesMax?: number
}

/** Turns a byte stream, pushed in chunks of any size, into whole messages.
 *
 * Usage: `push(chunk)` then pull with `next()` (or iterate `frames()`) until it returns
 * `undefined`. `nextWord()` pulls one raw word instead — the protocol version at the start of a
 * connection, which may arrive in the same chunk as the first request. Errors are sticky: after a
 * `TooLarge` header the stream cannot be resynchronised, so every later call throws the same
 * error. The decoder keeps references to pushed chunks until consumed (do not mutate them); it
 * buffers whatever is pushed, so the caller bounds it by pulling before pushing more. */
export class FrameDecoder {
  readonly messageBytesMax: number
  private readonly chunks: Array<Uint8Array> = []
  /** Index in `chunks` of the first unconsumed chunk, and bytes consumed of it. */
  private chunkIndex = 0
  private chunkOffset = 0
  private buffered = 0
  private pendingHeader: MessageHeader | undefined = undefined
  private failure: WireError | undefined = undefined
  /** Body bytes of a streamed message (`startStreamedBody`) not taken yet. */
  private streamedBodyLeft = 0

  constructor(options: FrameDecoderOptions = {}) {
    const messageBytesMax = options.messageBytesMax ?? messageBytesMaxDefault
    assert(Number.isSafeInteger(messageBytesMax), "messageBytesMax is an integer")
    assert(messageBytesMax >= headerBytes + wordBytes, "messageBytesMax admits a one-word body")
    assert(messageBytesMax <= messageBytesMaxLimit, "messageBytesMax is within what a header can announce")
    this.messageBytesMax = messageBytesMax
  }

  /** Bytes pushed and not yet returned (including a header already parsed). */
  get bufferedBytes(): number {
    return this.buffered + (this.pendingHeader === undefined ? 0 : headerBytes)
  }

  push(chunk: Uint8Array): void {
    if (this.failure !== undefined) throw this.failure
    if (chunk.byteLength === 0) return
    this.chunks.push(chunk)
    this.buffered += chunk.byteLength
  }

  /** One raw word (the protocol version), or `undefined` until 8 bytes are buffered. Only valid
   * between messages. */
  nextWord(): Uint8Array | undefined {
    if (this.failure !== undefined) throw this.failure
    assert(this.pendingHeader === undefined && this.streamedBodyLeft === 0, "nextWord is only called between messages")
    return this.buffered < wordBytes ? undefined : this.take(wordBytes)
  }

  /** The next whole message, or `undefined` until all of it has arrived. */
  next(): Frame | undefined {
    if (this.failure !== undefined) throw this.failure
    assert(this.streamedBodyLeft === 0, "a streamed body is taken whole before the next message")
    if (this.pendingHeader === undefined) {
      if (this.buffered < headerBytes) return undefined
      const header = decodeHeader(this.take(headerBytes))
      try {
        checkMessageSize(headerBytes + header.bodyWords * wordBytes, this.messageBytesMax)
      } catch (error) {
        this.failure = error as WireError
        throw error
      }
      this.pendingHeader = header
    }
    const header = this.pendingHeader
    const bodyBytes = header.bodyWords * wordBytes
    if (this.buffered < bodyBytes) return undefined
    this.pendingHeader = undefined
    return { type: header.type, schema: header.schema, body: this.take(bodyBytes) }
  }

  // Streamed messages: a FILES answer holds whole database files, bounded only by what its header
  // can announce. Its body is taken piece by piece as it arrives instead of whole, so what is
  // buffered stays one socket read or so, whatever the message's size.

  /** The next message's header once its 8 bytes have arrived, left in place (no size check:
   * the caller decides between `next` and `startStreamedBody`). Only valid between messages. */
  peekHeader(): MessageHeader | undefined {
    if (this.failure !== undefined) throw this.failure
    assert(this.pendingHeader === undefined && this.streamedBodyLeft === 0, "peekHeader is only called between messages")
    if (this.buffered < headerBytes) return undefined
    return decodeHeader(this.copyFront(headerBytes, false))
  }

  /** Takes the header `peekHeader` returned and makes its body a streamed one: taken with
   * `takeBodyBytes` / `takeBodySlice` until `streamedBodyBytesLeft` is 0, and not bounded by
   * `messageBytesMax` (the caller bounds what it keeps of each piece). */
  startStreamedBody(): MessageHeader {
    const header = this.peekHeader()
    assert(header !== undefined, "startStreamedBody follows a peekHeader that returned a header")
    this.take(headerBytes)
    this.streamedBodyLeft = header.bodyWords * wordBytes
    return header
  }

  /** Bytes of the streamed body not taken yet (buffered or still to arrive). */
  get streamedBodyBytesLeft(): number {
    return this.streamedBodyLeft
  }

  /** Bytes of the streamed body already buffered. */
  get streamedBodyBytesBuffered(): number {
    return Math.min(this.buffered, this.streamedBodyLeft)
  }

  /** Exactly `count` bytes of the streamed body, copied (small fields: a count, a name's word, a
   * size), or `undefined` until they have arrived. */
  takeBodyBytes(count: number): Uint8Array | undefined {
    if (this.failure !== undefined) throw this.failure
    assert(Number.isSafeInteger(count) && count >= 0 && count <= this.streamedBodyLeft, "takeBodyBytes stays within the streamed body")
    if (this.buffered < count) return undefined
    this.streamedBodyLeft -= count
    return this.take(count)
  }

  /** Up to `bytesMax` bytes of the streamed body as they arrived: a view of one pushed chunk, not
   * a copy (the decoder never writes to a chunk); `undefined` when none is buffered. */
  takeBodySlice(bytesMax: number): Uint8Array | undefined {
    if (this.failure !== undefined) throw this.failure
    assert(Number.isSafeInteger(bytesMax) && bytesMax >= 1, "takeBodySlice takes at least a byte")
    if (this.buffered === 0 || this.streamedBodyLeft === 0) return undefined
    const chunk = this.chunks[this.chunkIndex]
    assert(chunk !== undefined, "buffered bytes are backed by chunks")
    const count = Math.min(chunk.byteLength - this.chunkOffset, bytesMax, this.streamedBodyLeft)
    const slice = chunk.subarray(this.chunkOffset, this.chunkOffset + count)
    this.chunkOffset += count
    if (this.chunkOffset === chunk.byteLength) {
      this.chunkIndex += 1
      this.chunkOffset = 0
    }
    this.buffered -= count
    this.streamedBodyLeft -= count
    this.compact()
    return slice
  }

  /** Every whole message buffered so far. */
  *frames(): Generator<Frame, void, undefined> {
    for (;;) {
      const frame = this.next()
      if (frame === undefined) return
      yield frame
    }
  }

  /** Call at end of stream: throws `Truncated` if a partial message is left over. */
  finish(): void {
    if (this.failure !== undefined) throw this.failure
    if (this.bufferedBytes > 0) {
      throw new WireError("Truncated", "stream", `stream ended inside a message (${this.bufferedBytes} bytes buffered)`)
    }
  }

  /** Remove exactly `count` (≤ buffered) bytes from the front, copied into a fresh buffer. */
  private take(count: number): Uint8Array {
    return this.copyFront(count, true)
  }

  /** Copies the first `count` (≤ buffered) bytes into a fresh buffer; `consume` removes them. */
  private copyFront(count: number, consume: boolean): Uint8Array {
    assert(count <= this.buffered, "take only what is buffered")
    const out = new Uint8Array(count)
    let filled = 0
    let chunkIndex = this.chunkIndex
    let chunkOffset = this.chunkOffset
    while (filled < count) {
      const chunk = this.chunks[chunkIndex]
      assert(chunk !== undefined, "buffered bytes are backed by chunks")
      const available = chunk.byteLength - chunkOffset
      const used = Math.min(available, count - filled)
      out.set(chunk.subarray(chunkOffset, chunkOffset + used), filled)
      filled += used
      chunkOffset += used
      if (chunkOffset === chunk.byteLength) {
        chunkIndex += 1
        chunkOffset = 0
      }
    }
    if (consume) {
      this.chunkIndex = chunkIndex
      this.chunkOffset = chunkOffset
      this.buffered -= count
      this.compact()
    }
    return out
  }

  /** Drop consumed chunks in bulk so feeding one byte at a time stays linear. */
  private compact(): void {
    if (this.chunkIndex === this.chunks.length) {
      this.chunks.length = 0
      this.chunkIndex = 0
    } else if (this.chunkIndex >= 1024 && this.chunkIndex * 2 >= this.chunks.length) {
      this.chunks.splice(0, this.chunkIndex)
      this.chunkIndex = 0
    }
  }
}
