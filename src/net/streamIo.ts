// Reading and writing a Node stream (TCP or TLS socket, or any Duplex) as Effects, shared by the
// dqlite-protocol streams (gateway and client: net/protocol/socketIo.ts) and the peer links
// (peers/sockets.ts), which wrap the outcomes in their own error types.
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
