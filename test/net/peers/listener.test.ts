// The listening side: dqlite clients are handed over, peers of another cluster or version are
// refused with a log line on both sides, and garbage only ever costs its own connection.
import * as net from "node:net"
import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Logger, LogLevel } from "effect"
import type { Envelope } from "../../../src/raft/messages.ts"
import { encodeFrame, encodeFrames, makePacker } from "../../../src/net/peers/framing.ts"
import { discoverCluster } from "../../../src/net/peers/discover.ts"
import { decodeHello, encodeHello, peerMagicWord, peerProtocolVersion } from "../../../src/net/peers/handshake.ts"
import { layerTcp, makeTcp, Transport } from "../../../src/net/peers/PeerTransport.ts"
import { captureLogs, link, prng, start, waitUntil } from "./helpers.ts"

const heartbeat = (from: number, to: number, context: number): Envelope => ({
  message: { _tag: "Heartbeat", from, to, term: 1, commit: 0, context },
  snapshot: null
})

/** Connects, writes `bytes` (and half-closes when `end`), and resolves with everything read
 * once the server closes the connection; dies if it stays open past `timeoutMs`. */
const exchange = (address: string, bytes: Uint8Array, options: { end?: boolean; timeoutMs?: number } = {}) =>
  Effect.async<Buffer>((resume) => {
    const [host, port] = address.split(":") as [string, string]
    const socket = net.connect({ host, port: Number(port) })
    const received: Array<Buffer> = []
    socket.on("error", () => {})
    socket.on("data", (chunk: Buffer) => void received.push(chunk))
    socket.on("connect", () => (options.end === true ? socket.end(bytes) : socket.write(bytes)))
    socket.on("close", () => resume(Effect.succeed(Buffer.concat(received))))
    return Effect.sync(() => socket.destroy())
  }).pipe(Effect.timeoutFail({ duration: Duration.millis(options.timeoutMs ?? 3000), onTimeout: () => "server left the connection open" }), Effect.orDie)

const concat = (...parts: Array<Uint8Array>) => Uint8Array.from(Buffer.concat(parts))

describe("listener", () => {
  it.scopedLive("a dqlite version word goes to the client handler, with the bytes after it still unread", () =>
    Effect.gen(function*() {
      const seen: Array<{ version: bigint; first: string }> = []
      const b = yield* start({
        nodeId: 2,
        onClientConnection: (socket, version) =>
          Effect.async<void>((resume) => {
            socket.once("data", (chunk: Buffer) => {
              seen.push({ version, first: chunk.toString() })
              socket.end("ok", () => resume(Effect.void))
            })
          })
      })
      const v1 = Buffer.from([1, 0, 0, 0, 0, 0, 0, 0])
      const legacy = Buffer.from([0xe5, 0x3f, 0x43, 0x60, 0xd7, 0x4d, 0x10, 0x86])
      expect((yield* exchange(b.transport.address, concat(v1, Buffer.from("request")))).toString()).toBe("ok")
      expect((yield* exchange(b.transport.address, concat(legacy, Buffer.from("legacy")))).toString()).toBe("ok")
      expect(seen).toEqual([{ version: 1n, first: "request" }, { version: 0x86104dd760433fe5n, first: "legacy" }])
      expect((yield* b.transport.stats).inbound.clientConnections).toBe(2)

      // Without a handler, a client connection is closed at once.
      const c = yield* start({ nodeId: 3 })
      expect((yield* exchange(c.transport.address, v1)).byteLength).toBe(0)
    }))

  it.scopedLive("random garbage never crashes the listener: each bad connection is closed, peers keep talking", () =>
    Effect.gen(function*() {
      const a = yield* start({ nodeId: 1 })
      const b = yield* start({ nodeId: 2, limits: { handshakeTimeoutMs: 1000 } })
      yield* a.transport.setPeers(new Map([[2, b.transport.address]]))
      yield* a.transport.send(heartbeat(1, 2, 0))
      yield* waitUntil("the peers to talk", Effect.sync(() => b.received.length === 1))

      const random = prng(2024)
      const hello = encodeFrame(encodeHello({ version: peerProtocolVersion, clusterId: "test-cluster", nodeId: 9, peerId: 2, refused: null, address: null }))
      const wrongMessage = encodeFrame(makePacker().pack({ _tag: "Message", message: { _tag: "Heartbeat", from: 9, to: 2, term: "x" } } as never))
      const cases: Array<Uint8Array> = [
        Uint8Array.of(1, 2, 3), // not even a first word
        concat(peerMagicWord(), random.bytes(100)), // a peer whose hello is garbage
        concat(peerMagicWord(), Uint8Array.of(0xff, 0xff, 0xff, 0xff)), // a hello announcing 4 GiB
        concat(peerMagicWord(), hello, Uint8Array.of(0xff, 0xff, 0xff, 0xff), random.bytes(50)), // a frame announcing 4 GiB
        concat(peerMagicWord(), hello, wrongMessage), // a well-formed frame that is not a message
        concat(peerMagicWord(), hello, encodeFrames([random.bytes(40), random.bytes(7)])), // frames of garbage
        concat(Uint8Array.of(1, 0, 0, 0, 0, 0, 0, 0), random.bytes(64)) // a client no one serves
      ]
      for (let i = 0; i < 150; i++) cases.push(random.bytes(1 + random.int(300)))
      yield* Effect.forEach(cases, (bytes) => exchange(b.transport.address, bytes, { end: true }), { concurrency: 20 })
      // Without the half-close, the server's own timeouts end them.
      yield* Effect.forEach(cases.slice(0, 4), (bytes) => exchange(b.transport.address, bytes), { concurrency: 4 })

      const stats = yield* b.transport.stats
      expect(stats.inbound.rejected).toBeGreaterThanOrEqual(150)
      expect(stats.inbound.protocolErrors).toBeGreaterThanOrEqual(3)
      yield* waitUntil("only the real peer's connection to be left", Effect.map(b.transport.stats, (s) => s.inbound.connections === 1))
      // The real peer's link was never disturbed.
      for (let i = 1; i <= 100; i++) yield* a.transport.send(heartbeat(1, 2, i))
      yield* waitUntil("the peers to keep talking", Effect.sync(() => b.received.length === 101))
      expect(b.received.every((e) => e.message.from === 1)).toBe(true)
      expect((yield* link(a.transport)).reconnects).toBe(0)
    }), 20_000)

  it.scopedLive("a peer of another cluster is refused on both sides, and the log says why", () => {
    const logs = captureLogs()
    return Effect.gen(function*() {
      const a = yield* start({ nodeId: 1, clusterId: "alpha" })
      const b = yield* start({ nodeId: 2, clusterId: "beta" })
      yield* a.transport.setPeers(new Map([[2, b.transport.address]]))
      yield* a.transport.send(heartbeat(1, 2, 0))
      yield* waitUntil("a refusal", Effect.map(b.transport.stats, (s) => s.inbound.refused >= 1))
      yield* waitUntil("the link to see it", Effect.map(link(a.transport), (s) => s.connectFailures >= 1))
      expect(b.received).toEqual([])
      expect((yield* link(a.transport)).connected).toBe(false)
      const warnings = logs.lines.filter((line) => line.level === "WARN").map((line) => line.message)
      const reason = `cluster id "alpha" differs from ours ("beta")`
      expect(warnings).toContainEqual(expect.stringMatching(new RegExp(`^refusing peer connection from 127\\.0\\.0\\.1:\\d+: ${escape(reason)}$`)))
      expect(warnings).toContainEqual(`peer 2 at ${b.transport.address} refused our handshake: ${reason}`)
    }).pipe(Effect.provide(logs.layer))
  })

  it.scopedLive("a joining node's discovery probe gets the cluster's identity without a warning on the member", () => {
    const logs = captureLogs()
    return Effect.gen(function*() {
      const b = yield* start({ nodeId: 2, clusterId: "beta" })
      const found = yield* Effect.orDie(discoverCluster(b.transport.address))
      expect(found).toEqual({ clusterId: "beta", nodeId: 2 })
      yield* waitUntil("the probe's connection to be counted", Effect.map(b.transport.stats, (s) => s.inbound.refused >= 1))
      expect(logs.lines.filter((line) => line.level === "WARN")).toEqual([])
      expect(logs.lines).toContainEqual({ level: "DEBUG", message: expect.stringMatching(/^told 127\.0\.0\.1:\d+ who we are \(cluster discovery\)$/) })
    }).pipe(Effect.provide(logs.layer), Logger.withMinimumLogLevel(LogLevel.Debug))
  })

  it.scopedLive("a peer speaking another protocol version is refused, and the log says why", () => {
    const logs = captureLogs()
    return Effect.gen(function*() {
      const a = yield* start({ nodeId: 1, protocolVersion: 5 })
      const b = yield* start({ nodeId: 2 })
      yield* a.transport.setPeers(new Map([[2, b.transport.address]]))
      yield* a.transport.send(heartbeat(1, 2, 0))
      yield* waitUntil("a refusal", Effect.map(b.transport.stats, (s) => s.inbound.refused >= 1))
      yield* waitUntil("the link to see it", Effect.map(link(a.transport), (s) => s.connectFailures >= 1))
      expect(b.received).toEqual([])
      const warnings = logs.lines.filter((line) => line.level === "WARN").map((line) => line.message)
      expect(warnings).toContainEqual(expect.stringMatching(/^refusing peer connection from .*: peer protocol version 5 \(first word\) differs from ours \(4\)$/))
      expect(warnings).toContainEqual(expect.stringMatching(/refused our handshake: peer protocol version 5 \(first word\) differs from ours \(4\)$/))
    }).pipe(Effect.provide(logs.layer))
  })

  it.scopedLive("the connecting side checks the answer too: an acceptor of another cluster is refused", () => {
    const logs = captureLogs()
    return Effect.gen(function*() {
      // A fake node 2 that accepts anything and claims cluster "gamma".
      const hellos: Array<unknown> = []
      const server = net.createServer((socket) => {
        socket.on("error", () => {})
        socket.once("data", (chunk: Buffer) => {
          hellos.push(decodeHello(chunk.subarray(12)))
          socket.write(encodeFrame(encodeHello({ version: peerProtocolVersion, clusterId: "gamma", nodeId: 2, peerId: 1, refused: null, address: null })))
        })
      })
      const port = yield* Effect.async<number>((resume) => void server.listen(0, "127.0.0.1", () => resume(Effect.succeed((server.address() as net.AddressInfo).port))))
      yield* Effect.addFinalizer(() => Effect.sync(() => server.close()))
      const a = yield* start({ nodeId: 1 })
      yield* a.transport.setPeers(new Map([[2, `127.0.0.1:${port}`]]))
      yield* a.transport.send(heartbeat(1, 2, 0))
      yield* waitUntil("the link to refuse", Effect.map(link(a.transport), (s) => s.connectFailures >= 1))
      expect(hellos.length).toBeGreaterThanOrEqual(1)
      expect((yield* link(a.transport)).sent).toBe(0)
      const warnings = logs.lines.filter((line) => line.level === "WARN").map((line) => line.message)
      expect(warnings).toContainEqual(`refusing peer at 127.0.0.1:${port}: cluster id "gamma" differs from ours ("test-cluster")`)
      yield* Effect.sync(() => server.close())
    }).pipe(Effect.provide(logs.layer))
  })
})

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")
}

describe("layerTcp", () => {
  it.live("provides the Transport service, listening until the layer is released", () =>
    Effect.gen(function*() {
      const address = yield* Effect.gen(function*() {
        const transport = yield* Transport
        expect(transport.nodeId).toBe(7)
        expect(transport.address).toMatch(/^127\.0\.0\.1:\d+$/)
        expect((yield* exchange(transport.address, Uint8Array.of(9, 9, 9, 9, 9, 9, 9, 9))).byteLength).toBe(0)
        return transport.address
      }).pipe(Effect.provide(layerTcp({ nodeId: 7, clusterId: "c", listen: "127.0.0.1:0" })))
      // Released: nothing listens there any more.
      const refused = yield* Effect.either(Effect.async<void, Error>((resume) => {
        const [host, port] = address.split(":") as [string, string]
        const socket = net.connect({ host, port: Number(port) })
        socket.on("error", (error) => resume(Effect.fail(error)))
        socket.on("connect", () => {
          socket.destroy()
          resume(Effect.void)
        })
      }))
      expect(refused._tag).toBe("Left")
    }))

  it.live("fails with ListenFailed when the address is taken", () =>
    Effect.gen(function*() {
      const address = yield* Effect.scoped(Effect.gen(function*() {
        const first = yield* start({ nodeId: 1 })
        const taken = yield* Effect.either(Effect.scoped(makeTcp({ nodeId: 2, clusterId: "c", listen: first.transport.address })))
        expect(taken._tag === "Left" && taken.left._tag).toBe("ListenFailed")
        return first.transport.address
      }))
      expect(address).toMatch(/:\d+$/)
    }))
})
