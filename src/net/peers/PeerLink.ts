// One actor per remote peer: it owns the outbound connection and a bounded queue of envelopes.
// `send` never waits: a full queue drops and counts (Raft retries what matters). The actor
// takes up to `writeBatchMax` queued envelopes at a time and writes them with one socket write;
// while the socket's unsent bytes exceed `writeBufferBytesMax` it stops writing, so a slow peer
// fills the queue and then costs drops, never memory. Connections are (re)made with capped,
// jittered exponential backoff on Effect's Clock; the jitter comes from a seeded Random.
// Snapshot data goes out in chunks read from the snapshot's file, a few per round between batches
// of messages; the receiver may answer on the same connection where to continue (snapshots.ts).
import type * as net from "node:net"
import type { Scope } from "effect"
import { Clock, Duration, Effect, Either, Random, Runtime, Schedule } from "effect"
import type { Envelope } from "../../raft/messages.ts"
import * as Actor from "../../runtime/Actor.ts"
import type { NodeId } from "../../raft/types.ts"
import type { ConnectionError } from "./errors.ts"
import type { FramePacker, PackedFrame, PeerFrame } from "./framing.ts"
import { commandDataBytes, dataChunkFrame, encodeFrames, envelopeSizeBytes, lengthPrefixBytes, makePacker, outOfBandDataBytes } from "./framing.ts"
import { assert } from "../../assert.ts"
import { largePayloadBytes } from "../../runtime/yieldToLoop.ts"
import type { LocalIdentity } from "./handshake.ts"
import { initiate } from "./handshake.ts"
import type { PeerLimits } from "./limits.ts"
import type { PeerTlsOptions } from "./sockets.ts"
import { awaitDrain, connect, SocketReader } from "./sockets.ts"
import { WriteCoalescer } from "../streamIo.ts"
import { isSnapshotSource } from "../../actors/snapshotData.ts"
import { FrameDecoder } from "./framing.ts"
import { decodeResume, OutboundSnapshot, resumeFrameBytes } from "./snapshots.ts"
import { trace, traceMessage } from "../../runtime/trace.ts"

export interface PeerLinkOptions {
  readonly local: LocalIdentity
  readonly peer: NodeId
  readonly address: string
  readonly limits: PeerLimits
  /** Seeds this link's backoff jitter. */
  readonly seed: number
  readonly tls: PeerTlsOptions | null
}

export interface LinkStats {
  readonly peer: NodeId
  readonly address: string
  /** A handshaken connection is up. */
  readonly connected: boolean
  /** Envelopes handed to the socket (a snapshot counts once its last chunk is). */
  readonly sent: number
  /** Envelopes given up: queue full (by count or bytes), too large for a frame, a duplicate of
   * the snapshot already in flight, or waiting when their connection died. */
  readonly dropped: number
  /** Connections made after the first one. */
  readonly reconnects: number
  /** Connection attempts that failed (unreachable, refused, timed out). */
  readonly connectFailures: number
  /** Envelopes and estimated bytes waiting in the queue. */
  readonly queued: number
  readonly queuedBytes: number
  /** Bytes the socket holds unsent right now. */
  readonly writeBufferBytes: number
  readonly bytesWritten: number
  /** Socket writes made (syscalls: a turn's writes count once): `sent / writes` is how well
   * batching works. */
  readonly writes: number
}

export interface PeerLink {
  readonly peer: NodeId
  readonly address: string
  /** Queues the envelope or drops it (counted) when the queue is full; never waits. */
  readonly send: (envelope: Envelope) => Effect.Effect<void>
  /** The same in plain code (always done: written, queued or dropped). */
  readonly sendNow: (envelope: Envelope) => true
  readonly stats: Effect.Effect<LinkStats>
}

type LinkMessage =
  | { readonly _tag: "Send"; readonly envelope: Envelope; readonly bytes: number }
  /** Self-addressed: keep pumping the snapshot in flight. */
  | { readonly _tag: "Continue" }
  /** The receiver asks to continue transfer `transfer` from `offset`. */
  | { readonly _tag: "Resume"; readonly transfer: number; readonly offset: number }

interface Group {
  payloads: Array<PackedFrame>
  bytes: number
  /** Envelopes the group completes. */
  messages: number
}

interface Connection {
  readonly socket: net.Socket
  readonly packer: FramePacker
  /** Everything written in one turn (the messages of one Raft batch, the actor's round) leaves
   * in one syscall. */
  readonly coalescer: WriteCoalescer
  closed: boolean
}

/** Frame payloads from this size are written as they are, not copied behind their length prefix
 * (a copy of an append's pages per follower was ~2 % of a busy leader's main thread). */
const payloadCopyBytesMax = 16 * 1024

/** Delays between connection attempts: base · 2^n, capped, then scaled by a random factor in
 * [0.5, 1] (so never above the cap). Draws from the Random service in the fiber's context. */
export function reconnectSchedule(baseMs: number, capMs: number): Schedule.Schedule<unknown> {
  return Schedule.exponential(Duration.millis(baseMs), 2).pipe(
    Schedule.union(Schedule.spaced(Duration.millis(capMs))),
    Schedule.jitteredWith({ min: 0.5, max: 1 })
  )
}

/** Starts the link in the current scope; closing the scope stops it and closes its socket. */
export const make = (options: PeerLinkOptions): Effect.Effect<PeerLink, never, Scope.Scope> =>
  Effect.gen(function*() {
    const { address, limits, local, peer } = options
    const counters = { sent: 0, dropped: 0, oversize: 0, queueFull: 0, connects: 0, connectFailures: 0, queuedBytes: 0, bytesWritten: 0, writes: 0 }
    // What the actor owns, kept here so `stats` and the finalizer can see it.
    let connection: Connection | null = null
    let attempt: net.Socket | null = null // the socket of the attempt in progress
    let snapshot: OutboundSnapshot | null = null
    /** The transfer sent last, kept after its last chunk so a Resume (a gap) can reopen it; its
     * file stays pinned in the store until it is replaced. */
    let lastSnapshot: OutboundSnapshot | null = null
    const setLastSnapshot = (next: OutboundSnapshot | null) => {
      if (lastSnapshot !== null && lastSnapshot !== next) lastSnapshot.release()
      lastSnapshot = next
    }
    let nextTransfer = 1
    /** A data message being sent (framing.ts): its entries' data still to go in chunk frames,
     * a few per round between other frames. */
    let dataOut: { readonly parts: ReadonlyArray<Uint8Array>; part: number; offset: number } | null = null
    /** AppendEntries and snapshots taken while a data message is being sent: they must not
     * overtake it (the receiver would see a gap), so they wait for its last chunk, still counted
     * in `queuedBytes`. Bounded by the mailbox they came from. */
    const heldForData: Array<{ readonly envelope: Envelope; readonly bytes: number }> = []
    let continuePending = false
    let failuresInARow = 0
    const random = Random.make(options.seed)
    const runFork = Runtime.runFork(yield* Effect.runtime<never>())
    const schedule = reconnectSchedule(limits.reconnectBaseMs, limits.reconnectCapMs)

    const destroyAll = () => {
      connection?.socket.destroy()
      attempt?.destroy()
      connection = null
      attempt = null
    }
    yield* Effect.addFinalizer(() => Effect.sync(destroyAll))

    const connectOnce: Effect.Effect<Connection, ConnectionError> = Effect.gen(function*() {
      const socket = yield* connect({
        address,
        timeoutMs: limits.connectTimeoutMs,
        keepAliveMs: limits.keepAliveMs,
        tls: options.tls,
        onSocket: (socket) => {
          attempt?.destroy()
          attempt = socket
        }
      })
      const reader = new SocketReader(socket, limits.handshakeBytesMax)
      yield* initiate({ socket, reader, local, peer, timeoutMs: limits.handshakeTimeoutMs })
      const made: Connection = { socket, packer: makePacker(), coalescer: new WriteCoalescer(socket), closed: socket.destroyed }
      // The acceptor sends nothing after its hello but Resume frames for a snapshot transfer;
      // reading also notices an end or a reset at once rather than at the next write.
      const back = new FrameDecoder(resumeFrameBytes)
      const lost = () => {
        if (made.closed) return
        made.closed = true
        socket.destroy()
        // Reconnect now rather than at the next send, so the link is up when Raft needs it.
        if (connection === made) runFork(nudge)
      }
      socket.on("close", lost)
      socket.on("end", lost)
      socket.on("data", (chunk: Buffer) => {
        back.push(chunk)
        while (true) {
          const next = back.next()
          if (next._tag === "Left") return lost()
          if (next.right === null) return
          const resume = decodeResume(next.right)
          if (resume === null) return lost()
          if (self !== null) runFork(Effect.ignore(self.trySend({ _tag: "Resume", transfer: resume.transfer, offset: resume.offset })))
        }
      })
      attempt = null
      return made
    }).pipe(
      Effect.tapError(() =>
        Effect.sync(() => {
          attempt?.destroy()
          attempt = null
        })
      )
    )

    const logFailure = (error: ConnectionError) =>
      Effect.suspend(() => {
        counters.connectFailures++
        failuresInARow++
        if (error._tag === "HandshakeRefused") {
          const who = error.by === "remote" ? `peer ${peer} at ${address} refused our handshake` : `refusing peer at ${address}`
          return Effect.logWarning(`${who}: ${error.reason}`)
        }
        const detail = error._tag === "ConnectionTimeout" ? `${error.phase} timed out after ${error.timeoutMs} ms` : error._tag === "ConnectionClosed" ? error.detail : error._tag
        const line = `cannot reach peer ${peer} at ${address} (attempt ${failuresInARow}): ${detail}`
        return failuresInARow === 1 ? Effect.logInfo(line) : Effect.logDebug(line)
      })

    /** A live connection, made with backoff if there is none (retries until interrupted). */
    const ensureConnection = Effect.gen(function*() {
      if (connection !== null && !connection.closed) return connection
      if (connection !== null) {
        yield* Effect.logInfo(`connection to peer ${peer} at ${address} lost; reconnecting`)
        connection.socket.destroy()
        connection = null
        if (snapshot !== null) {
          // Raft offers it again; the receiver then resumes from what its file holds.
          counters.dropped++
          snapshot = null
        }
        setLastSnapshot(null)
        dropData()
      }
      const made = yield* connectOnce.pipe(
        Effect.tapError(logFailure),
        Effect.retry(schedule),
        Effect.withRandom(random),
        Effect.orDie // the schedule never ends: only interruption leaves the loop
      )
      counters.connects++
      failuresInARow = 0
      yield* Effect.logInfo(`connected to peer ${peer} at ${address}`)
      connection = made
      return made
    })

    /** Whether the link may write to `current` now, after waiting out a write buffer above its
     * bound. False when the connection closed meanwhile or its buffer did not drain within
     * `stallTimeoutMs` (then it is marked closed, to be replaced). */
    const room = (current: Connection): Effect.Effect<boolean> =>
      Effect.gen(function*() {
        if (current.closed) return false
        if (current.socket.writableLength <= limits.writeBufferBytesMax) return true
        const drained = yield* Effect.either(awaitDrain(current.socket, limits.stallTimeoutMs))
        if (Either.isLeft(drained)) {
          yield* Effect.logWarning(
            `peer ${peer} at ${address} has not read ${current.socket.writableLength} bytes for ${limits.stallTimeoutMs} ms; reconnecting`
          )
          current.closed = true
        }
        return !current.closed
      })

    /** A connection with room to write, made or replaced as needed. */
    const writableConnection: Effect.Effect<Connection> = Effect.gen(function*() {
      while (true) {
        const current = yield* ensureConnection
        if (yield* room(current)) return current
      }
    })

    /** Log lines produced by the plain functions below, written by the caller. */
    const warnings: Array<string> = []
    let snapshotBegunMs = 0
    const framesOf = (envelopes: ReadonlyArray<Envelope>, nowMs: number): Array<PeerFrame> => {
      const frames: Array<PeerFrame> = []
      for (const envelope of envelopes) {
        const message = envelope.message
        const messageBytes = envelopeSizeBytes(envelope)
        if (messageBytes > limits.frameBytesMax) {
          // Raft will offer it again and again: a misconfiguration (entries larger than a frame)
          // that must be visible, but not at heartbeat rate. Logged at the 1st, 2nd, 4th, … drop.
          counters.dropped++
          counters.oversize++
          if ((counters.oversize & (counters.oversize - 1)) === 0) {
            warnings.push(`dropping a ${message._tag} of about ${messageBytes} bytes for peer ${peer}: more than frameBytesMax ${limits.frameBytesMax} (${counters.oversize} so far)`)
          }
          continue
        }
        if (envelope.snapshot === null) {
          frames.push({ _tag: "Message", message })
          continue
        }
        if (message._tag !== "InstallSnapshot" || !isSnapshotSource(envelope.snapshot)) {
          counters.dropped++
          continue
        }
        // A Raft retry of the transfer already under way is not sent again — unless the receiver
        // never answered its Begin (lost, or refused) within stallTimeoutMs: then it begins anew.
        if (snapshot !== null && snapshot.carries(message) && !(snapshot.awaitingStart && nowMs - snapshotBegunMs > limits.stallTimeoutMs)) {
          counters.dropped++
          continue
        }
        if (snapshot !== null) counters.dropped++ // superseded by a newer one
        snapshot = new OutboundSnapshot(nextTransfer++, message, envelope.snapshot, limits.snapshotChunkBytes)
        snapshotBegunMs = nowMs
        setLastSnapshot(snapshot)
        frames.push(snapshot.begin)
      }
      return frames
    }

    /** A new connection starts a new codec: a data message half sent is lost (Raft sends its
     * entries again), and so are the messages held behind it. */
    const dropData = () => {
      if (dataOut !== null) counters.dropped++
      dataOut = null
      for (const held of heldForData.splice(0)) {
        counters.queuedBytes -= held.bytes
        counters.dropped++
      }
    }
    const mustFollowData = (envelope: Envelope) => envelope.message._tag === "AppendEntries" || envelope.snapshot !== null
    /** A data message's chunks are added only while the socket holds less than this: what a
     * heartbeat queued behind them waits for is at most this much data being read, not the
     * whole `writeBufferBytesMax` (8 MiB: 0.6 s on the loaded VM, and the leader lost its
     * quorum). */
    const dataInSocketBytesMax = limits.dataChunkBytes * limits.snapshotChunksPerRound
    let drainWatched = false
    /** Nudges the link once `current`'s socket has drained (or within stallTimeoutMs, after
     * which the next round's `room` decides), without holding the actor meanwhile. */
    const watchDrain = (current: Connection) => {
      if (drainWatched) return
      drainWatched = true
      runFork(Effect.ignore(awaitDrain(current.socket, limits.stallTimeoutMs)).pipe(
        Effect.zipRight(Effect.sync(() => void (drainWatched = false))),
        Effect.zipRight(nudge)
      ))
    }

    let self: Actor.Actor<LinkMessage> | null = null
    const nudge = Effect.suspend(() => {
      if (continuePending || self === null) return Effect.void
      continuePending = true
      return Effect.catchAll(self.trySend({ _tag: "Continue" }), () => Effect.sync(() => void (continuePending = false)))
    })

    /** Writes the group's frames, with whatever else this turn writes, in one syscall. Small
     * frames are copied behind their length prefixes into one buffer; a payload from
     * `payloadCopyBytesMax` on (an append's pages) is not copied: prefix and payload go to the
     * socket as they are, one writev (packed payloads are fresh memory, never reused by the
     * packer, and an inline data frame's data parts are entries' data, never changed once
     * appended: holding them until the turn ends is safe). */
    const flush = (current: Connection, group: Group) => {
      if (group.payloads.length === 0) return
      const syscall = current.coalescer.hold()
      current.socket.cork()
      let small: Array<Uint8Array> = []
      // Frames whose memory the sender reuses once the socket has taken them (snapshot chunks).
      const writtenCallbacks: Array<() => void> = []
      for (const frame of group.payloads) {
        if (frame.parts.length === 1 && frame.byteLength < payloadCopyBytesMax) {
          small.push(frame.parts[0]!)
          if (frame.written !== undefined) writtenCallbacks.push(frame.written)
          continue
        }
        if (small.length > 0) current.socket.write(encodeFrames(small))
        small = []
        const prefix = Buffer.allocUnsafe(lengthPrefixBytes)
        prefix.writeUInt32LE(frame.byteLength, 0)
        current.socket.write(prefix)
        const written = frame.written
        frame.parts.forEach((part, i) => {
          // The socket calls back once the part reached the kernel, or with an error once it was
          // destroyed: either way it no longer reads the memory.
          if (written !== undefined && i === frame.parts.length - 1) current.socket.write(part, () => written())
          else current.socket.write(part)
        })
      }
      if (small.length > 0) current.socket.write(encodeFrames(small))
      // Copied into the small frames' buffer: theirs is free at once.
      for (const written of writtenCallbacks) written()
      current.socket.uncork()
      trace("link.write")
      counters.bytesWritten += group.bytes
      if (syscall) counters.writes++
      counters.sent += group.messages
      group.payloads = []
      group.bytes = 0
      group.messages = 0
    }
    // A large batch goes out in groups of this size, each only when the socket has room.
    const groupBytesMax = Math.max(1, Math.floor(limits.writeBufferBytesMax / 4))
    const messagesIn = (frames: ReadonlyArray<PeerFrame>) => frames.filter((frame) => frame._tag === "Message").length

    const receive = (batch: ReadonlyArray<LinkMessage>) =>
      Effect.gen(function*() {
        const envelopes: Array<Envelope> = []
        for (const message of batch) {
          if (message._tag === "Send") {
            traceMessage("link.take", message.envelope.message)
            counters.queuedBytes -= message.bytes
            envelopes.push(message.envelope)
          } else if (message._tag === "Resume") {
            const resumed = lastSnapshot
            if (resumed === null || resumed.transfer !== message.transfer) continue
            resumed.resumeAt(message.offset)
            if (!resumed.done) snapshot = resumed
            else {
              // The receiver holds it whole: nothing more to send, and nothing can reopen it, so
              // its file is unpinned now (kept until the link dropped the transfer, an older
              // snapshot held a leader at 3× its database).
              if (snapshot === resumed) {
                snapshot = null
                counters.sent++
              }
              setLastSnapshot(null)
            }
          } else {
            continuePending = false
          }
        }
        const current = yield* writableConnection
        // Held behind a data message that has gone out whole: their turn, in order, first.
        const ready: Array<Envelope> = []
        const candidates = dataOut === null && heldForData.length > 0 ? [...heldForData.splice(0).map((held) => {
          counters.queuedBytes -= held.bytes
          return held.envelope
        }), ...envelopes] : envelopes
        let dataStarts = dataOut !== null
        for (const envelope of candidates) {
          if (dataStarts && mustFollowData(envelope)) {
            const bytes = envelopeSizeBytes(envelope)
            counters.queuedBytes += bytes
            heldForData.push({ envelope, bytes })
            continue
          }
          ready.push(envelope)
          if (envelope.message._tag === "AppendEntries" && commandDataBytes(envelope.message) >= outOfBandDataBytes) dataStarts = true
        }
        const frames = framesOf(ready, yield* Clock.currentTimeMillis)
        for (const line of warnings.splice(0)) yield* Effect.logWarning(line)
        const group: Group = { payloads: [], bytes: 0, messages: 0 }
        for (let i = 0; i < frames.length; i++) {
          const frame = frames[i]!
          const data = current.packer.packData(frame)
          const payload: PackedFrame = data === null ? current.packer.packFrame(frame) : { parts: [data.header], byteLength: data.header.byteLength }
          if (data !== null) {
            assert(dataOut === null, "one data message at a time per connection")
            dataOut = { parts: data.data, part: 0, offset: 0 }
          }
          if (payload.byteLength > limits.frameBytesMax) {
            // The size estimate missed: this frame cannot go, and frames packed after it could
            // refer to record structures it defined. Send what came before, then start over.
            flush(current, group)
            yield* Effect.logWarning(`a frame for peer ${peer} has ${payload.byteLength} bytes, more than ${limits.frameBytesMax}; reconnecting`)
            counters.dropped += messagesIn(frames.slice(i))
            current.closed = true
            return null
          }
          group.payloads.push(payload)
          group.bytes += lengthPrefixBytes + payload.byteLength
          // A data message counts as sent with its last chunk.
          if (frame._tag === "Message" && data === null) group.messages++
          if (group.bytes >= groupBytesMax && i < frames.length - 1) {
            flush(current, group)
            if (!(yield* room(current))) {
              counters.dropped += messagesIn(frames.slice(i + 1))
              return null
            }
          }
        }
        // A data message's chunks fill what room the write buffer has left, a few per round,
        // so the heartbeats queued meanwhile go out between them.
        for (let i = 0; i < limits.snapshotChunksPerRound && dataOut !== null; i++) {
          if (current.socket.writableLength + group.bytes >= dataInSocketBytesMax) break
          const part = dataOut.parts[dataOut.part]!
          const end = Math.min(part.byteLength, dataOut.offset + limits.dataChunkBytes)
          const chunk = dataChunkFrame(part.subarray(dataOut.offset, end))
          group.payloads.push(chunk)
          group.bytes += lengthPrefixBytes + chunk.byteLength
          dataOut.offset = end
          if (end === part.byteLength) {
            dataOut.part++
            dataOut.offset = 0
          }
          if (dataOut.part === dataOut.parts.length) {
            dataOut = null
            group.messages++
          }
        }
        // Snapshot chunks fill what room the write buffer has left, a few per round.
        let snapshotBlocked = false
        for (let i = 0; i < limits.snapshotChunksPerRound && snapshot !== null; i++) {
          if (current.socket.writableLength + group.bytes > limits.writeBufferBytesMax) {
            snapshotBlocked = true
            break
          }
          const read = yield* Effect.either(snapshot.nextChunk)
          if (read._tag === "Left") {
            // Pruned meanwhile (a newer snapshot exists): Raft offers the newer one.
            yield* Effect.logInfo(`snapshot ${snapshot.message.meta.index} for peer ${peer} can no longer be read; dropped`)
            counters.dropped++
            snapshot = null
            setLastSnapshot(null)
            break
          }
          // Raw bytes behind a fixed header (framing.ts), not msgpack: no copy of the data.
          const chunk = read.right
          if (chunk !== null) {
            group.payloads.push(chunk)
            group.bytes += lengthPrefixBytes + chunk.byteLength
          }
          if (snapshot.done) {
            snapshot = null
            group.messages++
          }
        }
        flush(current, group)
        // A transfer waiting for the receiver's first Resume is pumped again when it arrives; one
        // whose socket is full, once it drained (not at once: that spun the link, a round per
        // turn of the loop doing nothing, on the CPU the receiver needs — issue 17's joins).
        if (snapshot !== null && !snapshot.awaitingStart) {
          if (snapshotBlocked) watchDrain(current)
          else yield* nudge
        }
        // The rest of a data message once the socket has taken what it holds (a round later if
        // there is room; the actor goes on meanwhile, so messages queued behind the data are
        // written at once), then what waited behind it.
        if (dataOut !== null && current.socket.writableLength >= dataInSocketBytesMax) watchDrain(current)
        else if (dataOut !== null || heldForData.length > 0) yield* nudge
        return null
      })

    const actor = yield* Actor.make<null, LinkMessage, never>({
      name: `peer-link-${local.nodeId}-to-${peer}`,
      mailboxCapacity: limits.outboundMessagesMax,
      batchMax: limits.writeBatchMax,
      // A restart after a defect starts from nothing: no connection, no transfer.
      initial: Effect.sync(() => {
        destroyAll()
        snapshot = null
        setLastSnapshot(null)
        dropData()
        return null
      }),
      receive: (_, batch) => receive(batch),
      supervision: { restartsMax: 5, windowMs: 60_000 }
    }).pipe(Effect.annotateLogs({ peer: String(peer), address }))
    self = actor
    // Connect now rather than at the first send: a follower sends nothing to the other followers
    // until its leader dies, and the election that then needs the link would pay for the connect.
    yield* nudge

    /** Writes `envelope` at once, in the caller's fiber, when the link's actor would do just that
     * with nothing before it: the actor waits between batches with nothing queued, the connection
     * is up, no snapshot is being sent, and the socket has room. Saves a fiber hop per message on
     * the replication path. False: nothing done, queue it. */
    const writeNow = (envelope: Envelope, bytes: number): boolean => {
      const current = connection
      if (current === null || current.closed || snapshot !== null || envelope.snapshot !== null || continuePending) return false
      if (dataOut !== null || heldForData.length > 0) return false
      // A large entry goes through the actor's corked write of its parts.
      if (self === null || !self.idle() || bytes > limits.frameBytesMax || bytes >= largePayloadBytes) return false
      if (current.socket.writableLength + bytes > limits.writeBufferBytesMax) return false
      traceMessage("link.take", envelope.message)
      const payload = current.packer.packFrame({ _tag: "Message", message: envelope.message })
      if (payload.byteLength > limits.frameBytesMax) {
        // The estimate missed: the actor's path deals with it (and reconnects).
        current.closed = true
        counters.dropped++
        return true
      }
      flush(current, { payloads: [payload], bytes: lengthPrefixBytes + payload.byteLength, messages: 1 })
      return true
    }

    /** Writes, queues or drops (counted) `envelope` in plain code: what `send` does, with the
     * full queue's log line (at the 1st, 2nd, 4th, … drop) written by a fiber of its own. */
    const sendNow = (envelope: Envelope): true => {
      const bytes = envelopeSizeBytes(envelope)
      if (counters.queuedBytes === 0 && writeNow(envelope, bytes)) return true
      if (counters.queuedBytes > 0 && counters.queuedBytes + bytes > limits.outboundBytesMax) return queueFull(envelope, "bytes")
      counters.queuedBytes += bytes
      if (!actor.offer({ _tag: "Send", envelope, bytes })) {
        counters.queuedBytes -= bytes
        return queueFull(envelope, "messages")
      }
      return true
    }

    const send = (envelope: Envelope): Effect.Effect<void> => Effect.sync(() => void sendNow(envelope))

    /** A full queue drops (Raft sends again what matters; its own window fits the queue, see
     * the bounds table src/limits.ts, so this is a peer that stopped reading): counted, and said at the
     * 1st, 2nd, 4th, … drop, not at heartbeat rate. */
    const queueFull = (envelope: Envelope, by: "bytes" | "messages"): true => {
      counters.dropped++
      counters.queueFull++
      if ((counters.queueFull & (counters.queueFull - 1)) !== 0) return true
      const bound = by === "bytes" ? `outboundBytesMax ${limits.outboundBytesMax}` : `outboundMessagesMax ${limits.outboundMessagesMax}`
      runFork(Effect.logWarning(`the queue to peer ${peer} is full (${bound}): dropping a ${envelope.message._tag} (${counters.queueFull} so far)`).pipe(Effect.annotateLogs({ peer: String(peer), address })))
      return true
    }

    const stats = Effect.map(actor.size, (queued): LinkStats => ({
      peer,
      address,
      connected: connection !== null && !connection.closed,
      sent: counters.sent,
      dropped: counters.dropped,
      reconnects: Math.max(0, counters.connects - 1),
      connectFailures: counters.connectFailures,
      queued,
      queuedBytes: counters.queuedBytes,
      writeBufferBytes: connection?.socket.writableLength ?? 0,
      bytesWritten: counters.bytesWritten,
      writes: counters.writes
    }))

    return { peer, address, send, sendNow, stats }
  })
