// Reading and writing a Node stream (TCP or TLS socket, or any Duplex) as Effects, shared by the
// dqlite-protocol streams (gateway and client: net/protocol/socketIo.ts) and the peer links
// (peers/sockets.ts), which wrap the outcomes in their own error types. `readDecoded` is the one
// read loop of both: their decoders differ, the loop does not.
//
// Reads are pull-based: the stream stays paused and a chunk is taken with `read()` only when one
// is wanted, so TCP pushes back on a sender that runs ahead.
import type { Duplex } from "node:stream"
import { Effect } from "effect"

/** What one pull gave: a chunk, the stream's clean end, or the error it broke with. */
export type ChunkRead =
  | { readonly _tag: "Chunk"; readonly chunk: Uint8Array }
  | { readonly _tag: "End" }
  | { readonly _tag: "Failed"; readonly cause: unknown }

/** The next chunk the stream has, waiting for one if need be. */
export const readChunk = (stream: Duplex): Effect.Effect<ChunkRead> =>
  Effect.async((resume) => {
    const attempt = (): boolean => {
      const chunk = stream.read() as Buffer | null
      if (chunk !== null) {
        resume(Effect.succeed({ _tag: "Chunk", chunk }))
        return true
      }
      if (stream.errored) {
        resume(Effect.succeed({ _tag: "Failed", cause: stream.errored }))
        return true
      }
      if (stream.readableEnded || stream.destroyed) {
        resume(Effect.succeed({ _tag: "End" }))
        return true
      }
      return false
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
