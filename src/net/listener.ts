// One TCP (or TLS) listener: accept, cap the connections served at once, serve each in a fiber
// of the listener's scope, and on close stop accepting, destroy every socket (those still in
// their TLS handshake too) and interrupt the fibers. What a connection speaks is the caller's
// `serve`: on the node's one address (peers/PeerTransport.ts) peers and dqlite clients are told
// apart by the first word; a server of clients only (the standalone gateway) is served the same.
import * as net from "node:net"
import * as tls from "node:tls"
import type { Scope } from "effect"
import { Duration, Effect, FiberSet } from "effect"
import { formatAddress, parseAddress } from "./peers/sockets.ts"

/** Counted by the listener; callers add their own refusals to `rejected`. */
export interface ConnectionCounts {
  /** Connections being served now. */
  connections: number
  accepted: number
  /** Closed at once: over the cap, a failed TLS handshake, or what the caller refused. */
  rejected: number
}

export interface ListenerOptions {
  /** "host:port"; port 0 picks a free one. */
  readonly address: string
  /** A TLS server (clients must present a certificate when `requestCert`); null: plain TCP. */
  readonly tls: tls.TlsOptions | null
  /** Connections served at once (TLS handshakes in progress count too); more are closed at accept. */
  readonly connectionsMax: number
  /** Called on each socket as it is accepted, before it is served (socket options, a permanent
   * 'error' listener). */
  readonly prepare: (socket: net.Socket) => void
  /** Serves one connection. The socket is destroyed when this ends or is interrupted. */
  readonly serve: (socket: net.Socket) => Effect.Effect<void>
  readonly counts: ConnectionCounts
}

/** How long closing may wait for the server to finish closing. */
const closeTimeoutMs = 5_000

/** Listens until the scope closes; gives the address actually listened on (port 0 resolved), or
 * fails with `failed(cause)` (a bad address, the port taken). */
export const listen = <E>(options: ListenerOptions, failed: (cause: unknown) => E): Effect.Effect<string, E, Scope.Scope> =>
  Effect.gen(function*() {
    const counts = options.counts
    // Connection fibers live in a FiberSet made before the server: the server is closed (and
    // every socket destroyed) first, then the fibers are interrupted.
    const runFork = yield* FiberSet.makeRuntime<never>()
    const server = options.tls === null ? net.createServer() : tls.createServer(options.tls)
    // Also caps sockets still in their TLS handshake, which the count below does not see yet.
    server.maxConnections = options.connectionsMax
    const served = new Set<net.Socket>()
    // Every accepted TCP connection, in its TLS handshake or not: `server.close` waits for each,
    // so closing destroys them all. A handshake that completes once closing has begun is
    // refused, else it would be served (and waited for) after the sockets were destroyed.
    let closing = false
    const accepted = new Set<net.Socket>()
    server.on("connection", (raw: net.Socket) => {
      if (closing) {
        raw.destroy()
        return
      }
      accepted.add(raw)
      raw.once("close", () => accepted.delete(raw))
    })
    server.on(options.tls === null ? "connection" : "secureConnection", (socket: net.Socket) => {
      if (closing) {
        socket.destroy()
        return
      }
      options.prepare(socket)
      if (served.size >= options.connectionsMax) {
        counts.rejected++
        socket.destroy()
        return
      }
      served.add(socket)
      counts.accepted++
      counts.connections++
      runFork(options.serve(socket).pipe(Effect.ensuring(Effect.sync(() => {
        socket.destroy()
        served.delete(socket)
        counts.connections--
      }))))
    })
    server.on("tlsClientError", (_error: Error, socket: net.Socket) => {
      counts.rejected++
      socket.destroy()
    })
    return yield* Effect.acquireRelease(bind(server, options.address, failed), () =>
      Effect.async<void>((resume) => {
        closing = true
        server.close(() => resume(Effect.void))
        for (const socket of served) socket.destroy()
        for (const raw of accepted) raw.destroy()
      }).pipe(
        // A finalizer runs uninterruptibly: without this the timeout could not stop the wait.
        Effect.interruptible,
        Effect.timeout(Duration.millis(closeTimeoutMs)),
        Effect.ignore
      ))
  })

function bind<E>(server: net.Server, address: string, failed: (cause: unknown) => E): Effect.Effect<string, E> {
  return Effect.async<string, E>((resume) => {
    let hostPort: { host: string; port: number }
    try {
      hostPort = parseAddress(address)
    } catch (cause) {
      return resume(Effect.fail(failed(cause)))
    }
    const onError = (cause: Error) => resume(Effect.fail(failed(cause)))
    server.once("error", onError)
    server.listen(hostPort.port, hostPort.host, () => {
      server.off("error", onError)
      // Later server errors (rare: e.g. EMFILE on accept) must not crash the process.
      server.on("error", () => {})
      const bound = server.address()
      resume(Effect.succeed(bound !== null && typeof bound === "object" ? formatAddress(bound.address, bound.port) : address))
    })
  })
}
