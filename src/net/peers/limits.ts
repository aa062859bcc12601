// Every bound of the peer links in one place, validated when a transport starts. Sizes in
// bytes, times in milliseconds (read from Effect's Clock, so TestClock drives them).
import { assert } from "../../assert.ts"

export interface PeerLimits {
  /** Largest frame payload accepted or sent after the handshake. An envelope that encodes
   * larger is dropped by the sender (it could never be delivered); a peer announcing a larger
   * frame is disconnected before anything of that size is allocated. Must hold the largest
   * AppendEntries the Raft core produces (one entry may exceed `appendBytesMax` alone). */
  readonly frameBytesMax: number
  /** Largest handshake frame: small, because it is read before the peer is known. */
  readonly handshakeBytesMax: number
  /** Snapshot data travels in chunks of at most this many bytes, one frame each: what a link
   * reads from the snapshot file per chunk and a receiver holds before writing it to its file.
   * No bound applies to a whole snapshot (it is streamed file to file); a transfer in flight is
   * one per link on the sender and one per node on the receiver (its store keeps one incoming
   * file: a new transfer supersedes it). */
  readonly snapshotChunkBytes: number
  /** Chunks of a snapshot (or of a data message) written per round of the link, between
   * batches of messages, so heartbeats keep flowing during a large transfer. */
  readonly snapshotChunksPerRound: number
  /** A large AppendEntries' entry data travels in chunk frames of at most this many bytes
   * (a data message, framing.ts), other frames between them: a heartbeat waits behind at most
   * `snapshotChunksPerRound` of them, never behind a whole entry. Under the receiver's 1 MiB
   * reused read buffer, so a chunk costs one copy (into the message being assembled). */
  readonly dataChunkBytes: number
  /** Envelopes waiting in one link's outbound queue; beyond it `send` drops (and counts). */
  readonly outboundMessagesMax: number
  /** Estimated bytes waiting in one link's outbound queue; beyond it `send` drops, except
   * into an empty queue (so one big envelope still goes). */
  readonly outboundBytesMax: number
  /** Most envelopes taken from the queue and written with one socket write. */
  readonly writeBatchMax: number
  /** While the socket holds more unsent bytes than this, the link stops writing and waits for
   * it to drain; the queue fills and then drops. Soft bound: one write group (a quarter of it,
   * plus the frame that crossed that) may pass it. At least 64 KiB. */
  readonly writeBufferBytesMax: number
  /** A socket that does not drain below `writeBufferBytesMax` within this time is considered
   * dead: it is destroyed and the link reconnects. */
  readonly stallTimeoutMs: number
  readonly connectTimeoutMs: number
  /** Time allowed for the first word and the handshake frames, both directions. */
  readonly handshakeTimeoutMs: number
  /** Reconnect backoff: base · 2^attempt capped at `reconnectCapMs`, each delay jittered down
   * to half of itself by the link's seeded random source. */
  readonly reconnectBaseMs: number
  readonly reconnectCapMs: number
  /** Inbound connections (peers and clients together) held at once; more are closed at once. */
  readonly inboundConnectionsMax: number
  /** TCP keep-alive probe delay on every socket, so half-open connections end. */
  readonly keepAliveMs: number
}

export const defaultPeerLimits: PeerLimits = {
  frameBytesMax: 64 * 1024 * 1024,
  handshakeBytesMax: 4096,
  snapshotChunkBytes: 1024 * 1024,
  snapshotChunksPerRound: 4,
  dataChunkBytes: 256 * 1024,
  outboundMessagesMax: 1024,
  outboundBytesMax: 64 * 1024 * 1024,
  writeBatchMax: 256,
  writeBufferBytesMax: 8 * 1024 * 1024,
  stallTimeoutMs: 10_000,
  connectTimeoutMs: 5_000,
  handshakeTimeoutMs: 5_000,
  reconnectBaseMs: 50,
  // A restarted peer is reached within half a second (a whole cluster restarting waits on this
  // for its first election); a dead one costs two refused connects a second.
  reconnectCapMs: 500,
  inboundConnectionsMax: 1024,
  keepAliveMs: 15_000
}

/** Bytes a snapshot chunk frame adds around its data (tags, ids, lengths); generous. */
export const chunkOverheadBytes = 256

/** Throws an AssertionError naming the first bound out of range or inconsistent. */
export function validatePeerLimits(limits: PeerLimits): PeerLimits {
  for (const [name, value] of Object.entries(limits)) {
    assert(Number.isSafeInteger(value) && value > 0, `${name} is a positive integer (got ${value})`)
  }
  assert(limits.frameBytesMax <= 0xffffffff, "frameBytesMax fits the u32 length prefix")
  assert(limits.handshakeBytesMax <= limits.frameBytesMax, "handshakeBytesMax <= frameBytesMax")
  assert(limits.snapshotChunkBytes + chunkOverheadBytes <= limits.frameBytesMax, "a snapshot chunk fits one frame")
  assert(limits.dataChunkBytes + chunkOverheadBytes <= limits.frameBytesMax, "a data chunk fits one frame")
  assert(limits.writeBatchMax <= limits.outboundMessagesMax, "writeBatchMax <= outboundMessagesMax")
  // The link waits for the socket's 'drain', which Node only promises once a write has crossed
  // the socket's high-water mark (16 KiB by default): the bound must sit well above it.
  assert(limits.writeBufferBytesMax >= 64 * 1024, "writeBufferBytesMax >= 64 KiB")
  assert(limits.reconnectBaseMs <= limits.reconnectCapMs, "reconnectBaseMs <= reconnectCapMs")
  return limits
}

export function peerLimits(overrides: Partial<PeerLimits> = {}): PeerLimits {
  return validatePeerLimits({ ...defaultPeerLimits, ...overrides })
}
