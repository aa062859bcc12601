// Reading and writing a Node stream (TCP or TLS socket, or any Duplex) as Effects, shared by the
// dqlite-protocol streams (gateway and client: net/protocol/socketIo.ts) and the peer links
// (peers/sockets.ts), which wrap the outcomes in their own error types. `readDecoded` is the one
// read loop of both: their decoders differ, the loop does not.
//
// Reads are pull-based: the stream stays paused and a chunk is taken with `read()` only when one
// is wanted, so TCP pushes back on a sender that runs ahead.
import type { Duplex, Writable } from "node:stream"
import { Effect } from "effect"
import { assert } from "../assert.ts"

/** What one pull gave: a chunk, the stream's clean end, or the error it broke with. */
export type ChunkRead =
  | { readonly _tag: "Chunk"; readonly chunk: Uint8Array }
  | { readonly _tag: "End" }
  | { readonly _tag: "Failed"; readonly cause: unknown }

/** The next chunk the stream has, waiting for one if need be. */
export const readChunk = (stream: Duplex): Effect.Effect<ChunkRead> =>
  Effect.async((resume) => {
    const attempt = (): boolean => {
      const read = chunkNow(stream)
      if (read === null) return false
      resume(Effect.succeed(read))
      return true
    }
    if (attempt()) return
    const onEvent = () => {
      if (attempt()) detach()
    }
    const detach = () => {
      stream.off("readable", onEvent)
      stream.off("end", onEvent)
      stream.off("close", onEvent)
      stream.off("error", onEvent)
    }
    stream.on("readable", onEvent)
    stream.on("end", onEvent)
    stream.on("close", onEvent)
    stream.on("error", onEvent)
    return Effect.sync(detach)
  })

/** What the stream can give without waiting: a chunk, its end or its error; null when a read
 * must wait for more bytes. */
function chunkNow(stream: Duplex): ChunkRead | null {
  const chunk = stream.read() as Buffer | null
  if (chunk !== null) return { _tag: "Chunk", chunk }
  if (stream.errored) return { _tag: "Failed", cause: stream.errored }
  if (stream.readableEnded || stream.destroyed) return { _tag: "End" }
  return null
}

/** `readChunk` for a stream read many times over (a client connection: one read per request):
 * its four listeners are attached once, for the stream's life, and a read waits in one slot, so
 * a request costs no listener churn (adding and removing a 'readable' listener also schedules
 * Node's re-evaluation of the stream's mode, a tick each) and, when the bytes are already
 * buffered, no suspension at all. One reader at a time (the stream's one reading fiber). */
export class ChunkReader {
  /** Called by the stream's events while a read waits; null otherwise. */
  private wake: (() => void) | null = null

  constructor(private readonly stream: Duplex) {
    const onEvent = () => {
      const wake = this.wake
      if (wake === null) return
      this.wake = null
      wake()
    }
    stream.on("readable", onEvent)
    stream.on("end", onEvent)
    stream.on("close", onEvent)
    stream.on("error", onEvent)
  }

  /** What the stream can give without waiting; null when a read must wait (`wait`). */
  now(): ChunkRead | null {
    return chunkNow(this.stream)
  }

  /** Waits for the stream's next chunk, end or error (call it after `now` said null). */
  readonly wait: Effect.Effect<ChunkRead> = Effect.async<ChunkRead>((resume) => {
    assert(this.wake === null, "one read waits on a stream at a time")
    const attempt = () => {
      const read = chunkNow(this.stream)
      if (read === null) this.wake = attempt
      else resume(Effect.succeed(read))
    }
    attempt()
    return Effect.sync(() => {
      if (this.wake === attempt) this.wake = null
    })
  })
}

/** `readDecoded` pulling through a `ChunkReader`: the chunks already buffered are taken in a
 * plain loop, and only a read that must wait costs Effect operations (two). */
export const readDecodedFrom = <A, E>(reader: ChunkReader, decoding: Decoding<A, E>): Effect.Effect<A, E> => {
  for (;;) {
    const decided = decoding.decoded()
    if (decided !== null) return decided
    const read = reader.now()
    if (read === null) return Effect.flatMap(reader.wait, (waited) => afterChunk(reader, decoding, waited))
    if (read._tag !== "Chunk") return afterChunk(reader, decoding, read)
    decoding.push(read.chunk)
  }
}

const afterChunk = <A, E>(reader: ChunkReader, decoding: Decoding<A, E>, read: ChunkRead): Effect.Effect<A, E> => {
  switch (read._tag) {
    case "Chunk":
      decoding.push(read.chunk)
      return readDecodedFrom(reader, decoding)
    case "End":
      return decoding.ended()
    case "Failed":
      return Effect.fail(decoding.failed(read.cause))
  }
}

/** A decoder over a stream's bytes, as the read loop sees it. */
export interface Decoding<A, E> {
  /** What the bytes buffered so far decide: a value or a failure, or null when more are needed.
   * Plain code: it runs once per message read. */
  readonly decoded: () => Effect.Effect<A, E> | null
  readonly push: (chunk: Uint8Array) => void
  /** The stream ended cleanly before the decoder decided. */
  readonly ended: () => Effect.Effect<A, E>
  /** The stream broke (`cause`: its error). */
  readonly failed: (cause: unknown) => E
}

/** Decodes the next value: from what is buffered if that decides, else pulling one chunk at a
 * time (only as many as the decoder needs). What is buffered is looked at when this is called:
 * call it where the read starts (inside the caller's `Effect.suspend`), so a buffered message
 * costs no extra step. */
export const readDecoded = <A, E>(stream: Duplex, decoding: Decoding<A, E>): Effect.Effect<A, E> =>
  decoding.decoded() ?? Effect.flatMap(readChunk(stream), (read) => {
    switch (read._tag) {
      case "Chunk":
        decoding.push(read.chunk)
        return readDecoded(stream, decoding)
      case "End":
        return decoding.ended()
      case "Failed":
        return Effect.fail(decoding.failed(read.cause))
    }
  })

/** Waits until the stream's write buffer has drained, or it closed (the caller bounds the wait
 * and looks at `destroyed` to tell which). Returns at once if nothing waits to drain. */
export const drained = (stream: Duplex): Effect.Effect<void> =>
  Effect.async<void>((resume) => {
    if (!stream.writableNeedDrain || stream.destroyed) return resume(Effect.void)
    const done = () => {
      detach()
      resume(Effect.void)
    }
    const detach = () => {
      stream.off("drain", done)
      stream.off("close", done)
    }
    stream.once("drain", done)
    stream.once("close", done)
    return Effect.sync(detach)
  })

/** When the writes of a turn are released (TQLITE_COALESCE, read once; for measurement):
 * `tick` (default) at process.nextTick, which Node runs once the microtask queue — and with it
 * Effect's scheduler rounds — has drained; `microtask` after the current scheduler round;
 * `immediate` after the loop's poll phase; `off` writes at once. */
type ReleaseMode = "tick" | "microtask" | "immediate" | "off"

const releaseMode: ReleaseMode = (() => {
  const text = typeof process === "object" ? process.env["TQLITE_COALESCE"] : undefined
  return text === "microtask" || text === "immediate" || text === "off" ? text : "tick"
})()

const scheduleRelease: (release: () => void) => void =
  releaseMode === "microtask" ? queueMicrotask : releaseMode === "immediate" ? (release) => void setImmediate(release) : process.nextTick

/** Coalesces the writes one connection makes within one turn of the event loop into one syscall:
 * the first write of a turn corks the stream and schedules one uncork for the turn's end, which
 * hands every chunk written meanwhile to the kernel at once (one writev; one write when there is
 * one chunk). On loopback a send also runs the receiver's TCP path in the sender's syscall, so a
 * syscall saved is worth more than its own cost.
 *
 * Backpressure is unchanged: held bytes count in `writableLength`, and `write` returns false past
 * the high-water mark as before, so a writer that waits for 'drain' waits for the release and
 * then for the kernel; bounds on `writableLength` see held bytes too. */
export class WriteCoalescer {
  private held = false

  constructor(private readonly stream: Writable) {}

  /** Call before each write: the first one of a turn corks the stream. True when this write
   * starts a syscall of its own (the turn's first, or every write when coalescing is off). */
  hold(): boolean {
    if (releaseMode === "off") return true
    if (this.held) return false
    this.held = true
    this.stream.cork()
    scheduleRelease(this.release)
    return true
  }

  /** What is held goes to the kernel now (before the stream is destroyed, so a last answer is
   * not lost). Idempotent; the scheduled release then finds nothing to do. */
  readonly release = (): void => {
    if (!this.held) return
    this.held = false
    this.stream.uncork()
  }
}
