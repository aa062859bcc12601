// Snapshot data over a peer link: a `SnapshotBegin` frame (the InstallSnapshot message, total
// size, chunk count, a transfer id unique on the connection), then `SnapshotChunk` frames with
// seq 0 … chunkCount−1, each non-empty and at most `snapshotChunkBytes`. Chunks may be
// interleaved with other frames but never reordered (one TCP stream). The receiver keeps at
// most one transfer and holds only bytes that have actually arrived (never the announced size
// up front); a missing, repeated or out-of-order chunk, a size mismatch, or a new transfer
// before the last one finished drops the whole snapshot — the leader offers it again.
import { assert } from "../../assert.ts"
import type { Envelope } from "../../raft/messages.ts"
import type { InstallSnapshot } from "../../raft/messages.ts"
import type { PeerFrame } from "./framing.ts"

type BeginFrame = Extract<PeerFrame, { _tag: "SnapshotBegin" }>
type ChunkFrame = Extract<PeerFrame, { _tag: "SnapshotChunk" }>

/** The sending side of one transfer. */
export class OutboundSnapshot {
  readonly chunkCount: number
  private nextSeq = 0

  constructor(
    readonly transfer: number,
    readonly message: InstallSnapshot,
    readonly data: Uint8Array,
    readonly chunkBytes: number
  ) {
    assert(Number.isSafeInteger(chunkBytes) && chunkBytes > 0, "chunkBytes > 0")
    this.chunkCount = Math.ceil(data.byteLength / chunkBytes)
  }

  get begin(): BeginFrame {
    return {
      _tag: "SnapshotBegin",
      transfer: this.transfer,
      message: this.message,
      totalBytes: this.data.byteLength,
      chunkCount: this.chunkCount
    }
  }

  get done(): boolean {
    return this.nextSeq >= this.chunkCount
  }

  /** The next chunk, or null once all were taken. */
  nextChunk(): ChunkFrame | null {
    if (this.done) return null
    const seq = this.nextSeq++
    const start = seq * this.chunkBytes
    return { _tag: "SnapshotChunk", transfer: this.transfer, seq, data: this.data.subarray(start, start + this.chunkBytes) }
  }

  /** Whether `message` is the snapshot this transfer already carries (a Raft retry). */
  carries(message: InstallSnapshot): boolean {
    return message.meta.index === this.message.meta.index && message.meta.term === this.message.meta.term
  }
}

export interface AssemblyResult {
  /** A snapshot that arrived whole. */
  readonly completed: Envelope | null
  /** Why a snapshot was dropped, for the log. */
  readonly dropped: string | null
}

const nothing: AssemblyResult = { completed: null, dropped: null }

interface Inbound {
  readonly begin: BeginFrame
  readonly parts: Array<Uint8Array>
  receivedBytes: number
}

/** The receiving side of one connection. */
export class SnapshotAssembler {
  private current: Inbound | null = null
  /** A transfer we gave up on: its remaining chunks are ignored quietly. */
  private abandoned: number | null = null

  constructor(readonly snapshotBytesMax: number, readonly chunkBytesMax: number) {}

  /** Bytes held for the transfer in progress. */
  get heldBytes(): number {
    return this.current?.receivedBytes ?? 0
  }

  begin(frame: BeginFrame): AssemblyResult {
    const superseded = this.current
    this.current = null
    const supersededReason = superseded === null ? null : `snapshot transfer ${superseded.begin.transfer} superseded before it finished`
    const { totalBytes, chunkCount, transfer } = frame
    let problem: string | null = null
    if (totalBytes > this.snapshotBytesMax) {
      problem = `snapshot transfer ${transfer} announces ${totalBytes} bytes, more than the ${this.snapshotBytesMax} allowed`
    } else if ((totalBytes === 0) !== (chunkCount === 0) || chunkCount > totalBytes || chunkCount * this.chunkBytesMax < totalBytes) {
      problem = `snapshot transfer ${transfer} announces ${totalBytes} bytes in ${chunkCount} chunks`
    }
    if (problem !== null) {
      this.abandoned = transfer
      return { completed: null, dropped: supersededReason === null ? problem : `${supersededReason}; ${problem}` }
    }
    if (chunkCount === 0) return { completed: { message: frame.message, snapshot: new Uint8Array(0) }, dropped: supersededReason }
    this.current = { begin: frame, parts: [], receivedBytes: 0 }
    return { completed: null, dropped: supersededReason }
  }

  chunk(frame: ChunkFrame): AssemblyResult {
    const current = this.current
    if (current === null || current.begin.transfer !== frame.transfer) {
      if (frame.transfer === this.abandoned) return nothing
      this.abandon(frame.transfer)
      return { completed: null, dropped: `chunk ${frame.seq} of snapshot transfer ${frame.transfer}, which never began` }
    }
    const expected = current.parts.length
    const { chunkCount, totalBytes } = current.begin
    let problem: string | null = null
    if (frame.seq !== expected) problem = `chunk ${frame.seq} arrived where chunk ${expected} was due`
    else if (frame.data.byteLength === 0 || frame.data.byteLength > this.chunkBytesMax) problem = `chunk ${frame.seq} has ${frame.data.byteLength} bytes`
    else if (current.receivedBytes + frame.data.byteLength > totalBytes) problem = `chunk ${frame.seq} runs past the announced ${totalBytes} bytes`
    else if (frame.seq === chunkCount - 1 && current.receivedBytes + frame.data.byteLength !== totalBytes) {
      problem = `the last chunk leaves ${totalBytes - current.receivedBytes - frame.data.byteLength} of ${totalBytes} bytes missing`
    }
    if (problem !== null) {
      this.abandon(frame.transfer)
      return { completed: null, dropped: `snapshot transfer ${frame.transfer} dropped: ${problem}` }
    }
    current.parts.push(frame.data)
    current.receivedBytes += frame.data.byteLength
    if (current.parts.length < chunkCount) return nothing
    this.current = null
    const data = new Uint8Array(totalBytes)
    let offset = 0
    for (const part of current.parts) {
      data.set(part, offset)
      offset += part.byteLength
    }
    return { completed: { message: current.begin.message, snapshot: data }, dropped: null }
  }

  private abandon(transfer: number): void {
    this.current = null
    this.abandoned = transfer
  }
}
