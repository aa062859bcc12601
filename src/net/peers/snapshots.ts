// Snapshot data over a peer link, streamed between files: the sender reads chunks from its
// snapshot store as it writes them, the receiver writes them into its store's incoming file.
// Neither side ever holds more than a chunk of it, so no size bound applies below the disk's.
//
// Sender → receiver (the link's own connection): `SnapshotBegin` (the InstallSnapshot message,
// total size, CRC32C of the data, a transfer id unique on the connection), then `SnapshotChunk`
// frames, each with the data offset it starts at, 1 … `snapshotChunkBytes` bytes, interleaved
// with other frames.
// Receiver → sender (the same connection's other direction, otherwise silent): `Resume
// {transfer, offset}`: "continue from here". The receiver answers every `SnapshotBegin` with one
// (offset 0 for a new snapshot; the durable prefix it holds of this one when a transfer was
// broken by a lost connection or a restart of either node: its incoming file and manifest
// survive), and sends one when a chunk skips past what it holds (a gap). The sender sends no
// chunk before the first Resume, so a resumed transfer reads nothing twice; a Raft retry of a
// transfer still waiting for it begins again. A chunk repeating bytes already held is ignored.
// The receiver delivers the envelope once every byte arrived, the checksum matched and the file
// is durable, and then sends a Resume at the total size: the sender's file need not stay pinned.
// A checksum mismatch discards the partial file (the leader offers it again).
import { Effect } from "effect"
import { assert } from "../../assert.ts"
import type { IncomingSnapshot, SnapshotInbox, SnapshotSource } from "../../actors/snapshotData.ts"
import type { Envelope, InstallSnapshot } from "../../raft/messages.ts"
import type { PackedFrame, PeerFrame } from "./framing.ts"
import { lengthPrefixBytes, snapshotChunkFrame } from "./framing.ts"

type BeginFrame = Extract<PeerFrame, { _tag: "SnapshotBegin" }>
type ChunkFrame = Extract<PeerFrame, { _tag: "SnapshotChunk" }>

/** Read buffers a sending transfer keeps for reuse once the socket has taken their chunk: what
 * the socket holds (`writeBufferBytesMax`, 8 MiB, in 1 MiB chunks) plus a round's worth. More in
 * flight are allocated and dropped after use. */
export const chunkBuffersMax = 16

/** The sending side of one transfer: where it reads next. */
export class OutboundSnapshot {
  private offset = 0
  /** No Resume has told where to start yet. */
  private waiting = true
  /** Keeps the sender's file from being pruned while this transfer may still read it. */
  private readonly unpin: () => void
  /** Read buffers whose chunk the socket has handed to the kernel: the next chunks are read
   * into them (fresh memory costs ~0.9 ms per MiB on the dev VM: a 1 GiB transfer paid ~1 s for
   * it). Dropped with the transfer. */
  private readonly free: Array<Uint8Array> = []
  private released = false

  constructor(
    readonly transfer: number,
    readonly message: InstallSnapshot,
    readonly source: SnapshotSource,
    readonly chunkBytes: number
  ) {
    assert(Number.isSafeInteger(chunkBytes) && chunkBytes > 0, "chunkBytes > 0")
    this.unpin = source.pin?.() ?? (() => {})
  }

  /** The link is done with this transfer (superseded, its connection lost, or the link reset). */
  release(): void {
    this.released = true
    this.free.length = 0
    this.unpin()
  }

  get begin(): BeginFrame {
    return {
      _tag: "SnapshotBegin",
      transfer: this.transfer,
      message: this.message,
      totalBytes: this.source.sizeBytes,
      crc32c: this.source.crc32c
    }
  }

  /** Every byte was handed to the socket (a Resume may still reopen it). */
  get done(): boolean {
    return !this.waiting && this.offset >= this.source.sizeBytes
  }

  /** Sent its Begin and waits for the receiver's first Resume. */
  get awaitingStart(): boolean {
    return this.waiting
  }

  get nextOffset(): number {
    return this.offset
  }

  /** The next chunk's frame, read from the file now (its data a view of a reused buffer, which
   * comes back once the frame's `written` is called); null once all were taken. */
  readonly nextChunk: Effect.Effect<PackedFrame | null, unknown> = Effect.suspend(() => {
    if (this.waiting || this.done) return Effect.succeed(null)
    const offset = this.offset
    const buffer = this.free.pop() ?? Buffer.allocUnsafeSlow(this.chunkBytes)
    return Effect.map(this.source.read(offset, this.chunkBytes, buffer), (data): PackedFrame | null => {
      assert(data.byteLength > 0, `snapshot ${this.message.meta.index} read nothing at ${offset} of ${this.source.sizeBytes}`)
      this.offset = offset + data.byteLength
      // A source that ignored `into` returned memory of its own: nothing to give back.
      const written = data.buffer === buffer.buffer ? () => this.reuse(buffer) : undefined
      return snapshotChunkFrame(this.transfer, offset, data, written)
    })
  })

  private reuse(buffer: Uint8Array): void {
    if (this.released || this.free.length >= chunkBuffersMax || this.free.includes(buffer)) return
    this.free.push(buffer)
  }

  /** The receiver holds everything before `offset`: continue from there. */
  resumeAt(offset: number): void {
    this.waiting = false
    this.offset = Math.max(0, Math.min(offset, this.source.sizeBytes))
  }

  /** Whether `message` is the snapshot this transfer already carries (a Raft retry). */
  carries(message: InstallSnapshot): boolean {
    return message.meta.index === this.message.meta.index && message.meta.term === this.message.meta.term
  }
}

// --- the back channel: Resume frames ------------------------------------------------------------

const resumeTag = 1
/** tag u8, transfer f64, offset f64. */
export const resumeFrameBytes = 17

export function encodeResume(transfer: number, offset: number): Uint8Array {
  const out = new Uint8Array(lengthPrefixBytes + resumeFrameBytes)
  const view = new DataView(out.buffer)
  view.setUint32(0, resumeFrameBytes, true)
  view.setUint8(4, resumeTag)
  view.setFloat64(5, transfer, true)
  view.setFloat64(13, offset, true)
  return out
}

/** A Resume frame's payload (without its length prefix), or null when it is not one. */
export function decodeResume(payload: Uint8Array): { readonly transfer: number; readonly offset: number } | null {
  if (payload.byteLength !== resumeFrameBytes || payload[0] !== resumeTag) return null
  const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength)
  const transfer = view.getFloat64(1, true)
  const offset = view.getFloat64(9, true)
  if (!Number.isSafeInteger(transfer) || !Number.isSafeInteger(offset) || offset < 0) return null
  return { transfer, offset }
}

// --- the receiving side --------------------------------------------------------------------------

export interface InboundEvent {
  /** A snapshot that arrived whole, checked and durable. */
  readonly completed: Envelope | null
  /** Why a snapshot was dropped, for the log. */
  readonly dropped: string | null
  /** Tell the sender to continue from this offset. */
  readonly resumeAt: { readonly transfer: number; readonly offset: number } | null
}

const nothing: InboundEvent = { completed: null, dropped: null, resumeAt: null }

/** The receiving side of one connection: at most one transfer, written into the inbox. */
export class InboundSnapshots {
  private current: { readonly begin: BeginFrame; readonly incoming: IncomingSnapshot; lastResume: number } | null = null

  constructor(readonly inbox: SnapshotInbox | null, readonly chunkBytesMax: number) {}

  get receiving(): boolean {
    return this.current !== null
  }

  begin(frame: BeginFrame): Effect.Effect<InboundEvent> {
    const self = this
    return Effect.gen(function*() {
      const superseded = self.current
      yield* self.stop
      const supersededReason = superseded === null ? null : `snapshot transfer ${superseded.begin.transfer} superseded before it finished`
      const join = (problem: string) => (supersededReason === null ? problem : `${supersededReason}; ${problem}`)
      if (self.inbox === null) return { ...nothing, dropped: join(`snapshot transfer ${frame.transfer}: this node has no snapshot store`) }
      const opened = yield* Effect.either(self.inbox.receive(frame.message.meta, frame.totalBytes, frame.crc32c))
      if (opened._tag === "Left") return { ...nothing, dropped: join(`snapshot transfer ${frame.transfer} cannot be stored: ${describe(opened.left)}`) }
      const incoming = opened.right
      self.current = { begin: frame, incoming, lastResume: -1 }
      const offset = yield* incoming.offset
      const resumeAt = { transfer: frame.transfer, offset }
      // Held whole already (a transfer whose delivery was lost): deliver, and tell the sender.
      if (offset === frame.totalBytes) return { ...(yield* self.complete(supersededReason)), resumeAt }
      self.current.lastResume = offset
      return { completed: null, dropped: supersededReason, resumeAt }
    })
  }

  chunk(frame: ChunkFrame): Effect.Effect<InboundEvent> {
    const self = this
    return Effect.gen(function*() {
      const current = self.current
      // Chunks of a transfer given up on (or superseded) are ignored quietly.
      if (current === null || current.begin.transfer !== frame.transfer) return nothing
      if (frame.data.byteLength === 0 || frame.data.byteLength > self.chunkBytesMax || frame.offset + frame.data.byteLength > current.begin.totalBytes) {
        yield* self.stop
        return { ...nothing, dropped: `snapshot transfer ${frame.transfer} dropped: a chunk of ${frame.data.byteLength} bytes at ${frame.offset} of ${current.begin.totalBytes}` }
      }
      const before = yield* current.incoming.offset
      const written = yield* Effect.either(current.incoming.writeAt(frame.offset, frame.data))
      if (written._tag === "Left") {
        yield* self.stop
        return { ...nothing, dropped: `snapshot transfer ${frame.transfer} dropped: ${describe(written.left)}` }
      }
      if (written.right === current.begin.totalBytes) return yield* self.complete(null)
      // A gap (chunks lost to a reconnect the sender did not see): ask once per offset.
      if (frame.offset > before && current.lastResume !== written.right) {
        current.lastResume = written.right
        return { ...nothing, resumeAt: { transfer: frame.transfer, offset: written.right } }
      }
      return nothing
    })
  }

  /** The connection ended: keep what arrived durable for a later transfer to resume from. */
  readonly stop: Effect.Effect<void> = Effect.suspend(() => {
    const current = this.current
    this.current = null
    return current === null ? Effect.void : Effect.ignore(current.incoming.pause)
  })

  private complete(supersededReason: string | null): Effect.Effect<InboundEvent> {
    const current = this.current!
    this.current = null
    return Effect.map(Effect.either(current.incoming.finish), (finished): InboundEvent => {
      if (finished._tag === "Left") {
        const problem = `snapshot transfer ${current.begin.transfer} dropped: ${describe(finished.left)}`
        return { ...nothing, dropped: supersededReason === null ? problem : `${supersededReason}; ${problem}` }
      }
      // A Resume at the end tells the sender it holds everything: the sender unpins its file.
      const resumeAt = { transfer: current.begin.transfer, offset: current.begin.totalBytes }
      return { completed: { message: current.begin.message, snapshot: finished.right }, dropped: supersededReason, resumeAt }
    })
  }
}

function describe(error: unknown): string {
  if (typeof error === "object" && error !== null && "message" in error && typeof error.message === "string" && error.message !== "") return error.message
  if (typeof error === "object" && error !== null && "_tag" in error) return String(error._tag)
  return String(error)
}
