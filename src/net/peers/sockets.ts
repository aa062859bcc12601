// node:net sockets as Effects: connect with a timeout, pull-based reads (the socket is read only
// when we ask, so a slow consumer back-pressures the sender through TCP), drain and close.
// Every socket gets a permanent 'error' listener at creation: an unheard 'error' event would
// crash the process; errors are observed through `socket.errored` and 'close' instead.
import * as net from "node:net"
import * as tls from "node:tls"
import { Duration, Effect, Either } from "effect"
import type { FrameError } from "./errors.ts"
import { ConnectionClosed, ConnectionTimeout } from "./errors.ts"
import { FrameDecoder } from "./framing.ts"
import type { Decoding } from "../streamIo.ts"
import { drained, readDecoded } from "../streamIo.ts"

/** Mutual TLS between peers: every node presents `cert`/`key` and accepts peers whose
 * certificate is signed by `ca`. Host names are not checked (peers are often addressed by IP);
 * membership in the CA is the trust boundary, as in dqlite. */
export interface PeerTlsOptions {
  readonly cert: string | Buffer
  readonly key: string | Buffer
  readonly ca: string | Buffer
}

export interface HostPort {
  readonly host: string
  readonly port: number
}

/** Parses "host:port", "[v6]:port". Throws on anything else: addresses come from config. */
export function parseAddress(address: string): HostPort {
  const match = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(address)
  const host = match?.[1] ?? match?.[2]
  const port = Number(match?.[3])
  if (host === undefined || !Number.isInteger(port) || port < 0 || port > 65535) {
    throw new Error(`bad address "${address}": expected host:port`)
  }
  return { host, port }
}

export function formatAddress(host: string, port: number): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`
}

const ignore = () => {}

/** Called on every socket as soon as it exists. */
export function guard(socket: net.Socket, keepAliveMs: number): void {
  socket.on("error", ignore)
  socket.setNoDelay(true)
  socket.setKeepAlive(true, keepAliveMs)
}

export function remoteOf(socket: net.Socket): string {
  return socket.remoteAddress === undefined ? "unknown" : formatAddress(socket.remoteAddress, socket.remotePort ?? 0)
}

const closedError = (socket: net.Socket, what: string) =>
  new ConnectionClosed({ detail: socket.errored ? `${what}: ${String(socket.errored)}` : what, cause: socket.errored ?? undefined })

/** Opens a connection (TLS when `tlsOptions` is set). `onSocket` sees the socket the moment it
 * exists, so its owner can destroy it even if this effect is interrupted half way. */
export function connect(options: {
  readonly address: string
  readonly timeoutMs: number
  readonly keepAliveMs: number
  readonly tls: PeerTlsOptions | null
  readonly onSocket: (socket: net.Socket) => void
}): Effect.Effect<net.Socket, ConnectionClosed | ConnectionTimeout> {
  const attempt = Effect.async<net.Socket, ConnectionClosed>((resume) => {
    const { host, port } = parseAddress(options.address)
    const secure = options.tls
    const socket = secure === null
      ? net.connect({ host, port })
      : tls.connect({ host, port, cert: secure.cert, key: secure.key, ca: secure.ca, checkServerIdentity: () => undefined })
    guard(socket, options.keepAliveMs)
    options.onSocket(socket)
    const ready = secure === null ? "connect" : "secureConnect"
    const onReady = () => {
      detach()
      resume(Effect.succeed(socket))
    }
    const onFail = () => {
      detach()
      socket.destroy()
      resume(Effect.fail(closedError(socket, `connect to ${options.address} failed`)))
    }
    const detach = () => {
      socket.off(ready, onReady)
      socket.off("error", onFail)
      socket.off("close", onFail)
    }
    socket.once(ready, onReady)
    socket.once("error", onFail)
    socket.once("close", onFail)
    return Effect.sync(() => {
      detach()
      socket.destroy()
    })
  })
  return attempt.pipe(
    Effect.timeoutFail({
      duration: Duration.millis(options.timeoutMs),
      onTimeout: () => new ConnectionTimeout({ phase: "connect", timeoutMs: options.timeoutMs })
    })
  )
}

/** Pull-based reading of one socket through a frame decoder. While no read is pending the
 * socket is paused, so TCP pushes back on the sender. */
export class SocketReader {
  readonly decoder: FrameDecoder

  constructor(readonly socket: net.Socket, frameBytesMax: number) {
    this.decoder = new FrameDecoder(frameBytesMax)
  }

  /** Exactly `n` bytes (buffered ones first); fails if the stream ends before. */
  readExactly(n: number): Effect.Effect<Uint8Array, ConnectionClosed> {
    return Effect.suspend(() =>
      readDecoded(this.socket, {
        decoded: () => (this.decoder.bufferedBytes >= n ? Effect.succeed(this.decoder.take(n)) : null),
        push: (chunk) => this.decoder.push(chunk),
        ended: () => Effect.fail(closedError(this.socket, `stream ended after ${this.decoder.bufferedBytes} of ${n} bytes`)),
        failed: () => closedError(this.socket, "read failed")
      }))
  }

  /** The read loop's view of the decoder: whole frames; the stream may not end. */
  private readonly frames: Decoding<Uint8Array, FrameError | ConnectionClosed> = {
    decoded: () => {
      const next = this.decoder.next()
      return Either.isLeft(next) ? Effect.fail(next.left) : next.right !== null ? Effect.succeed(next.right) : null
    },
    push: (chunk) => this.decoder.push(chunk),
    ended: () => Effect.fail(closedError(this.socket, "stream ended")),
    failed: () => closedError(this.socket, "read failed")
  }

  /** The next frame's payload; fails on end of stream, oversize or an empty frame. */
  readonly readFrame: Effect.Effect<Uint8Array, FrameError | ConnectionClosed> = Effect.suspend(() => readDecoded(this.socket, this.frames))

  /** `readFrame`, but a clean end of the stream fails with `ended` instead (a peer's connection
   * closed between frames says so). */
  readFrameOr(ended: () => ConnectionClosed): Effect.Effect<Uint8Array, FrameError | ConnectionClosed> {
    return Effect.suspend(() => readDecoded(this.socket, { ...this.frames, ended: () => Effect.fail(ended()) }))
  }
}

/** Waits until the socket's write buffer has drained (or the socket closed). */
export function awaitDrain(socket: net.Socket, timeoutMs: number): Effect.Effect<void, ConnectionTimeout> {
  return drained(socket).pipe(
    Effect.timeoutFail({
      duration: Duration.millis(timeoutMs),
      onTimeout: () => new ConnectionTimeout({ phase: "drain", timeoutMs })
    })
  )
}

/** Flushes what was written, half-closes, and destroys the socket once the peer is told (or
 * after `timeoutMs`): for refusals, whose reason the other side should get to read. */
export function closeGracefully(socket: net.Socket, timeoutMs: number): Effect.Effect<void> {
  const flushed = Effect.async<void>((resume) => {
    if (socket.destroyed) return resume(Effect.void)
    let resumed = false
    const done = () => {
      if (resumed) return
      resumed = true
      resume(Effect.void)
    }
    socket.end(done)
    socket.once("close", done)
    return Effect.sync(() => socket.off("close", done))
  })
  return flushed.pipe(
    Effect.timeout(Duration.millis(timeoutMs)),
    Effect.ignore,
    Effect.ensuring(Effect.sync(() => socket.destroy()))
  )
}
