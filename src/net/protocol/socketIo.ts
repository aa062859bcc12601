// One dqlite-protocol byte stream (a TCP or TLS socket, or any Duplex) as Effects: pull-based
// reads through the codec's FrameDecoder, so the socket is read only when a message is wanted
// and TCP pushes back on a sender that runs ahead; writes that wait for the kernel buffer to
// drain, with a timeout. Used by both ends: the gateway (server) and the client.
//
// The stream is kept in paused mode and read with `read()`. An 'error' listener is attached at
// once: an unheard 'error' event would crash the process; errors surface as failed reads/writes.

import type { Duplex } from "node:stream"
import { Data, Duration, Effect } from "effect"
import type { Decoding } from "../streamIo.ts"
import { ChunkReader, drained, readDecodedFrom, WriteCoalescer } from "../streamIo.ts"
import { ResponseType, wordBytes } from "./codes.ts"
import { WireError } from "./errors.ts"
import type { FilesBodyReaderOptions, FilesPiece } from "./filesStream.ts"
import { FilesBodyReader } from "./filesStream.ts"
import type { Frame, MessageHeader } from "./framing.ts"
import { FrameDecoder } from "./framing.ts"

/** The stream ended, broke, or did not drain in time. `reason` says which. */
export class SocketError extends Data.TaggedError("SocketError")<{
  readonly reason: "Closed" | "Timeout"
  readonly detail: string
  readonly cause?: unknown
}> {}

/** A message could not be framed: its header announced more than the maximum (`TooLarge`), or the
 * stream ended inside one (`Truncated`). The stream cannot be used afterwards. */
export class FramingError extends Data.TaggedError("FramingError")<{ readonly error: WireError }> {}

const ignore = () => {}

const readFailed = (cause: unknown) => new SocketError({ reason: "Closed", detail: `read failed: ${String(cause)}`, cause })

const framingError = (error: unknown) => new FramingError({ error: error instanceof WireError ? error : new WireError("Truncated", "stream", String(error)) })

export interface FilesBodyOptions extends FilesBodyReaderOptions {
  /** The longest wait for the next bytes of the body: a server that stops sending mid-dump is
   * given up after this long (the caller bounds the whole read besides). */
  readonly idleTimeoutMs: number
}

export interface FrameStreamOptions {
  readonly messageBytesMax: number
  /** How long a write may wait for the other side to read before the stream is given up. */
  readonly writeTimeoutMs: number
}

export class FrameStream {
  readonly decoder: FrameDecoder
  /** A whole message taken off the stream by `pollFrame` and not handed out yet. */
  private pending: Frame | undefined = undefined
  /** The messages written within one turn leave in one syscall (a ROWS stream's batches, say). */
  private readonly coalescer: WriteCoalescer
  /** Listens for the stream's events once for its life, not once per message read. */
  private readonly chunks: ChunkReader

  constructor(readonly stream: Duplex, readonly options: FrameStreamOptions) {
    this.decoder = new FrameDecoder({ messageBytesMax: options.messageBytesMax })
    this.coalescer = new WriteCoalescer(stream)
    stream.on("error", ignore)
    stream.pause()
    this.chunks = new ChunkReader(stream)
  }

  get isOpen(): boolean {
    return !this.stream.destroyed && this.stream.writable
  }

  /** The read loop's view of the decoder: whole messages; a clean end between two. */
  private readonly frames: Decoding<Frame | null, SocketError | FramingError> = this.decodingOf(() => this.decoder.next(), "a message")

  /** The read loop's view of the decoder for the protocol version word. */
  private readonly words: Decoding<Uint8Array | null, SocketError> = {
    decoded: () => {
      const word = this.decoder.nextWord()
      return word !== undefined ? Effect.succeed(word) : null
    },
    push: (chunk) => this.decoder.push(chunk),
    ended: () => Effect.succeed(null),
    failed: readFailed
  }

  /** One raw word (the protocol version), or null if the stream ends first. */
  readonly readWord: Effect.Effect<Uint8Array | null, SocketError> = Effect.suspend(() => readDecodedFrom(this.chunks, this.words))

  /** The next whole message, or null when the stream ends cleanly between messages. A message
   * already buffered (or held by `pollFrame`) is handed out without a loop. */
  readonly readFrame: Effect.Effect<Frame | null, SocketError | FramingError> = Effect.suspend(() => {
    const held = this.pending
    if (held !== undefined) {
      this.pending = undefined
      return Effect.succeed(held)
    }
    return readDecodedFrom(this.chunks, this.frames)
  })

  /** `readFrame` as plain code, for a read loop run by callbacks (the gateway's): the next whole
   * message when it is buffered here or in the stream; undefined when a read must wait (then
   * `whenReadable`); or, at the stream's end or on a failure, the Effect `readFrame` would be
   * (null at a clean end between messages, else its failure). */
  takeFrameNow(): Frame | undefined | Effect.Effect<Frame | null, SocketError | FramingError> {
    const held = this.pending
    if (held !== undefined) {
      this.pending = undefined
      return held
    }
    for (;;) {
      let frame: Frame | undefined
      try {
        frame = this.decoder.next()
      } catch (error) {
        return Effect.fail(framingError(error))
      }
      if (frame !== undefined) return frame
      const read = this.chunks.now()
      if (read === null) return undefined
      switch (read._tag) {
        case "Chunk":
          this.decoder.push(read.chunk)
          break
        case "End":
          return this.frames.ended()
        case "Failed":
          return Effect.fail(readFailed(read.cause))
      }
    }
  }

  /** Calls `callback` once when the stream has something new (after `takeFrameNow` said wait). */
  whenReadable(callback: () => void): void {
    this.chunks.whenReadable(callback)
  }

  cancelWhenReadable(callback: () => void): void {
    this.chunks.cancelWhenReadable(callback)
  }

  /** The read loop's view of the decoder for a message's header, left in place. */
  private readonly headers: Decoding<MessageHeader | null, SocketError | FramingError> = this.decodingOf(() => this.decoder.peekHeader(), "a message header")

  /** The read loop's view of the decoder through `take` (a whole message, or a header left in
   * place): a clean end only between two messages. */
  private decodingOf<A>(take: () => A | undefined, inside: string): Decoding<A | null, SocketError | FramingError> {
    return {
      decoded: () => {
        let decoded: A | undefined
        try {
          decoded = take()
        } catch (error) {
          return Effect.fail(framingError(error))
        }
        return decoded !== undefined ? Effect.succeed(decoded) : null
      },
      push: (chunk) => this.decoder.push(chunk),
      ended: () =>
        this.decoder.bufferedBytes > 0
          ? Effect.fail(new FramingError({ error: new WireError("Truncated", "stream", `stream ended inside ${inside} (${this.decoder.bufferedBytes} bytes buffered)`) }))
          : Effect.succeed(null),
      failed: readFailed
    }
  }

  /** The next message's header once it has arrived, not taken: `readFrame` then reads the
   * message whole, or `readFilesBody` streams a FILES body. null at a clean end between messages. */
  readonly readHeader: Effect.Effect<MessageHeader | null, SocketError | FramingError> = Effect.suspend(() => {
    const held = this.pending
    if (held !== undefined) return Effect.succeed({ bodyWords: held.body.byteLength / wordBytes, type: held.type, schema: held.schema })
    return readDecodedFrom(this.chunks, this.headers)
  })

  /** Reads the FILES message whose header `readHeader` gave, handing its body to `sink` piece by
   * piece (FilesPiece: the count, then each file's name and size and its bytes in pieces of at
   * most `pieceBytesMax`, then the end). The socket is read only when the decoder has nothing to
   * give and `sink` has finished with the last piece: TCP holds the rest at the server, so what is
   * buffered here stays about one socket read, whatever the body's size. Each wait for bytes is
   * bounded by `idleTimeoutMs`. Malformed input, an early end or a timeout fail and leave the
   * stream unusable (the caller closes it): the message's length is announced, there is no
   * resynchronising mid-body. Not for a message `pollFrame` already took whole. */
  readFilesBody<E, R>(sink: (piece: FilesPiece) => Effect.Effect<void, E, R>, options: FilesBodyOptions): Effect.Effect<void, SocketError | FramingError | E, R> {
    const self = this
    return Effect.gen(function*() {
      if (self.pending !== undefined) {
        return yield* new FramingError({ error: new WireError("UnknownType", "header.type", "the FILES message was already read whole") })
      }
      const header = yield* Effect.try({ try: () => self.decoder.startStreamedBody(), catch: framingError })
      if (header.type !== ResponseType.files) {
        return yield* new FramingError({ error: new WireError("UnknownType", "header.type", `expected FILES (${ResponseType.files}), got ${header.type}`) })
      }
      const reader = new FilesBodyReader(self.decoder, options)
      const idle = Duration.millis(options.idleTimeoutMs)
      for (;;) {
        const piece = yield* Effect.try({ try: () => reader.next(), catch: framingError })
        if (piece !== undefined) {
          yield* sink(piece)
          if (piece._tag === "End") return
          continue
        }
        const read = self.chunks.now() ?? (yield* self.chunks.wait.pipe(
          Effect.timeoutFail({
            duration: idle,
            onTimeout: () => new SocketError({ reason: "Timeout", detail: `no bytes for ${options.idleTimeoutMs} ms ${reader.describePosition()}` })
          })
        ))
        switch (read._tag) {
          case "Chunk":
            self.decoder.push(read.chunk)
            break
          case "End":
            return yield* new FramingError({ error: new WireError("Truncated", "files", `the stream ended ${reader.describePosition()}`) })
          case "Failed":
            return yield* readFailed(read.cause)
        }
      }
    })
  }

  private decodeNext(): Effect.Effect<Frame | undefined, FramingError> {
    return Effect.try({ try: () => this.decoder.next(), catch: framingError })
  }

  /** A whole message if one has already arrived, without waiting: whatever the stream has
   * buffered is decoded. The message stays first in line for `readFrame` unless `take` says it
   * is consumed here. */
  pollFrame(take: (frame: Frame) => boolean): Effect.Effect<Frame | undefined, FramingError> {
    const self = this
    return Effect.gen(function*() {
      if (self.pending === undefined) {
        for (;;) {
          const frame = yield* self.decodeNext()
          if (frame !== undefined) {
            self.pending = frame
            break
          }
          const chunk = self.stream.destroyed ? null : (self.stream.read() as Buffer | null)
          if (chunk === null) return undefined
          self.decoder.push(chunk)
        }
      }
      const frame = self.pending
      if (frame !== undefined && take(frame)) self.pending = undefined
      return frame
    })
  }

  /** Writes `bytes`, held with the turn's other writes (streamIo.ts `WriteCoalescer`); waits (up
   * to the write timeout) while the stream's buffer is full. */
  write(bytes: Uint8Array): Effect.Effect<void, SocketError> {
    return Effect.suspend(() => this.writeNow(bytes) ?? Effect.void)
  }

  /** `write` as plain code: null once `bytes` are handed over with room to spare; else the
   * Effect that waits for the drain (or fails: the stream is closed) before the next write. */
  writeNow(bytes: Uint8Array): Effect.Effect<void, SocketError> | null {
    const stream = this.stream
    const timeoutMs = this.options.writeTimeoutMs
    if (stream.destroyed || !stream.writable) {
      return Effect.fail(new SocketError({ reason: "Closed", detail: "the connection is closed" }))
    }
    this.coalescer.hold()
    if (stream.write(bytes)) return null
    return drained(stream).pipe(
      Effect.zipRight(Effect.suspend(() => stream.destroyed ? Effect.fail(new SocketError({ reason: "Closed", detail: "the connection closed while writing" })) : Effect.void)),
      Effect.timeoutFail({
        duration: Duration.millis(timeoutMs),
        onTimeout: () => new SocketError({ reason: "Timeout", detail: `the other side read nothing for ${timeoutMs} ms` })
      })
    )
  }

  /** Destroys the stream (idempotent), after handing the kernel what this turn wrote. */
  readonly close: Effect.Effect<void> = Effect.sync(() => {
    this.coalescer.release()
    this.stream.destroy()
  })
}

/** Bytes of the protocol version word. */
export const versionWordBytes = wordBytes
