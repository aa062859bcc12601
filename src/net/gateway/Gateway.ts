// The dqlite wire protocol v1 server. `serveClient` serves one connection whose protocol version
// word has been read (what the peers listener's `onClientConnection` hook hands over, through
// `makeClientHandlerSlot`); `listen` is a standalone listener (tests).
//
// One fiber per connection reads a request, answers it, and reads the next: go-dqlite never
// pipelines, and the only message it sends while a response is in flight is INTERRUPT during a
// ROWS stream, which the stream polls for. State per connection is bounded: one open database,
// at most `statementsMax` statements, one message of at most `messageBytesMax` bytes buffered.
// A broken or oversized stream ends the connection; a malformed message gets a FAILURE; a defect
// (a bug here or in the SQL surface) is logged and costs that connection only. When the
// connection ends, its scope closes: the database session is released, which rolls back an
// open transaction.

import * as net from "node:net"
import type { Duplex } from "node:stream"
import type { Scope } from "effect"
import { Cause, Data, Duration, Effect } from "effect"
import { listenFailureText } from "../peers/errors.ts"
import { formatAddress } from "../peers/sockets.ts"
import { listen as listenOn } from "../listener.ts"
import type { GatewayDeps, SessionError } from "./ClientSession.ts"
import { ClientSession } from "./ClientSession.ts"
import { ProtocolVersion } from "./codes.ts"
import { decodeProtocolVersion } from "./framing.ts"
import type { GatewayLimits } from "./limits.ts"
import { gatewayLimits } from "./limits.ts"
import { FrameStream } from "./socketIo.ts"
import { trace } from "../../runtime/trace.ts"

export type { DatabaseDumper, DatabaseImage, GatewayDeps } from "./ClientSession.ts"
export type { GatewayObserver, ObservedRequestType } from "./GatewayObserver.ts"

export interface ServeOptions {
  readonly limits?: Partial<GatewayLimits>
  /** For log lines: who is on the other end. */
  readonly remote?: string
}

/** Serves one client connection until it closes or breaks. `version` is the protocol word the
 * client sent (already read); anything but v1 or legacy closes the connection. Never fails; the
 * caller destroys the stream when this ends (it is also destroyed here). */
export const serveClient = (
  stream: Duplex,
  version: bigint,
  deps: GatewayDeps,
  options: ServeOptions = {}
): Effect.Effect<void> =>
  Effect.suspend(() => {
    const limits = gatewayLimits(options.limits)
    const io = new FrameStream(stream, { messageBytesMax: limits.messageBytesMax, writeTimeoutMs: limits.writeTimeoutMs })
    return serveStream(io, version, deps, limits, options.remote ?? remoteOf(stream))
  })

/** Serves a stream whose version word has been read (bytes after it may be in `io`'s decoder). */
const serveStream = (io: FrameStream, version: bigint, deps: GatewayDeps, limits: GatewayLimits, remote: string): Effect.Effect<void> => {
  const protocol = version === ProtocolVersion.one ? "v1" : version === ProtocolVersion.legacy ? "legacy" : null
  if (protocol === null) {
    return Effect.zipRight(Effect.logDebug(`closing client connection from ${remote}: unknown protocol version 0x${version.toString(16)}`), io.close)
  }
  const observer = deps.observer
  const served = observer === undefined
    ? serveFrames(io, protocol, deps, limits)
    : Effect.acquireUseRelease(observer.connections(1), () => serveFrames(io, protocol, deps, limits), () => observer.connections(-1))
  return served.pipe(
    Effect.catchAllCause((cause) =>
      Cause.isInterruptedOnly(cause)
        ? Effect.void
        : Effect.logError("client connection failed on a defect; closing it", cause)
    ),
    Effect.ensuring(io.close),
    Effect.annotateLogs({ client: remote })
  )
}

const serveFrames = (io: FrameStream, protocol: "v1" | "legacy", deps: GatewayDeps, limits: GatewayLimits) =>
  Effect.scoped(
    Effect.gen(function*() {
      const scope = yield* Effect.scope
      const session = new ClientSession(deps, limits, io, scope, protocol)
      // Opened on a leader: closed when that leadership ends (at once if idle, else after the
      // answer in hand), so the client moves on to the new leader.
      const leadershipEnd = deps.leadershipEnd === undefined ? null : yield* deps.leadershipEnd
      let deposed = false
      let handling = false
      if (leadershipEnd !== null) {
        yield* Effect.forkScoped(Effect.zipRight(leadershipEnd, Effect.suspend(() => {
          deposed = true
          return handling ? Effect.void : Effect.zipRight(Effect.logDebug("closing an idle client connection: this node no longer leads"), io.close)
        })))
      }
      // Plain combinators, no generator: this turns once per request.
      const next: Effect.Effect<void, SessionError> = Effect.flatMap(io.readFrame, (frame) => {
        trace("gw.read")
        if (frame === null) return Effect.logDebug(deposed ? "closed the client connection: this node no longer leads" : "client closed the connection")
        handling = true
        return Effect.flatMap(session.handle(frame), () => {
          handling = false
          return deposed ? Effect.logDebug("closing a client connection after its answer: this node no longer leads") : next
        })
      })
      return yield* next
    }).pipe(
      Effect.catchTags({
        SocketError: (error) => Effect.logDebug(`client connection ended: ${error.detail}`),
        FramingError: (error) => Effect.logDebug(`closing client connection: ${error.error.message}`)
      })
    )
  )

/** The hook for a transport that must exist before the node it serves (the Raft node needs the
 * transport's `send`; the gateway needs the node): clients connecting before `bind` are closed,
 * and go-dqlite simply tries the next server. */
export function makeClientHandlerSlot(options: ServeOptions = {}) {
  let bound: GatewayDeps | null = null
  return {
    handler: (socket: net.Socket, version: bigint): Effect.Effect<void> =>
      Effect.suspend(() => (bound === null ? Effect.sync(() => socket.destroy()) : serveClient(socket, version, bound, options))),
    bind: (deps: GatewayDeps): void => {
      bound = deps
    }
  }
}

function remoteOf(stream: Duplex): string {
  const socket = stream as Partial<net.Socket>
  return socket.remoteAddress === undefined ? "unknown" : formatAddress(socket.remoteAddress, socket.remotePort ?? 0)
}

// ---------------------------------------------------------------------------------------------
// Standalone listener

export class GatewayListenFailed extends Data.TaggedError("GatewayListenFailed")<{ readonly address: string; readonly cause: unknown }> {
  override get message() {
    return listenFailureText(this.address, this.cause)
  }
}

export interface GatewayStats {
  /** Connections being served now. */
  readonly connections: number
  readonly accepted: number
  /** Closed at once: over `connectionsMax`, no version word in time, or an unknown one. */
  readonly rejected: number
}

export interface GatewayServer {
  /** The address actually listened on ("127.0.0.1:0" resolved to the chosen port). */
  readonly address: string
  readonly stats: Effect.Effect<GatewayStats>
}

export interface ListenOptions extends GatewayDeps {
  /** "host:port"; port 0 picks a free one. */
  readonly address: string
  readonly limits?: Partial<GatewayLimits>
}

/** A TCP listener serving dqlite clients only, in the current scope: closing the scope closes
 * the server, destroys every connection and interrupts their fibers. */
export const listen = (options: ListenOptions): Effect.Effect<GatewayServer, GatewayListenFailed, Scope.Scope> =>
  Effect.gen(function*() {
    const limits = gatewayLimits(options.limits)
    const deps: GatewayDeps = options
    const stats = { connections: 0, accepted: 0, rejected: 0 }

    const handle = (socket: net.Socket) =>
      Effect.gen(function*() {
        const io = new FrameStream(socket, { messageBytesMax: limits.messageBytesMax, writeTimeoutMs: limits.writeTimeoutMs })
        const word = yield* io.readWord.pipe(Effect.timeout(Duration.millis(limits.versionWordTimeoutMs)), Effect.option)
        if (word._tag === "None" || word.value === null) {
          stats.rejected++
          return
        }
        const version = decodeProtocolVersion(word.value)
        if (version.kind === "unknown") {
          stats.rejected++
          return
        }
        // Bytes after the word stay in the decoder, where the session reads them first.
        const versionWord = version.kind === "v1" ? ProtocolVersion.one : ProtocolVersion.legacy
        yield* serveStream(io, versionWord, deps, limits, remoteOf(socket))
      }).pipe(Effect.catchAllCause((cause) => Cause.isInterruptedOnly(cause) ? Effect.void : Effect.logError("client connection failed", cause)))

    const address = yield* listenOn({
      address: options.address,
      tls: null,
      connectionsMax: limits.connectionsMax,
      prepare: (socket) => {
        socket.on("error", () => {})
        socket.setNoDelay(true)
      },
      serve: handle,
      counts: stats
    }, (cause) => new GatewayListenFailed({ address: options.address, cause }))
    return { address, stats: Effect.sync(() => ({ ...stats })) }
  })

