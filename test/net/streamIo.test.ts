// Write coalescing (src/net/streamIo.ts `WriteCoalescer`) on a real loopback socket, through the
// dqlite-protocol FrameStream that the gateway and the client write with: the messages of one
// turn reach the kernel in one call, and the write bounds still hold while writes are held. And
// its reads (`ChunkReader`): the stream's listeners attached once, not per message.
import { describe, expect, it } from "@effect/vitest"
import * as net from "node:net"
import { Duration, Effect, Either } from "effect"
import { encodeFrame } from "../../src/net/protocol/framing.ts"
import { FrameStream } from "../../src/net/protocol/socketIo.ts"

/** A connected pair on loopback: `server` is the accepted side. Both destroyed with the scope. */
const socketPair = Effect.acquireRelease(
  Effect.async<{ readonly client: net.Socket; readonly server: net.Socket; readonly listener: net.Server }>((resume) => {
    const listener = net.createServer((server) => resume(Effect.succeed({ client, server, listener })))
    let client: net.Socket
    listener.listen(0, "127.0.0.1", () => {
      const address = listener.address() as net.AddressInfo
      client = net.connect(address.port, "127.0.0.1")
    })
  }),
  ({ client, listener, server }) =>
    Effect.sync(() => {
      client.destroy()
      server.destroy()
      listener.close()
    })
)

/** Counts the calls that hand bytes to the kernel (`_write` for one chunk, `_writev` for many). */
function countKernelWrites(socket: net.Socket): { calls: number; chunks: number } {
  const counts = { calls: 0, chunks: 0 }
  const target = socket as unknown as {
    _write: (chunk: unknown, encoding: unknown, callback: unknown) => void
    _writev: (chunks: ReadonlyArray<unknown>, callback: unknown) => void
  }
  const write = target._write.bind(socket)
  const writev = target._writev.bind(socket)
  target._write = (chunk, encoding, callback) => {
    counts.calls++
    counts.chunks++
    write(chunk, encoding, callback)
  }
  target._writev = (chunks, callback) => {
    counts.calls++
    counts.chunks += chunks.length
    writev(chunks, callback)
  }
  return counts
}

/** Everything `socket` receives until `bytes` bytes have arrived. */
const receive = (socket: net.Socket, bytes: number) =>
  Effect.async<Buffer>((resume) => {
    const chunks: Array<Buffer> = []
    let total = 0
    const onData = (chunk: Buffer) => {
      chunks.push(chunk)
      total += chunk.byteLength
      if (total >= bytes) {
        socket.off("data", onData)
        resume(Effect.succeed(Buffer.concat(chunks)))
      }
    }
    socket.on("data", onData)
  }).pipe(Effect.timeoutFail({ duration: Duration.seconds(10), onTimeout: () => new Error(`fewer than ${bytes} bytes arrived`) }))

const message = (index: number, bytes: number) => new Uint8Array(bytes).fill(index & 0xff)

describe("write coalescing", () => {
  it.scopedLive("the messages a connection writes within one turn reach the kernel in one call, whole and in order", () =>
    Effect.gen(function*() {
      const { client, server } = yield* socketPair
      const io = new FrameStream(server, { messageBytesMax: 1 << 20, writeTimeoutMs: 5_000 })
      const counts = countKernelWrites(server)
      const messages = Array.from({ length: 20 }, (_, i) => message(i, 100 + i))
      const total = messages.reduce((n, m) => n + m.byteLength, 0)
      const arrived = yield* Effect.fork(receive(client, total))
      // One Effect, no yield between the writes: one turn.
      yield* Effect.forEach(messages, (m) => io.write(m), { discard: true })
      expect(counts.calls).toBe(0) // held until the turn ends
      const bytes = yield* arrived
      expect(counts).toEqual({ calls: 1, chunks: 20 })
      expect(bytes).toEqual(Buffer.concat(messages))
      // A later turn is a write of its own.
      yield* Effect.sleep(Duration.millis(1))
      const more = yield* Effect.fork(receive(client, 7))
      yield* io.write(message(99, 7))
      yield* more
      expect(counts).toEqual({ calls: 2, chunks: 21 })
    }))

  it.scopedLive("a burst far above the high-water mark is not stuck behind the held writes: each wait for 'drain' ends once the turn's bytes are out", () =>
    Effect.gen(function*() {
      const { client, server } = yield* socketPair
      const io = new FrameStream(server, { messageBytesMax: 1 << 20, writeTimeoutMs: 5_000 })
      const counts = countKernelWrites(server)
      const messages = Array.from({ length: 200 }, (_, i) => message(i, 8 * 1024)) // 1.6 MiB, 16 KiB high-water mark
      const arrived = yield* Effect.fork(receive(client, 200 * 8 * 1024))
      yield* Effect.forEach(messages, (m) => io.write(m), { discard: true }).pipe(Effect.timeout(Duration.seconds(10)))
      // Buffer.equals: a deep toEqual of 1.6 MiB takes seconds.
      expect((yield* arrived).equals(Buffer.concat(messages))).toBe(true)
      // Held in turns of about the high-water mark (2 messages of 8 KiB), never all at once.
      expect(counts.chunks).toBe(200)
      expect(counts.calls).toBeGreaterThanOrEqual(200 / 3)
      expect(counts.calls).toBeLessThan(200)
    }))

  it.scopedLive("a reader that reads nothing still fails the writer after writeTimeoutMs, holding at most one message above the high-water mark", () =>
    Effect.gen(function*() {
      const { server } = yield* socketPair // the client side never reads
      const writeTimeoutMs = 300
      const io = new FrameStream(server, { messageBytesMax: 1 << 20, writeTimeoutMs })
      const messageBytes = 64 * 1024
      let written = 0
      let heldMax = 0
      const startedMs = Date.now()
      const outcome = yield* Effect.either(Effect.gen(function*() {
        for (;;) {
          yield* io.write(message(written, messageBytes))
          written++
          heldMax = Math.max(heldMax, server.writableLength)
          if (written > 10_000) return "never blocked" as const
        }
      }))
      expect(Either.isLeft(outcome) && outcome.left.reason).toBe("Timeout")
      expect(Date.now() - startedMs).toBeGreaterThanOrEqual(writeTimeoutMs)
      // Only the kernel's socket buffers took anything: a few MiB on loopback, not 10,000 messages.
      expect(written).toBeLessThan(200)
      // What the process holds is bounded by the high-water mark plus the message that crossed it.
      expect(heldMax).toBeLessThanOrEqual(server.writableHighWaterMark + messageBytes)
      expect(server.writableLength).toBeLessThanOrEqual(server.writableHighWaterMark + messageBytes)
    }))

  it.scopedLive("closing the stream hands the kernel what the turn wrote before destroying it", () =>
    Effect.gen(function*() {
      const { client, server } = yield* socketPair
      const io = new FrameStream(server, { messageBytesMax: 1 << 20, writeTimeoutMs: 5_000 })
      const arrived = yield* Effect.fork(receive(client, 300))
      yield* io.write(message(1, 300))
      yield* io.close
      expect(yield* arrived).toEqual(Buffer.from(message(1, 300)))
    }))
})

describe("reading messages", () => {
  it.scopedLive("a connection read message after message attaches its stream listeners once, not once per message", () =>
    Effect.gen(function*() {
      const { client, server } = yield* socketPair
      // Counted from before the FrameStream exists: its own set-up counts too.
      const added = { readable: 0, other: 0 }
      const on = server.on.bind(server)
      server.on = ((event: string, listener: (...args: Array<unknown>) => void) => {
        if (event === "readable") added.readable++
        else if (event === "end" || event === "close") added.other++
        return on(event, listener)
      }) as typeof server.on
      const io = new FrameStream(server, { messageBytesMax: 1 << 20, writeTimeoutMs: 5_000 })
      const messages = 50
      for (let i = 0; i < messages; i++) {
        // One request at a time, as go-dqlite sends them: the read waits for each.
        const read = yield* Effect.fork(io.readFrame)
        yield* Effect.sleep(Duration.millis(1))
        client.write(encodeFrame({ type: 3, schema: 0, body: message(i, 16) }))
        const frame = yield* read
        expect(frame?.body).toEqual(message(i, 16))
      }
      // Every listener the reads needed was attached once, not once per message (50 each).
      expect(added).toEqual({ readable: 1, other: 2 })
    }))
})
