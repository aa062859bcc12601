// The Transport service over TCP: one listening address per node serves peers and dqlite
// clients (told apart by the first word, see handshake.ts); one PeerLink per remote node
// carries our outbound traffic, and inbound peer connections carry theirs.
import type * as net from "node:net"
import type * as tls from "node:tls"
import type { Scope } from "effect"
import { Context, Duration, Effect, Either, ExecutionStrategy, Exit, Layer, Scope as ScopeOps } from "effect"
import type { Envelope } from "../../raft/messages.ts"
import type { NodeId } from "../../raft/types.ts"
import type { ConnectionError, FrameError } from "./errors.ts"
import { ConnectionClosed, ConnectionTimeout, ListenFailed } from "./errors.ts"
import { makeUnpacker } from "./framing.ts"
import type { Hello, LocalIdentity } from "./handshake.ts"
import { classifyFirstWord, peerProtocolVersion, respond, wordBytes } from "./handshake.ts"
import type { PeerLimits } from "./limits.ts"
import { peerLimits } from "./limits.ts"
import type { LinkStats, PeerLink } from "./PeerLink.ts"
import * as PeerLinkModule from "./PeerLink.ts"
import type { PeerTlsOptions } from "./sockets.ts"
import { closeGracefully, guard, parseAddress, remoteOf, SocketReader } from "./sockets.ts"
import { listen } from "../listener.ts"
import type { SnapshotInbox } from "../../actors/snapshotData.ts"
import { encodeResume, InboundSnapshots } from "./snapshots.ts"
import { traceMessage } from "../../runtime/trace.ts"
import { yieldToLoop } from "../../runtime/yieldToLoop.ts"

export interface InboundStats {
  /** Connections open now (peers and clients not yet handed over). */
  readonly connections: number
  readonly accepted: number
  /** Handed to the client-connection handler. */
  readonly clientConnections: number
  /** Closed at once: too many connections, an unknown first word, or nothing within the
   * handshake timeout. */
  readonly rejected: number
  /** Peer handshakes we refused (cluster, version, node id, certificate). */
  readonly refused: number
  /** Peer connections closed for a protocol error after the handshake. */
  readonly protocolErrors: number
  /** Envelopes handed to the `serve` handler. */
  readonly received: number
  /** Envelopes that arrived before any handler was registered. */
  readonly droppedNoHandler: number
  /** Envelopes whose from/to did not match the connection's handshake. */
  readonly droppedMisaddressed: number
  readonly snapshotsReceived: number
  readonly snapshotsDropped: number
}

export interface TransportStats {
  readonly links: ReadonlyArray<LinkStats>
  readonly inbound: InboundStats
  /** Envelopes for a node we have no link to. */
  readonly unroutable: number
}

export interface TransportService {
  readonly nodeId: NodeId
  /** The address actually listened on (port 0 resolved to the port chosen). */
  readonly address: string
  /** Routes by `envelope.message.to`; never waits (a full link drops and counts). */
  readonly send: (envelope: Envelope) => Effect.Effect<void>
  /** The same in plain code when a link to the peer exists (the usual case); false when only
   * `send` can (a link to start for a node known by its announced address). */
  readonly sendNow: (envelope: Envelope) => boolean
  /** The peers to keep links to: links to new nodes (or new addresses) start, links to nodes
   * no longer listed close. Our own id is ignored. */
  readonly setPeers: (peers: ReadonlyMap<NodeId, string>) => Effect.Effect<void>
  /** Registers (replaces) the handler of inbound envelopes, e.g. `RaftNode.deliver`. It runs
   * on the connection's fiber: while it waits, that connection is not read. */
  readonly serve: (onEnvelope: (envelope: Envelope) => Effect.Effect<void>) => Effect.Effect<void>
  /** Registers (replaces) a plain-code handler of inbound envelopes, used instead of `serve`'s
   * when both are registered: a peer's messages then cost its connection's fiber no Effect
   * operation each. It must not throw (a throw is a defect that ends that connection). */
  readonly serveNow: (onEnvelope: (envelope: Envelope) => void) => Effect.Effect<void>
  readonly stats: Effect.Effect<TransportStats>
}

export class Transport extends Context.Tag("tqlite/net/Transport")<Transport, TransportService>() {}

/** Takes a connection whose first word was a dqlite protocol version (`1n` or the legacy one).
 * The socket is positioned right after that word (bytes read past it were pushed back with
 * `unshift`). The effect should last as long as the connection: when it ends, or the transport
 * shuts down and interrupts it, the socket is destroyed. */
export type ClientConnectionHandler = (socket: net.Socket, version: bigint) => Effect.Effect<void>

export interface TcpTransportOptions {
  readonly nodeId: NodeId
  readonly clusterId: string
  /** "host:port"; port 0 picks a free one (see `address`). */
  readonly listen: string
  readonly limits?: Partial<PeerLimits>
  /** Seeds the links' backoff jitter; defaults to the node id. */
  readonly seed?: number
  /** Mutual TLS between peers, and TLS for clients on the same address. */
  readonly tls?: PeerTlsOptions
  /** Defaults to closing the connection. */
  readonly onClientConnection?: ClientConnectionHandler
  /** Where snapshots sent to this node are received (the node's snapshot store): streamed into
   * a file, resumable. Without one, snapshots are dropped (logged). */
  readonly snapshotInbox?: SnapshotInbox
  /** Only for tests of version refusal. */
  readonly protocolVersion?: number
}

interface LinkEntry {
  readonly link: PeerLink
  readonly address: string
  readonly scope: ScopeOps.CloseableScope
}

/** The transport in the current scope: listening once this succeeds, closed with the scope. */
export const makeTcp = (options: TcpTransportOptions): Effect.Effect<TransportService, ListenFailed, Scope.Scope> =>
  Effect.gen(function*() {
    const limits = peerLimits(options.limits)
    const nodeId = options.nodeId
    // Our listen address joins the identity once the server is listening (links start later).
    let local: LocalIdentity = { clusterId: options.clusterId, nodeId, version: options.protocolVersion ?? peerProtocolVersion, address: null }
    /** Addresses peers announced when they connected to us, newest last: how a node answers a
     * peer its configuration does not name yet (a node joining, or a leader before the
     * configuration reached us). Bounded. */
    const announced = new Map<NodeId, string>()
    const baseSeed = options.seed ?? nodeId
    const onClientConnection = options.onClientConnection ?? (() => Effect.void)
    const secure = options.tls ?? null
    // Every link lives in one scope made now, so links started later (a member joining) still
    // close after whatever the caller registered on its scope after us — e.g. a leader's
    // hand-over before shutdown, which needs its links to send TimeoutNow.
    const linksScope = yield* ScopeOps.fork(yield* Effect.scope, ExecutionStrategy.sequential)
    const links = new Map<NodeId, LinkEntry>()
    const linksLock = yield* Effect.makeSemaphore(1)
    let onEnvelope: ((envelope: Envelope) => Effect.Effect<void>) | null = null
    let onEnvelopeNow: ((envelope: Envelope) => void) | null = null
    let unroutable = 0
    const inbound = {
      connections: 0,
      accepted: 0,
      clientConnections: 0,
      rejected: 0,
      refused: 0,
      protocolErrors: 0,
      received: 0,
      droppedNoHandler: 0,
      droppedMisaddressed: 0,
      snapshotsReceived: 0,
      snapshotsDropped: 0
    }
    /** The newest inbound connection of each peer: an older one is closed when it reconnects. */
    const peerSockets = new Map<NodeId, net.Socket>()

    /** Delivers in plain code when it can: true when done (delivered or dropped), false when the
     * handler is an Effect or a log line is due (then `deliver`). */
    const deliverNow = (envelope: Envelope, hello: Hello): boolean => {
      const { from, to } = envelope.message
      if (from !== hello.nodeId || to !== nodeId || onEnvelopeNow === null) return false
      inbound.received++
      onEnvelopeNow(envelope)
      return true
    }

    const deliver = (envelope: Envelope, hello: Hello) =>
      Effect.suspend(() => {
        const { from, to } = envelope.message
        if (from !== hello.nodeId || to !== nodeId) {
          inbound.droppedMisaddressed++
          return Effect.logDebug(`dropping a message from ${from} to ${to} that came over node ${hello.nodeId}'s connection`)
        }
        if (onEnvelope === null) {
          inbound.droppedNoHandler++
          return Effect.void
        }
        inbound.received++
        return onEnvelope(envelope)
      })

    const servePeer = (socket: net.Socket, reader: SocketReader, magicVersion: number) =>
      Effect.gen(function*() {
        if (secure !== null && !(socket as tls.TLSSocket).authorized) {
          inbound.refused++
          const why = (socket as tls.TLSSocket).authorizationError ?? "no client certificate"
          return yield* Effect.logWarning(`refusing peer connection from ${remoteOf(socket)}: its certificate is not trusted (${String(why)})`)
        }
        const handshake = yield* Effect.either(respond({ socket, reader, local, magicVersion, timeoutMs: limits.handshakeTimeoutMs }))
        if (Either.isLeft(handshake)) {
          const error = handshake.left
          if (error._tag === "HandshakeRefused") {
            inbound.refused++
            if (error.discovery === true) yield* Effect.logDebug(`told ${remoteOf(socket)} who we are (cluster discovery)`)
            else yield* Effect.logWarning(`refusing peer connection from ${remoteOf(socket)}: ${error.reason}`)
            return yield* closeGracefully(socket, limits.handshakeTimeoutMs)
          }
          inbound.rejected++
          return yield* Effect.logWarning(`closing connection from ${remoteOf(socket)} during the peer handshake: ${describe(error)}`)
        }
        const hello = handshake.right
        if (hello.address !== null) {
          announced.delete(hello.nodeId)
          announced.set(hello.nodeId, hello.address)
          if (announced.size > limits.inboundConnectionsMax) announced.delete(announced.keys().next().value as NodeId)
        }
        peerSockets.get(hello.nodeId)?.destroy()
        peerSockets.set(hello.nodeId, socket)
        yield* Effect.logDebug(`peer ${hello.nodeId} connected from ${remoteOf(socket)}`)
        reader.decoder.frameBytesMax = limits.frameBytesMax
        const failure = yield* Effect.flip(receiveFrames(reader, hello)).pipe(
          Effect.ensuring(Effect.sync(() => {
            if (peerSockets.get(hello.nodeId) === socket) peerSockets.delete(hello.nodeId)
          }))
        )
        if (failure._tag === "ConnectionClosed") {
          return yield* Effect.logDebug(`peer ${hello.nodeId} disconnected: ${failure.detail}`)
        }
        inbound.protocolErrors++
        yield* Effect.logWarning(`closing connection from peer ${hello.nodeId} at ${remoteOf(socket)}: ${describe(failure)}`)
      })

    /** Reads, checks and delivers frames until the connection ends or breaks the protocol.
     * Frames already buffered are taken first, so a chunk of many small frames costs one read. */
    const receiveFrames = (reader: SocketReader, hello: Hello): Effect.Effect<never, FrameError | ConnectionClosed> =>
      Effect.scoped(Effect.gen(function*() {
        const unpacker = makeUnpacker(limits.frameBytesMax)
        const snapshots = new InboundSnapshots(options.snapshotInbox ?? null, limits.snapshotChunkBytes)
        yield* Effect.addFinalizer(() => snapshots.stop)
        const peerClosed = () => new ConnectionClosed({ detail: "the peer closed the connection" })
        while (true) {
          // A frame already buffered is taken in plain code (a message to the plain handler then
          // costs no Effect operation); otherwise wait for the socket.
          const buffered = reader.decoder.next()
          if (Either.isLeft(buffered)) return yield* buffered.left
          const payload = buffered.right ?? (yield* reader.readFrameOr(peerClosed))
          const decoded = unpacker.receive(payload)
          if (Either.isLeft(decoded)) return yield* decoded.left
          const frame = decoded.right
          // Part of a data message (framing.ts): its Message comes with its last chunk. While
          // the socket holds more, this loop reads on without returning to the event loop:
          // after each chunk, timers and the other sockets get a turn.
          if (frame === null) {
            yield* yieldToLoop
            continue
          }
          if (frame._tag === "Message") {
            traceMessage("peer.recv", frame.message)
            const envelope: Envelope = { message: frame.message, snapshot: null }
            if (!deliverNow(envelope, hello)) yield* deliver(envelope, hello)
            continue
          }
          const result = yield* (frame._tag === "SnapshotBegin" ? snapshots.begin(frame) : snapshots.chunk(frame))
          // The chunk is written (or ignored): its frame's memory serves the next chunk.
          if (frame._tag === "SnapshotChunk") reader.decoder.recycle(payload)
          if (result.resumeAt !== null && !reader.socket.destroyed) reader.socket.write(encodeResume(result.resumeAt.transfer, result.resumeAt.offset))
          if (result.dropped !== null) {
            inbound.snapshotsDropped++
            yield* Effect.logWarning(`snapshot from peer ${hello.nodeId} dropped: ${result.dropped}`)
          }
          if (result.completed !== null) {
            inbound.snapshotsReceived++
            yield* deliver(result.completed, hello)
          }
        }
      }))

    const handleInbound = (socket: net.Socket) =>
      Effect.gen(function*() {
        const reader = new SocketReader(socket, limits.handshakeBytesMax)
        const word = yield* Effect.either(reader.readExactly(wordBytes).pipe(
          Effect.timeoutFail({
            duration: Duration.millis(limits.handshakeTimeoutMs),
            onTimeout: () => new ConnectionTimeout({ phase: "first-word", timeoutMs: limits.handshakeTimeoutMs })
          })
        ))
        if (Either.isLeft(word)) {
          inbound.rejected++
          return yield* Effect.logDebug(`closing connection from ${remoteOf(socket)}: ${describe(word.left)}`)
        }
        const kind = classifyFirstWord(word.right)
        switch (kind._tag) {
          case "Client": {
            inbound.clientConnections++
            const rest = reader.decoder.takeAll()
            if (rest.byteLength > 0) socket.unshift(rest)
            return yield* onClientConnection(socket, kind.version)
          }
          case "Unknown":
            inbound.rejected++
            return yield* Effect.logDebug(`closing connection from ${remoteOf(socket)}: first word 0x${kind.word.toString(16)} is neither a dqlite version nor a tqlite peer`)
          case "Peer":
            return yield* servePeer(socket, reader, kind.version)
        }
      }).pipe(
        // A defect here (in the client handler or the envelope handler) costs this connection
        // only; say so loudly, it is a bug.
        Effect.catchAllDefect((defect) => Effect.logError(`connection from ${remoteOf(socket)} failed`, defect)),
        Effect.annotateLogs({ node: String(nodeId), remote: remoteOf(socket) })
      )

    // One listener for peers and clients (the first word tells them apart): capped, every
    // connection in a fiber of this scope, all closed with it.
    const address = yield* listen({
      address: options.listen,
      tls: secure === null ? null : {
        cert: secure.cert,
        key: secure.key,
        ca: secure.ca,
        requestCert: true,
        rejectUnauthorized: false,
        handshakeTimeout: limits.handshakeTimeoutMs
      },
      connectionsMax: limits.inboundConnectionsMax,
      prepare: (socket) => guard(socket, limits.keepAliveMs),
      serve: handleInbound,
      counts: inbound
    }, (cause) => new ListenFailed({ address: options.listen, cause }))

    local = { ...local, address }

    /** Starts the link to `id` at `peerAddress` (the caller holds linksLock). */
    const startLink = (id: NodeId, peerAddress: string) =>
      Effect.gen(function*() {
        const valid = Either.try(() => parseAddress(peerAddress))
        if (Either.isLeft(valid)) {
          yield* Effect.logError(`no link to peer ${id}: ${String(valid.left)}`)
          return undefined
        }
        const scope = yield* ScopeOps.fork(linksScope, ExecutionStrategy.sequential)
        const link = yield* PeerLinkModule.make({
          local,
          peer: id,
          address: peerAddress,
          limits,
          seed: (baseSeed * 65_537 + nodeId) * 65_537 + id,
          tls: secure
        }).pipe(ScopeOps.extend(scope), Effect.annotateLogs({ node: String(nodeId) }))
        const entry = { link, address: peerAddress, scope }
        links.set(id, entry)
        return entry
      })

    const setPeers = (peers: ReadonlyMap<NodeId, string>) =>
      linksLock.withPermits(1)(Effect.gen(function*() {
        for (const [id, entry] of [...links]) {
          if (peers.get(id) === entry.address) continue
          links.delete(id)
          yield* ScopeOps.close(entry.scope, Exit.void)
        }
        for (const [id, peerAddress] of peers) {
          if (id === nodeId || links.has(id)) continue
          yield* startLink(id, peerAddress)
        }
      }))

    const sendNow = (envelope: Envelope): boolean => {
      const entry = links.get(envelope.message.to)
      return entry !== undefined && entry.link.sendNow(envelope)
    }

    const send = (envelope: Envelope): Effect.Effect<void> =>
      Effect.suspend(() => {
        const to = envelope.message.to
        const entry = links.get(to)
        if (entry !== undefined) return entry.link.send(envelope)
        // Not in the configured peers: answer over a link to the address it announced.
        const peerAddress = announced.get(to)
        if (peerAddress === undefined || to === nodeId) {
          unroutable++
          return Effect.void
        }
        return linksLock.withPermits(1)(
          Effect.suspend(() => {
            const existing = links.get(to)
            return existing !== undefined ? Effect.succeed(existing) : startLink(to, peerAddress)
          })
        ).pipe(Effect.flatMap((started) => (started === undefined ? Effect.void : started.link.send(envelope))))
      })

    const serve = (handler: (envelope: Envelope) => Effect.Effect<void>) => Effect.sync(() => void (onEnvelope = handler))
    const serveNow = (handler: (envelope: Envelope) => void) => Effect.sync(() => void (onEnvelopeNow = handler))

    const stats = Effect.suspend(() =>
      Effect.map(
        Effect.forEach([...links.values()], (entry) => entry.link.stats),
        (linkStats): TransportStats => ({ links: linkStats, inbound: { ...inbound }, unroutable })
      )
    )

    return { nodeId, address, send, sendNow, setPeers, serve, serveNow, stats }
  })

export const layerTcp = (options: TcpTransportOptions): Layer.Layer<Transport, ListenFailed> => Layer.scoped(Transport, makeTcp(options))

function describe(error: ConnectionError): string {
  switch (error._tag) {
    case "FrameTooLarge":
      return `frame of ${error.frameBytes} bytes exceeds the ${error.frameBytesMax} allowed`
    case "MalformedFrame":
      return `malformed frame: ${error.detail}`
    case "HandshakeRefused":
      return error.reason
    case "ConnectionClosed":
      return error.detail
    case "ConnectionTimeout":
      return `${error.phase} timed out after ${error.timeoutMs} ms`
  }
}
