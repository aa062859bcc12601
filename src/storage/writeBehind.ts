// Writes that return before the disk has taken them: each piece is copied into one of a bounded
// set of reused buffers and written on the thread pool while the caller goes on. A received
// snapshot's receiver waited for every 1 MiB pwrite before reading the socket again; with a busy
// disk that wait was most of its time (bench: 9 ms per MiB waited of 14 ms per MiB, issue 17),
// and the joiner writes each byte twice (the store's file and the image's own file).
//
// The copy costs ~0.03 ms per MiB into a warm buffer; a fresh one would cost ~0.9 ms (dev VM).
// At most `buffersMax` writes are queued, written one at a time in order: the next waits for one
// to end. A failed write fails
// the next `write` or `flush` (and every one after: the caller drops the transfer). `flush` waits
// for every write issued before it; call it before an fdatasync of the file and before closing
// it (a write still queued must not outlive its descriptor).
import { Cause, Effect, Fiber } from "effect"
import { assert } from "../assert.ts"
import type { DiskFile } from "./Disk.ts"
import { writeOffLoop } from "./Disk.ts"
import type { DiskFailure } from "./errors.ts"

/** Writes a received snapshot keeps in flight per file set (the store's file; the images'
 * files): what the receive loop runs ahead of the disk by, in `bufferBytes` pieces. */
export const writesInFlightMax = 4

export class WriteBehind {
  private readonly free: Array<Uint8Array> = []
  private allocated = 0
  private readonly pending = new Map<object, Fiber.RuntimeFiber<void, DiskFailure>>()
  /** The write issued last: the next one starts when it ended. */
  private last: Fiber.RuntimeFiber<void, DiskFailure> | null = null
  /** The first write that did not succeed (a defect too: a write lost in silence would leave a
   * hole in a file recorded as written). */
  private failure: Cause.Cause<DiskFailure> | null = null
  /** Bytes handed to `write` so far (the tests' count of what was written once). */
  bytesIssued = 0

  constructor(readonly bufferBytes: number, readonly buffersMax: number = writesInFlightMax) {
    assert(Number.isSafeInteger(bufferBytes) && bufferBytes > 0, "bufferBytes > 0")
    assert(Number.isSafeInteger(buffersMax) && buffersMax > 0, "buffersMax > 0")
  }

  /** Writes in flight now. */
  get inFlight(): number {
    return this.pending.size
  }

  /** Writes `data` at `position` of `file`; returns once it is copied and queued (after an
   * earlier write ended, when `buffersMax` are in flight). `data` is the caller's again at once. */
  write(file: DiskFile, position: number, data: Uint8Array): Effect.Effect<void, DiskFailure> {
    const self = this
    return Effect.gen(function*() {
      for (let at = 0; at < data.byteLength; at += self.bufferBytes) {
        const piece = data.subarray(at, at + self.bufferBytes)
        const buffer = yield* self.take
        if (self.failure !== null) {
          self.free.push(buffer)
          return yield* Effect.failCause(self.failure)
        }
        buffer.set(piece)
        self.bytesIssued += piece.byteLength
        const token = {}
        // One write at a time, in order: writes to one file side by side only contend for its
        // inode lock (and for the two cores the pool shares with everything else).
        const previous = self.last
        const written = writeOffLoop(file, position + at, buffer.subarray(0, piece.byteLength))
        const fiber = yield* Effect.forkDaemon((previous === null ? written : Effect.zipRight(Fiber.await(previous), written)).pipe(
          Effect.onExit((exit) => Effect.sync(() => {
            if (exit._tag === "Failure") self.failure ??= exit.cause
          })),
          Effect.ensuring(Effect.sync(() => {
            self.pending.delete(token)
            self.free.push(buffer)
          }))
        ))
        self.last = fiber
        if (fiber.unsafePoll() === null) self.pending.set(token, fiber)
      }
      if (self.failure !== null) return yield* Effect.failCause(self.failure)
    })
  }

  /** A free buffer: a reused one, a new one while fewer than `buffersMax` exist, or the one the
   * oldest write in flight gives back when it ends. */
  private readonly take: Effect.Effect<Uint8Array> = Effect.suspend(() => {
    const reused = this.free.pop()
    if (reused !== undefined) return Effect.succeed(reused)
    if (this.allocated < this.buffersMax) {
      this.allocated++
      return Effect.succeed(new Uint8Array(this.bufferBytes))
    }
    const oldest = this.pending.values().next().value
    assert(oldest !== undefined, "every write buffer is taken while no write is in flight")
    return Effect.zipRight(Fiber.await(oldest), this.take)
  })

  /** Waits for every write issued so far; fails if any write failed. */
  readonly flush: Effect.Effect<void, DiskFailure> = Effect.suspend(() =>
    Effect.zipRight(
      Effect.forEach([...this.pending.values()], Fiber.await, { discard: true }),
      Effect.suspend(() => (this.failure === null ? Effect.void : Effect.failCause(this.failure)))
    ))
}
