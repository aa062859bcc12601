// Snapshot streaming between two snapshot stores on the real disk, without sockets: the sender
// reads chunks from its file, the receiver writes them into its incoming file. A gap asks the
// sender to resume; a repeat is ignored; a checksum lie drops the transfer; a transfer broken by
// a restart of the receiver resumes from the durable offset; another snapshot discards it.
import * as fs from "node:fs"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Either, Exit, Scope } from "effect"
import type { PackedFrame, PeerFrame } from "../../../src/net/peers/framing.ts"
import { decodeSnapshotChunk } from "../../../src/net/peers/framing.ts"
import type { InstallSnapshot } from "../../../src/raft/messages.ts"
import { InboundSnapshots, OutboundSnapshot } from "../../../src/net/peers/snapshots.ts"
import type { SnapshotsService } from "../../../src/storage/Snapshots.ts"
import { bytesEqual, bytesOf, prng, snapshotStore, storedSnapshot } from "./helpers.ts"

const meta = { index: 10, term: 2, config: { members: [{ id: 1, address: "a:1", role: "voter" as const }] } }
const message: InstallSnapshot = { _tag: "InstallSnapshot", from: 1, to: 2, term: 3, meta }

type ChunkFrame = Extract<PeerFrame, { _tag: "SnapshotChunk" }>

/** A chunk frame as the receiver decodes it (the sender's buffers are never given back here:
 * no `written` is called, so each chunk keeps its own). */
const decoded = (frame: PackedFrame): ChunkFrame => {
  const payload = Buffer.concat(frame.parts.map((part) => Buffer.from(part)))
  expect(payload.byteLength).toBe(frame.byteLength)
  return Either.getOrThrow(decodeSnapshotChunk(payload)) as ChunkFrame
}

/** Every chunk the sender has left, read from its file. */
const chunksOf = (out: OutboundSnapshot) =>
  Effect.gen(function*() {
    const chunks: Array<ChunkFrame> = []
    for (let chunk = yield* out.nextChunk; chunk !== null; chunk = yield* out.nextChunk) chunks.push(decoded(chunk))
    return chunks
  }).pipe(Effect.orDie)

const sender = (store: SnapshotsService, data: Uint8Array, chunkBytes = 1000) =>
  Effect.map(storedSnapshot(store, meta, data), (source) => new OutboundSnapshot(7, message, source, chunkBytes))

describe("snapshot streaming", () => {
  it.scoped("arrives whole and checked, whatever the size relative to the chunk", () =>
    Effect.gen(function*() {
      const random = prng(3)
      for (const size of [0, 1, 999, 1000, 1001, 25_000]) {
        const { store: a } = yield* snapshotStore({ chunkBytesMax: 1000 })
        const { store: b } = yield* snapshotStore({ chunkBytesMax: 1000, incomingSyncBytes: 4000 })
        const data = random.bytes(size)
        const out = yield* sender(a, data)
        const inbound = new InboundSnapshots(b.inbox, 1000)
        let event = yield* inbound.begin(out.begin)
        // Every Begin is answered with where to start (0: a new snapshot).
        expect(event.resumeAt).toEqual({ transfer: 7, offset: 0 })
        out.resumeAt(event.resumeAt!.offset)
        for (const chunk of yield* chunksOf(out)) {
          expect(event.completed).toBeNull()
          expect(chunk.data.byteLength).toBeLessThanOrEqual(1000)
          event = yield* inbound.chunk(chunk)
        }
        expect(event.dropped).toBeNull()
        expect(event.completed?.message).toEqual(message)
        // The last event tells the sender the receiver holds it all (the sender unpins its file).
        expect(event.resumeAt).toEqual({ transfer: 7, offset: size })
        expect(bytesEqual(yield* bytesOf(event.completed!.snapshot), data)).toBe(true)
        // Adopted, it is a snapshot of the receiver's store.
        yield* Effect.orDie(b.adopt(meta))
        expect(yield* Effect.orDie(b.latest)).toEqual(meta)
        expect(bytesEqual(yield* bytesOf(yield* Effect.orDie(b.source(meta))), data)).toBe(true)
      }
    }))

  it.scoped("a gap asks the sender to resume at the receiver's offset; repeats are ignored", () =>
    Effect.gen(function*() {
      const { store: a } = yield* snapshotStore({ chunkBytesMax: 1000 })
      const { store: b } = yield* snapshotStore({ chunkBytesMax: 1000 })
      const data = prng(4).bytes(5000)
      const out = yield* sender(a, data)
      expect(yield* chunksOf(out)).toEqual([]) // nothing before the receiver says where to start
      const inbound = new InboundSnapshots(b.inbox, 1000)
      out.resumeAt((yield* inbound.begin(out.begin)).resumeAt!.offset)
      const chunks = yield* chunksOf(out)
      expect((yield* inbound.chunk(chunks[0]!)).resumeAt).toBeNull()
      const gap = yield* inbound.chunk(chunks[2]!)
      expect(gap.resumeAt).toEqual({ transfer: 7, offset: 1000 })
      expect((yield* inbound.chunk(chunks[3]!)).resumeAt).toBeNull() // asked once per offset
      out.resumeAt(gap.resumeAt!.offset)
      const rest = yield* chunksOf(out)
      expect(rest[0]!.offset).toBe(1000)
      let last = yield* inbound.chunk(chunks[0]!) // a repeat: ignored
      for (const chunk of rest) last = yield* inbound.chunk(chunk)
      expect(bytesEqual(yield* bytesOf(last.completed!.snapshot), data)).toBe(true)
    }))

  it.scoped("a checksum that does not match drops the transfer and its partial file", () =>
    Effect.gen(function*() {
      const { store: a } = yield* snapshotStore({ chunkBytesMax: 1000 })
      const { store: b, dir } = yield* snapshotStore({ chunkBytesMax: 1000 })
      const data = prng(5).bytes(3000)
      const out = yield* sender(a, data)
      const inbound = new InboundSnapshots(b.inbox, 1000)
      out.resumeAt((yield* inbound.begin({ ...out.begin, crc32c: (out.begin.crc32c + 1) >>> 0 })).resumeAt!.offset)
      let last = null
      for (const chunk of yield* chunksOf(out)) last = yield* inbound.chunk(chunk)
      expect(last!.completed).toBeNull()
      expect(last!.dropped).toMatch(/crc/)
      expect(fs.readdirSync(dir).filter((name) => name.startsWith("incoming"))).toEqual([])
    }))

  it.scoped("a transfer broken by a restart of the receiver resumes from what its file holds", () =>
    Effect.gen(function*() {
      const { store: a } = yield* snapshotStore({ chunkBytesMax: 1000 })
      const { dir } = yield* snapshotStore({ chunkBytesMax: 1000 })
      const data = prng(6).bytes(10_500)
      const out = yield* sender(a, data)
      out.resumeAt(0)
      const chunks = yield* chunksOf(out)
      // First life of the receiver: 6 chunks arrive, then the connection and the process end.
      const first = yield* Scope.make()
      const { store: b1 } = yield* Scope.extend(snapshotStore({ dir, chunkBytesMax: 1000, incomingSyncBytes: 4000 }), first)
      const inbound1 = new InboundSnapshots(b1.inbox, 1000)
      yield* inbound1.begin(out.begin)
      for (const chunk of chunks.slice(0, 6)) yield* inbound1.chunk(chunk)
      yield* inbound1.stop
      yield* Scope.close(first, Exit.void)
      // Second life: the same snapshot is offered again, from 0.
      const { store: b2 } = yield* snapshotStore({ dir, chunkBytesMax: 1000, incomingSyncBytes: 4000 })
      const retry = new OutboundSnapshot(8, message, out.source, 1000)
      const inbound2 = new InboundSnapshots(b2.inbox, 1000)
      const began = yield* inbound2.begin(retry.begin)
      expect(began.resumeAt).toEqual({ transfer: 8, offset: 6000 })
      retry.resumeAt(began.resumeAt!.offset)
      const rest = yield* chunksOf(retry)
      expect(rest.length).toBe(5) // 6000 … 10500: the first 6000 bytes were not sent again
      let last = null
      for (const chunk of rest) last = yield* inbound2.chunk(chunk)
      expect(bytesEqual(yield* bytesOf(last!.completed!.snapshot), data)).toBe(true)
    }))

  it.scoped("the sender reads a chunk into a buffer only once the socket gave it back (`written`), and keeps none after the transfer", () =>
    Effect.gen(function*() {
      const { store: a } = yield* snapshotStore({ chunkBytesMax: 1000 })
      const data = prng(9).bytes(6000)
      const out = yield* sender(a, data)
      out.resumeAt(0)
      const next = Effect.map(Effect.orDie(out.nextChunk), (chunk) => chunk!)
      const bufferOf = (chunk: { readonly parts: ReadonlyArray<Uint8Array> }) => chunk.parts[1]!.buffer
      const c1 = yield* next
      const c2 = yield* next
      expect(bufferOf(c1) === bufferOf(c2)).toBe(false) // c1 is still the socket's
      c1.written!()
      const c3 = yield* next
      expect(bufferOf(c3) === bufferOf(c1)).toBe(true)
      expect(bytesEqual(decoded(c3).data, data.subarray(2000, 3000))).toBe(true)
      expect(decoded(c2).offset).toBe(1000)
      c2.written!()
      c2.written!() // twice: kept once
      const c4 = yield* next
      const c5 = yield* next
      expect(bufferOf(c4) === bufferOf(c2)).toBe(true)
      expect(bufferOf(c5) === bufferOf(c2)).toBe(false)
      out.release()
      c4.written!()
      const c6 = yield* next
      expect(bufferOf(c6) === bufferOf(c4)).toBe(false)
      expect(bytesEqual(decoded(c6).data, data.subarray(5000, 6000))).toBe(true)
    }))

  it.scoped("another snapshot discards the partial one", () =>
    Effect.gen(function*() {
      const { store: a } = yield* snapshotStore({ chunkBytesMax: 1000 })
      const { store: b, dir } = yield* snapshotStore({ chunkBytesMax: 1000, incomingSyncBytes: 1000 })
      const out = yield* sender(a, prng(7).bytes(5000))
      const inbound = new InboundSnapshots(b.inbox, 1000)
      out.resumeAt((yield* inbound.begin(out.begin)).resumeAt!.offset)
      for (const chunk of (yield* chunksOf(out)).slice(0, 3)) yield* inbound.chunk(chunk)
      const newer = { ...meta, index: 20 }
      const other = new OutboundSnapshot(9, { ...message, meta: newer }, yield* storedSnapshot(a, newer, prng(8).bytes(2000)), 1000)
      const began = yield* inbound.begin(other.begin)
      expect(began.dropped).toMatch(/superseded/)
      expect(began.resumeAt).toEqual({ transfer: 9, offset: 0 })
      expect(fs.readdirSync(dir).filter((name) => name.endsWith(".part"))).toEqual(["incoming-00000000000000000020-00000000000000000002.part"])
    }))
})
