// The dqlite wire protocol v1 server. `serveClient` serves one connection whose protocol version
// word has been read (what the peers listener's `onClientConnection` hook hands over, through
// `makeClientHandlerSlot`). There is no listener here: clients and peers share the node's one
// address, so the peers' listener tells them apart by the first word and hands clients over.
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
import { Cause, Effect } from "effect"
import { formatAddress } from "../peers/sockets.ts"
import type { GatewayDeps, PlainStep, SessionError } from "./ClientSession.ts"
import { ClientSession } from "./ClientSession.ts"
import { ProtocolVersion } from "../protocol/codes.ts"
import type { GatewayLimits } from "./limits.ts"
import { gatewayLimits } from "./limits.ts"
import { FrameStream } from "../protocol/socketIo.ts"
import { trace } from "../../runtime/trace.ts"

export type { DatabaseDumper, DatabaseImage, GatewayDeps } from "./ClientSession.ts"
export type { GatewayObserver, ObservedRequestType } from "./GatewayObserver.ts"

export interface ServeOptions {
  readonly limits?: Partial<GatewayLimits>
  /** For log lines: who is on the other end. */
  readonly remote?: string
  /** Deliberate slower paths, for the tests and benchmarks that compare: `effectPerRequest`
   * answers every request in the connection's fiber, as before the plain statement path. */
  readonly bugs?: { readonly effectPerRequest?: boolean }
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
    return serveStream(io, version, deps, limits, options.remote ?? remoteOf(stream), options.bugs?.effectPerRequest === true)
  })

/** Serves a stream whose version word has been read (bytes after it may be in `io`'s decoder). */
const serveStream = (io: FrameStream, version: bigint, deps: GatewayDeps, limits: GatewayLimits, remote: string, effectPerRequest: boolean): Effect.Effect<void> => {
  const protocol = version === ProtocolVersion.one ? "v1" : version === ProtocolVersion.legacy ? "legacy" : null
  if (protocol === null) {
    return Effect.zipRight(Effect.logDebug(`closing client connection from ${remote}: unknown protocol version 0x${version.toString(16)}`), io.close)
  }
  const observer = deps.observer
  const served = observer === undefined
    ? serveFrames(io, protocol, deps, limits, effectPerRequest)
    : Effect.acquireUseRelease(observer.connections(1), () => serveFrames(io, protocol, deps, limits, effectPerRequest), () => observer.connections(-1))
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

const serveFrames = (io: FrameStream, protocol: "v1" | "legacy", deps: GatewayDeps, limits: GatewayLimits, effectPerRequest: boolean) =>
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
      // The requests come in and go out as plain code, run by the socket's events and the
      // writer's callbacks (`plainRun`); this fiber runs only what needs Effect and waits for
      // the end: no fiber resumption per statement.
      if (effectPerRequest) return yield* serveInFiber(io, session, () => deposed, (value) => {
        handling = value
      })
      const next: Effect.Effect<void, SessionError> = Effect.flatMap(plainRun(io, session, {
        deposed: () => deposed,
        handling: (value) => {
          handling = value
        }
      }), (stop) => {
        switch (stop._tag) {
          case "End":
            return Effect.logDebug(deposed ? "closed the client connection: this node no longer leads" : "client closed the connection")
          case "Deposed":
            return Effect.logDebug("closing a client connection after its answer: this node no longer leads")
          case "Run":
            return Effect.flatMap(stop.step, () => {
              handling = false
              return deposed ? Effect.logDebug("closing a client connection after its answer: this node no longer leads") : next
            })
        }
      })
      return yield* next
    }).pipe(
      Effect.catchTags({
        SocketError: (error) => Effect.logDebug(`client connection ended: ${error.detail}`),
        FramingError: (error) => Effect.logDebug(`closing client connection: ${error.error.message}`)
      })
    )
  )

/** The loop before the plain path (`bugs.effectPerRequest`): every request read and answered in
 * the connection's fiber. */
const serveInFiber = (io: FrameStream, session: ClientSession, deposed: () => boolean, handling: (value: boolean) => void): Effect.Effect<void, SessionError> => {
  const next: Effect.Effect<void, SessionError> = Effect.flatMap(io.readFrame, (frame) => {
    if (frame === null) return Effect.logDebug(deposed() ? "closed the client connection: this node no longer leads" : "client closed the connection")
    handling(true)
    return Effect.flatMap(session.handle(frame), () => {
      handling(false)
      return deposed() ? Effect.logDebug("closing a client connection after its answer: this node no longer leads") : next
    })
  })
  return next
}

/** Why `plainRun` handed the connection back to its fiber. */
type PlainStop =
  | { readonly _tag: "End" }
  | { readonly _tag: "Deposed" }
  | { readonly _tag: "Run"; readonly step: Effect.Effect<void, SessionError> }

const stopEnd: PlainStop = { _tag: "End" }
const stopDeposed: PlainStop = { _tag: "Deposed" }

/** Reads and answers requests as plain code until one needs the fiber (`Run`), the stream ends
 * (`End`; a broken stream or a malformed frame fails), or the node no longer leads after an
 * answer (`Deposed`). Waits for bytes with a 'readable' callback and for a write's answer with
 * the writer's callback; one request at a time, as before. Interrupting it (the connection's
 * scope closing) drops a pending answer: the connection is going away. */
const plainRun = (
  io: FrameStream,
  session: ClientSession,
  state: { readonly deposed: () => boolean; readonly handling: (value: boolean) => void }
): Effect.Effect<PlainStop, SessionError> =>
  Effect.async<PlainStop, SessionError>((resume) => {
    let active = true
    const stop = (effect: Effect.Effect<PlainStop, SessionError>) => {
      active = false
      resume(effect)
    }
    /** After an answer: the next request, or back to the fiber. */
    const answered = (step: PlainStep): boolean => {
      if (step !== null) {
        stop(Effect.succeed({ _tag: "Run", step }))
        return false
      }
      state.handling(false)
      if (state.deposed()) {
        stop(Effect.succeed(stopDeposed))
        return false
      }
      return true
    }
    const later = (step: PlainStep) => {
      try {
        if (active && answered(step)) pump()
      } catch (defect) {
        if (active) stop(Effect.die(defect))
      }
    }
    // Run by the socket's events and the writer's callbacks: a defect here (a bug in the session
    // or the SQL surface) must end this connection, as it did in the fiber, not the caller.
    const pump = (): void => {
      try {
        pumpFrames()
      } catch (defect) {
        if (active) stop(Effect.die(defect))
      }
    }
    const pumpFrames = (): void => {
      while (active) {
        const taken = io.takeFrameNow()
        if (taken === undefined) return io.whenReadable(pump)
        if (Effect.isEffect(taken)) return stop(Effect.map(taken, (frame) => (frame === null ? stopEnd : { _tag: "Run", step: session.handle(frame) })))
        trace("gw.read")
        state.handling(true)
        const step = session.handlePlain(taken, later)
        if (step === "pending" || !answered(step)) return
      }
    }
    pump()
    return Effect.sync(() => {
      active = false
      io.cancelWhenReadable(pump)
    })
  })

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
