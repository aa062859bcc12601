// Mutual TLS between peers: nodes with certificates from the cluster's CA talk; a node with a
// certificate from another CA, or without TLS, gets nowhere; a dqlite client over TLS is still
// handed to the client handler.
import * as net from "node:net"
import * as tls from "node:tls"
import { beforeAll, describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Fiber } from "effect"
import type { PeerTlsOptions } from "../../../src/net/peers/sockets.ts"
import { makeCertificates } from "../../certificates.ts"
import { bytesEqual, bytesOf, link, prng, start, storedSnapshot, waitUntil } from "./helpers.ts"

let cluster: PeerTlsOptions
let rogue: PeerTlsOptions

beforeAll(() => {
  cluster = makeCertificates("cluster")
  rogue = makeCertificates("rogue")
})

const heartbeat = (context: number) => ({ message: { _tag: "Heartbeat" as const, from: 1, to: 2, term: 1, commit: 0, context }, snapshot: null })

describe("TLS between peers", () => {
  it.scopedLive("peers with the cluster's certificates exchange messages and a snapshot", () =>
    Effect.gen(function*() {
      const a = yield* start({ nodeId: 1, tls: cluster })
      const b = yield* start({ nodeId: 2, tls: cluster })
      yield* a.transport.setPeers(new Map([[2, b.transport.address]]))
      for (let i = 0; i < 100; i++) yield* a.transport.send(heartbeat(i))
      const data = prng(1).bytes(3 * 1024 * 1024 + 5)
      const install = { _tag: "InstallSnapshot" as const, from: 1, to: 2, term: 1, meta: { index: 5, term: 1, config: { members: [] } } }
      yield* a.transport.send({ message: install, snapshot: yield* storedSnapshot(a.snapshots, install.meta, data) })
      yield* waitUntil("everything to arrive", Effect.sync(() => b.received.length === 101))
      expect(b.received.slice(0, 100).map((e) => (e.message._tag === "Heartbeat" ? e.message.context : -1))).toEqual(Array.from({ length: 100 }, (_, i) => i))
      expect(bytesEqual(yield* bytesOf(b.received[100]!.snapshot), data)).toBe(true)
    }))

  it.scopedLive("a node with another CA's certificate, or without TLS, never gets a message through", () =>
    Effect.gen(function*() {
      const b = yield* start({ nodeId: 2, tls: cluster })
      // Distrusts b's certificate: gives up during the TLS handshake.
      const stranger = yield* start({ nodeId: 1, tls: rogue })
      // Trusts b, but b does not trust its certificate: refused after the TLS handshake.
      const impostor = yield* start({ nodeId: 4, tls: { ...rogue, ca: cluster.ca } })
      const plain = yield* start({ nodeId: 3 })
      const others = [stranger, impostor, plain]
      for (const other of others) {
        yield* other.transport.setPeers(new Map([[2, b.transport.address]]))
        yield* other.transport.send({ message: { ...heartbeat(0).message, from: other.transport.nodeId }, snapshot: null })
      }
      yield* waitUntil(
        "every one to fail to connect twice",
        Effect.map(Effect.forEach(others, (other) => link(other.transport)), (links) => links.every((l) => l.connectFailures >= 2))
      )
      yield* Effect.sleep(Duration.millis(100))
      expect(b.received).toEqual([])
      for (const other of others) expect((yield* link(other.transport)).connected).toBe(false)
      const inbound = (yield* b.transport.stats).inbound
      expect(inbound.refused).toBeGreaterThanOrEqual(2) // the impostor, each time
      expect(inbound.rejected).toBeGreaterThanOrEqual(2) // TLS handshakes that failed
    }))

  it.scopedLive("a dqlite client over TLS, without a client certificate, reaches the client handler", () =>
    Effect.gen(function*() {
      const versions: Array<bigint> = []
      const b = yield* start({ nodeId: 2, tls: cluster, onClientConnection: (_, version) => Effect.sync(() => void versions.push(version)) })
      const [host, port] = b.transport.address.split(":") as [string, string]
      yield* Effect.async<void>((resume) => {
        const socket = tls.connect({ host, port: Number(port), ca: cluster.ca, checkServerIdentity: () => undefined })
        socket.on("error", () => {})
        socket.on("secureConnect", () => socket.write(Buffer.from([1, 0, 0, 0, 0, 0, 0, 0])))
        socket.on("close", () => resume(Effect.void))
        return Effect.sync(() => socket.destroy())
      }).pipe(Effect.timeout(Duration.seconds(3)))
      expect(versions).toEqual([1n])
    }))

  // The shutdown hang seen with mutual TLS (issue 13): a client connection accepted over TCP but
  // still in its TLS handshake when the node closed was in no list to destroy; `server.close`
  // waited for it, and when its handshake finished after the close it was served like any other,
  // so the node never finished closing while the client held it (the 5 s bound on the close did
  // not apply: a finalizer cannot be interrupted).
  it.scopedLive("closing while a client is in its TLS handshake ends that connection and finishes at once", () =>
    Effect.gen(function*() {
      const served: Array<bigint> = []
      // Like the gateway: serves a client until it goes away.
      const b = yield* start({
        nodeId: 2,
        tls: cluster,
        onClientConnection: (socket, version) =>
          Effect.async<void>((resume) => {
            served.push(version)
            if (socket.destroyed) return resume(Effect.void)
            socket.once("close", () => resume(Effect.void))
          })
      })
      const [host, port] = b.transport.address.split(":") as [string, string]
      // Accepted over TCP; the TLS handshake starts only once the node is closing.
      const raw = yield* Effect.async<net.Socket>((resume) => {
        const socket = net.connect({ host, port: Number(port) }, () => resume(Effect.succeed(socket)))
        socket.on("error", () => {})
      })
      yield* Effect.addFinalizer(() => Effect.sync(() => raw.destroy()))
      yield* Effect.sleep(Duration.millis(100))
      const startedMs = Date.now()
      const closing = yield* Effect.forkDaemon(b.close)
      yield* Effect.sleep(Duration.millis(20))
      const secured = tls.connect({ socket: raw, ca: cluster.ca, checkServerIdentity: () => undefined })
      secured.on("error", () => {})
      secured.on("secureConnect", () => secured.write(Buffer.from([1, 0, 0, 0, 0, 0, 0, 0])))
      yield* Effect.addFinalizer(() => Effect.sync(() => secured.destroy()))
      const closed = yield* Fiber.await(closing).pipe(Effect.timeout(Duration.seconds(3)), Effect.option)
      expect(closed._tag, `the transport did not finish closing within 3 s (served ${served.length} client(s) after the close began)`).toBe("Some")
      expect(Date.now() - startedMs).toBeLessThan(3_000)
      expect(served).toEqual([])
    }))
})
