// Two TCP transports on loopback: bulk exchange in order, reconnection, a peer that never
// reads, and a snapshot through chunking.
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as net from "node:net"
import type { Envelope } from "../../../src/raft/messages.ts"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { appendEnvelope, bytesEqual, bytesOf, captureLogs, freePort, link, prng, start, storedSnapshot, waitUntil } from "./helpers.ts"

const sameAppend = (a: Envelope, b: Envelope): boolean => {
  if (a.message._tag !== "AppendEntries" || b.message._tag !== "AppendEntries") return false
  if (a.message.prevIndex !== b.message.prevIndex || a.message.entries.length !== b.message.entries.length) return false
  return a.message.entries.every((entry, i) => {
    const other = b.message._tag === "AppendEntries" ? b.message.entries[i] : undefined
    return entry.kind === "command" && other?.kind === "command" && other.index === entry.index && bytesEqual(entry.data, other.data)
  })
}

describe("TCP transport", () => {
  it.scopedLive("two transports exchange 10,000 envelopes each way, in order, with their bytes intact", () =>
    Effect.gen(function*() {
      const limits = { outboundMessagesMax: 2048 }
      const a = yield* start({ nodeId: 1, limits })
      const b = yield* start({ nodeId: 2, limits })
      yield* a.transport.setPeers(new Map([[2, b.transport.address]]))
      yield* b.transport.setPeers(new Map([[1, a.transport.address]]))
      const randomA = prng(11)
      const randomB = prng(22)
      const fromA: Array<Envelope> = []
      const fromB: Array<Envelope> = []
      const total = 10_000
      for (let i = 0; i < total; i++) {
        const ab = appendEnvelope(1, 2, i, randomA, 600)
        const ba = appendEnvelope(2, 1, i, randomB, 600)
        fromA.push(ab)
        fromB.push(ba)
        yield* a.transport.send(ab)
        yield* b.transport.send(ba)
        if (i % 1000 === 999) {
          yield* waitUntil("both queues to drain", Effect.map(Effect.all([link(a.transport), link(b.transport)]), ([x, y]) => x.queued + y.queued === 0))
        }
      }
      yield* waitUntil("every envelope to arrive", Effect.sync(() => a.received.length === total && b.received.length === total), 20_000)
      expect(b.received.every((envelope, i) => sameAppend(envelope, fromA[i]!))).toBe(true)
      expect(a.received.every((envelope, i) => sameAppend(envelope, fromB[i]!))).toBe(true)
      const [statsA, statsB] = [yield* link(a.transport), yield* link(b.transport)]
      expect([statsA.sent, statsA.dropped, statsB.sent, statsB.dropped]).toEqual([total, 0, total, 0])
      expect(statsA.connected && statsB.connected).toBe(true)
    }), 30_000)

  it.scopedLive("on a connected, idle link an envelope is handed to its socket in the sender's fiber, before send returns; a burst stays in order", () =>
    Effect.gen(function*() {
      const a = yield* start({ nodeId: 1 })
      const b = yield* start({ nodeId: 2 })
      yield* a.transport.setPeers(new Map([[2, b.transport.address]]))
      yield* waitUntil("the link to connect", Effect.map(link(a.transport), (stats) => stats.connected))
      const random = prng(5)
      const before = yield* link(a.transport)
      const first = appendEnvelope(1, 2, 0, random, 100)
      // No yield between the send and the check: only a write in place shows up here (it leaves
      // for the kernel at the end of the turn, src/net/streamIo.ts WriteCoalescer).
      const after = yield* Effect.flatMap(a.transport.send(first), () => link(a.transport))
      expect([after.writes - before.writes, after.sent - before.sent, after.queued]).toEqual([1, 1, 0])
      const rest = Array.from({ length: 50 }, (_, i) => appendEnvelope(1, 2, i + 1, random, 100))
      for (const envelope of rest) yield* a.transport.send(envelope)
      yield* waitUntil("every envelope to arrive", Effect.sync(() => b.received.length === 51))
      expect(b.received.every((envelope, i) => sameAppend(envelope, [first, ...rest][i]!))).toBe(true)
    }))

  it.scopedLive("what one turn sends to a peer (a Raft batch's messages) leaves in one socket write; the next turn in another", () =>
    Effect.gen(function*() {
      const a = yield* start({ nodeId: 1 })
      const b = yield* start({ nodeId: 2 })
      yield* a.transport.setPeers(new Map([[2, b.transport.address]]))
      yield* waitUntil("the link to connect", Effect.map(link(a.transport), (stats) => stats.connected))
      const port = Number(b.transport.address.split(":").at(-1))
      const kernelWrites = yield* countKernelWritesTo(port)
      const heartbeat = (seq: number): Envelope => ({ message: { _tag: "Heartbeat", from: 1, to: 2, term: 1, commit: 0, context: seq }, snapshot: null })
      const random = prng(9)
      // A heartbeat, appends and another heartbeat, as one batch of the Raft actor sends them: no
      // yield between the sends.
      // One append is large (40 KiB of pages): an inline data frame, written without a copy as
      // prefix, header and the entry's own data.
      const appends = Array.from({ length: 10 }, (_, i): Envelope =>
        i === 4
          ? { message: { _tag: "AppendEntries", from: 1, to: 2, term: 1, prevIndex: i, prevTerm: 1, entries: [{ kind: "command", term: 1, index: 17, data: random.bytes(40 * 1024) }], commit: i }, snapshot: null }
          : appendEnvelope(1, 2, i, random, 200))
      const turn = [heartbeat(1), ...appends, heartbeat(2)]
      const before = yield* link(a.transport)
      yield* Effect.forEach(turn, (envelope) => a.transport.send(envelope), { discard: true })
      yield* waitUntil("the turn's envelopes to arrive", Effect.sync(() => b.received.length === turn.length))
      expect(kernelWrites.calls).toBe(1)
      expect(kernelWrites.chunks).toBe(turn.length + 2) // the large one: its prefix, header and data
      expect(b.received.slice(1, -1).every((envelope, i) => sameAppend(envelope, appends[i]!))).toBe(true)
      const after = yield* link(a.transport)
      expect([after.writes - before.writes, after.sent - before.sent]).toEqual([1, turn.length])
      yield* a.transport.send(heartbeat(3))
      yield* waitUntil("the next turn's heartbeat", Effect.sync(() => b.received.length === turn.length + 1))
      expect(kernelWrites.calls).toBe(2)
      expect(b.received.map((e) => e.message._tag === "Heartbeat" ? `h${e.message.context}` : "a")).toEqual(["h1", ...turn.slice(1, -1).map(() => "a"), "h2", "h3"])
    }))

  it.scopedLive("a peer that is down gets what fits the queue once it comes up, and everything sent later", () =>
    Effect.gen(function*() {
      const port = yield* freePort
      const limits = { outboundMessagesMax: 64, writeBatchMax: 16, reconnectBaseMs: 20, reconnectCapMs: 200 }
      const a = yield* start({ nodeId: 1, limits })
      yield* a.transport.setPeers(new Map([[2, `127.0.0.1:${port}`]]))
      const heartbeat = (seq: number): Envelope => ({ message: { _tag: "Heartbeat", from: 1, to: 2, term: 1, commit: 0, context: seq }, snapshot: null })
      yield* a.transport.send(heartbeat(0))
      yield* waitUntil("a failed connection attempt", Effect.map(link(a.transport), (s) => s.connectFailures >= 2))
      const whileDown = 300
      for (let seq = 1; seq <= whileDown; seq++) yield* a.transport.send(heartbeat(seq))
      const down = yield* link(a.transport)
      expect(down.connected).toBe(false)
      expect(down.queued).toBeLessThanOrEqual(64)
      expect(down.dropped).toBeGreaterThanOrEqual(whileDown - 64)

      const b = yield* start({ nodeId: 2, listen: `127.0.0.1:${port}` })
      const drained = Effect.map(link(a.transport), (s) => s.connected && s.queued === 0)
      yield* waitUntil("the link to connect and drain its queue", drained)
      const later = 100
      for (let seq = whileDown + 1; seq <= whileDown + later; seq++) {
        yield* a.transport.send(heartbeat(seq))
        if (seq % 50 === 0) yield* waitUntil("the queue to drain", drained)
      }
      yield* waitUntil("the later messages", Effect.sync(() => b.received.some((e) => e.message._tag === "Heartbeat" && e.message.context === whileDown + later)))
      const contexts = b.received.map((e) => (e.message._tag === "Heartbeat" ? e.message.context : -1))
      expect(contexts).toEqual([...contexts].sort((x, y) => x - y)) // in order
      const earlyArrived = contexts.filter((c) => c <= whileDown).length
      const after = yield* link(a.transport)
      // Every message sent while down either arrived or was counted as dropped, and what
      // arrived is at most the queue plus the batch the link was holding.
      expect(earlyArrived + after.dropped).toBe(whileDown + 1)
      expect(earlyArrived).toBeLessThanOrEqual(64 + 16)
      expect(contexts.filter((c) => c > whileDown)).toEqual(Array.from({ length: later }, (_, i) => whileDown + 1 + i))
      expect(after.reconnects).toBe(0)

      // Down again, up again on the same address: the link reconnects by itself.
      yield* b.close
      yield* waitUntil("the link to notice", Effect.map(link(a.transport), (s) => !s.connected))
      const b2 = yield* start({ nodeId: 2, listen: `127.0.0.1:${port}` })
      yield* waitUntil("the link to reconnect", Effect.map(link(a.transport), (s) => s.connected))
      yield* a.transport.send(heartbeat(10_000))
      yield* waitUntil("a message over the new connection", Effect.sync(() => b2.received.length > 0))
      expect((yield* link(a.transport)).reconnects).toBe(1)
    }), 20_000)

  it.scopedLive("a peer that never reads: the link stops writing, drops, and memory stays bounded", () =>
    Effect.gen(function*() {
      const limits = {
        outboundMessagesMax: 64,
        writeBatchMax: 16,
        outboundBytesMax: 2 * 1024 * 1024,
        writeBufferBytesMax: 1024 * 1024,
        stallTimeoutMs: 60_000
      }
      const a = yield* start({ nodeId: 1, limits })
      const b = yield* start({ nodeId: 2 })
      // B takes the first envelope and then never returns: its connection is no longer read.
      yield* b.transport.serve(() => Effect.never)
      yield* a.transport.setPeers(new Map([[2, b.transport.address]]))
      const payload = new Uint8Array(64 * 1024).fill(7)
      const envelope = (seq: number): Envelope => ({
        message: { _tag: "AppendEntries", from: 1, to: 2, term: 1, prevIndex: seq, prevTerm: 1, commit: 0, entries: [{ kind: "command", term: 1, index: seq + 1, data: payload }] },
        snapshot: null
      })
      global.gc?.()
      const before = process.memoryUsage()
      const offered = 3000 // 3000 × 64 KiB = 187.5 MiB offered
      let peakWriteBuffer = 0
      for (let seq = 0; seq < offered; seq++) {
        yield* a.transport.send(envelope(seq))
        if (seq % 20 === 0) {
          yield* Effect.sleep(1)
          const s = yield* link(a.transport)
          peakWriteBuffer = Math.max(peakWriteBuffer, s.writeBufferBytes)
          expect(s.queued).toBeLessThanOrEqual(64)
          expect(s.queuedBytes).toBeLessThanOrEqual(limits.outboundBytesMax + 65 * 1024)
        }
      }
      const s = yield* link(a.transport)
      const after = process.memoryUsage()
      expect(s.dropped).toBeGreaterThan(offered / 2)
      expect(s.sent + s.dropped + s.queued).toBeLessThanOrEqual(offered)
      expect(s.sent + s.dropped + s.queued).toBeGreaterThanOrEqual(offered - 16) // the batch in hand
      // The socket never holds more than the bound plus one write group (a quarter of the
      // bound, plus the frame that crossed it).
      expect(peakWriteBuffer).toBeLessThanOrEqual(limits.writeBufferBytesMax * 1.25 + 65 * 1024)
      expect(peakWriteBuffer).toBeGreaterThan(limits.writeBufferBytesMax / 2) // it did fill up
      // Far less than what was offered stayed in memory (kernel buffers are not counted).
      const grownBytes = after.arrayBuffers - before.arrayBuffers
      expect(grownBytes).toBeLessThan(60 * 1024 * 1024)
      expect(s.connected).toBe(true)
    }), 20_000)

  it.scopedLive("a connection whose peer stops reading is replaced after the stall timeout", () => {
    const logs = captureLogs()
    return Effect.gen(function*() {
      const limits = { writeBufferBytesMax: 256 * 1024, stallTimeoutMs: 300, outboundMessagesMax: 32, writeBatchMax: 8 }
      const a = yield* start({ nodeId: 1, limits })
      const b = yield* start({ nodeId: 2 })
      yield* b.transport.serve(() => Effect.never)
      yield* a.transport.setPeers(new Map([[2, b.transport.address]]))
      const data = new Uint8Array(64 * 1024)
      let seq = 0
      yield* waitUntil("a reconnect", Effect.gen(function*() {
        for (let i = 0; i < 8; i++) {
          seq++
          yield* a.transport.send({
            message: { _tag: "AppendEntries", from: 1, to: 2, term: 1, prevIndex: seq, prevTerm: 1, commit: 0, entries: [{ kind: "command", term: 1, index: seq, data }] },
            snapshot: null
          })
        }
        return (yield* link(a.transport)).reconnects >= 1
      }))
      const warnings = logs.lines.filter((line) => line.level === "WARN").map((line) => line.message)
      expect(warnings).toContainEqual(expect.stringMatching(/^peer 2 at .* has not read \d+ bytes for 300 ms; reconnecting$/))
    }).pipe(Effect.provide(logs.layer))
  })

  it.scopedLive("an envelope too large for a frame is dropped by the sender, and the link carries on", () =>
    Effect.gen(function*() {
      const limits = { frameBytesMax: 64 * 1024, snapshotChunkBytes: 16 * 1024, dataChunkBytes: 16 * 1024 }
      const a = yield* start({ nodeId: 1, limits })
      const b = yield* start({ nodeId: 2, limits })
      yield* a.transport.setPeers(new Map([[2, b.transport.address]]))
      yield* a.transport.send({
        message: { _tag: "AppendEntries", from: 1, to: 2, term: 1, prevIndex: 0, prevTerm: 0, commit: 0, entries: [{ kind: "command", term: 1, index: 1, data: new Uint8Array(100 * 1024) }] },
        snapshot: null
      })
      yield* a.transport.send({ message: { _tag: "Heartbeat", from: 1, to: 2, term: 1, commit: 0, context: 7 }, snapshot: null })
      // A snapshot far above the frame size still goes, in chunks.
      const data = prng(3).bytes(200 * 1024)
      const meta = { index: 3, term: 1, config: { members: [] } }
      yield* a.transport.send({ message: { _tag: "InstallSnapshot", from: 1, to: 2, term: 1, meta }, snapshot: yield* storedSnapshot(a.snapshots, meta, data) })
      yield* waitUntil("the heartbeat and the snapshot", Effect.sync(() => b.received.length === 2))
      expect(b.received[0]!.message).toMatchObject({ _tag: "Heartbeat", context: 7 })
      expect(bytesEqual(yield* bytesOf(b.received[1]!.snapshot), data)).toBe(true)
      const stats = yield* link(a.transport)
      expect([stats.sent, stats.dropped, stats.reconnects]).toEqual([2, 1, 0])
    }))

  it.scopedLive("a 5 MiB snapshot arrives intact through 1 MiB chunks, with heartbeats flowing beside it", () =>
    Effect.gen(function*() {
      const a = yield* start({ nodeId: 1 })
      const b = yield* start({ nodeId: 2 })
      yield* a.transport.setPeers(new Map([[2, b.transport.address]]))
      const data = prng(77).bytes(5 * 1024 * 1024)
      const message = { _tag: "InstallSnapshot" as const, from: 1, to: 2, term: 4, meta: { index: 900, term: 3, config: { members: [{ id: 1, address: "x:1", role: "voter" as const }] } } }
      const source = yield* storedSnapshot(a.snapshots, message.meta, data)
      yield* a.transport.send({ message, snapshot: source })
      for (let i = 0; i < 20; i++) yield* a.transport.send({ message: { _tag: "Heartbeat", from: 1, to: 2, term: 4, commit: 0, context: i }, snapshot: null })
      // A Raft retry of the same snapshot while it is in flight is not sent again.
      yield* a.transport.send({ message, snapshot: source })
      yield* waitUntil("the snapshot", Effect.sync(() => b.received.some((e) => e.snapshot !== null)))
      yield* waitUntil("the heartbeats", Effect.sync(() => b.received.filter((e) => e.message._tag === "Heartbeat").length === 20))
      const snapshots = b.received.filter((e) => e.snapshot !== null)
      expect(snapshots.length).toBe(1)
      expect(snapshots[0]!.message).toEqual(message)
      expect(bytesEqual(yield* bytesOf(snapshots[0]!.snapshot), data)).toBe(true)
      const stats = yield* b.transport.stats
      expect(stats.inbound.snapshotsReceived).toBe(1)
      expect(stats.inbound.snapshotsDropped).toBe(0)
      expect((yield* link(a.transport)).sent).toBe(21)
    }), 20_000)

  it.scopedLive("a snapshot the receiver holds whole is unpinned on the sender at once, not when the link drops the transfer", () =>
    Effect.gen(function*() {
      const a = yield* start({ nodeId: 1 })
      const b = yield* start({ nodeId: 2 })
      yield* a.transport.setPeers(new Map([[2, b.transport.address]]))
      const message = { _tag: "InstallSnapshot" as const, from: 1, to: 2, term: 4, meta: { index: 900, term: 3, config: { members: [{ id: 1, address: "x:1", role: "voter" as const }] } } }
      const stored = yield* storedSnapshot(a.snapshots, message.meta, prng(78).bytes(3 * 1024 * 1024))
      // Counts the pins the link holds on the sender's file (the store's pin keeps it from pruning).
      let pinned = 0
      const source = {
        ...stored,
        pin: () => {
          pinned++
          const unpin = stored.pin!()
          return () => {
            pinned--
            unpin()
          }
        }
      }
      yield* a.transport.send({ message, snapshot: source })
      yield* waitUntil("the snapshot", Effect.sync(() => b.received.some((e) => e.snapshot !== null)))
      // Before: the pin stayed until a newer snapshot, a lost connection or a link reset, and the
      // leader kept an older snapshot beside its newest (3× its database at 4 GiB).
      yield* waitUntil("the sender's pin released", Effect.sync(() => pinned === 0))
      expect((yield* link(a.transport)).sent).toBe(1)
    }), 20_000)

  it.scopedLive("a 6 MiB AppendEntries goes as a data message: heartbeats pass it, the AppendEntries after it does not, its data arrives intact", () =>
    Effect.gen(function*() {
      const a = yield* start({ nodeId: 1 })
      const b = yield* start({ nodeId: 2 })
      yield* a.transport.setPeers(new Map([[2, b.transport.address]]))
      const data = prng(78).bytes(6 * 1024 * 1024)
      const append = (index: number, bytes: Uint8Array) => ({ _tag: "AppendEntries" as const, from: 1, to: 2, term: 4, prevIndex: index - 1, prevTerm: 4, commit: 0, entries: [{ kind: "command" as const, term: 4, index, data: bytes }] })
      yield* a.transport.send({ message: append(10, data), snapshot: null })
      yield* a.transport.send({ message: append(11, Uint8Array.of(1, 2, 3)), snapshot: null })
      for (let i = 0; i < 20; i++) yield* a.transport.send({ message: { _tag: "Heartbeat", from: 1, to: 2, term: 4, commit: 0, context: i }, snapshot: null })
      yield* waitUntil("everything", Effect.sync(() => b.received.length === 22))
      const tags = b.received.map((e) => (e.message._tag === "AppendEntries" ? e.message.entries[0]!.index : e.message._tag))
      // The small AppendEntries stays behind the large one; heartbeats queued after both get
      // past the large one (sent between its chunks), so not all of them come after it.
      expect(tags.indexOf(10)).toBeLessThan(tags.indexOf(11))
      expect(tags.indexOf("Heartbeat")).toBeLessThan(tags.indexOf(10))
      const big = b.received.find((e) => e.message._tag === "AppendEntries" && e.message.entries[0]!.index === 10)!.message
      expect(big._tag === "AppendEntries" && big.entries[0]!.kind === "command" && bytesEqual(big.entries[0]!.data, data)).toBe(true)
      expect((yield* link(a.transport)).sent).toBe(22)
    }), 20_000)

  it.scopedLive("a transfer broken by a restart of the receiver resumes from its offset, not from the start", () =>
    Effect.gen(function*() {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tqlite-resume-"))
      yield* Effect.addFinalizer(() => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true })))
      const limits = { snapshotChunkBytes: 64 * 1024, snapshotChunksPerRound: 1 }
      const a = yield* start({ nodeId: 1, limits })
      const b1 = yield* start({ nodeId: 2, limits, snapshotsDir: dir })
      yield* a.transport.setPeers(new Map([[2, b1.transport.address]]))
      const size = 24 * 1024 * 1024
      const data = prng(9).bytes(size)
      const meta = { index: 40, term: 2, config: { members: [] } }
      const stored = yield* storedSnapshot(a.snapshots, meta, data)
      // Counts what the sender reads from its file.
      let bytesRead = 0
      const source = { ...stored, read: (offset: number, length: number) => Effect.tap(stored.read(offset, length), (chunk) => Effect.sync(() => void (bytesRead += chunk.byteLength))) }
      const message = { _tag: "InstallSnapshot" as const, from: 1, to: 2, term: 2, meta }
      yield* a.transport.send({ message, snapshot: source })
      const partSize = () => fs.readdirSync(dir).filter((name) => name.endsWith(".part")).reduce((n, name) => n + fs.statSync(path.join(dir, name)).size, 0)
      yield* waitUntil("a third of the snapshot at the receiver", Effect.sync(() => partSize() > size / 3), 20_000)
      yield* b1.close // the receiver's process ends mid-transfer
      const partSizeAtClose = partSize()
      expect(b1.received.some((e) => e.snapshot !== null)).toBe(false)
      const firstRead = bytesRead
      bytesRead = 0
      const b2 = yield* start({ nodeId: 2, limits, snapshotsDir: dir })
      yield* a.transport.setPeers(new Map([[2, b2.transport.address]]))
      // Raft offers the same snapshot again.
      yield* a.transport.send({ message, snapshot: source })
      yield* waitUntil("the snapshot at the restarted receiver", Effect.sync(() => b2.received.some((e) => e.snapshot !== null)), 30_000)
      const got = b2.received.find((e) => e.snapshot !== null)!
      expect(bytesEqual(yield* bytesOf(got.snapshot), data)).toBe(true)
      // The second transfer read only what the first did not deliver durably (the receiver had
      // more than a third of it): the sender waits for the receiver's offset before any chunk.
      // The file at the close may hold one chunk more than was made durable: the chunk whose
      // write (on the thread pool) was in flight when the connection ended is not counted as
      // received, so the restart cuts it off and it is sent again.
      const headerBytes = partSize() - size // the received file, whole: its header and the data
      const durable = partSizeAtClose - headerBytes
      expect(firstRead).toBeGreaterThan(size / 3)
      expect(bytesRead).toBeGreaterThanOrEqual(size - durable)
      expect(bytesRead).toBeLessThanOrEqual(size - durable + limits.snapshotChunkBytes)
    }), 60_000)
})


/** Counts, until the scope closes, the calls that hand bytes to the kernel (`_write` for one
 * chunk, `_writev` for many) on sockets connected to `port`. */
function countKernelWritesTo(port: number) {
  const counts = { calls: 0, chunks: 0 }
  type Target = {
    _write: (this: net.Socket, chunk: unknown, encoding: unknown, callback: unknown) => void
    _writev: (this: net.Socket, chunks: ReadonlyArray<unknown>, callback: unknown) => void
  }
  const prototype = net.Socket.prototype as unknown as Target
  const write = prototype._write
  const writev = prototype._writev
  return Effect.acquireRelease(
    Effect.sync(() => {
      prototype._write = function(chunk, encoding, callback) {
        if (this.remotePort === port) {
          counts.calls++
          counts.chunks++
        }
        return write.call(this, chunk, encoding, callback)
      }
      prototype._writev = function(chunks, callback) {
        if (this.remotePort === port) {
          counts.calls++
          counts.chunks += chunks.length
        }
        return writev.call(this, chunks, callback)
      }
      return counts
    }),
    () =>
      Effect.sync(() => {
        prototype._write = write
        prototype._writev = writev
      })
  )
}
