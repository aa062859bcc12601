// Snapshot chunking: a sender's chunks reassemble; a gap, a repeat, a reorder, a size lie or a
// new transfer drops the whole snapshot, and an announced oversize is refused up front.
import { describe, expect, it } from "@effect/vitest"
import type { InstallSnapshot } from "../../../src/raft/messages.ts"
import { OutboundSnapshot, SnapshotAssembler } from "../../../src/net/peers/snapshots.ts"
import { bytesEqual, prng } from "./helpers.ts"

const message: InstallSnapshot = {
  _tag: "InstallSnapshot",
  from: 1,
  to: 2,
  term: 3,
  meta: { index: 10, term: 2, config: { members: [{ id: 1, address: "a:1", role: "voter" }] } }
}

function chunksOf(out: OutboundSnapshot) {
  const chunks = []
  for (let chunk = out.nextChunk(); chunk !== null; chunk = out.nextChunk()) chunks.push(chunk)
  return chunks
}

describe("snapshot chunks", () => {
  it("reassemble whole, whatever the size relative to the chunk", () => {
    const random = prng(3)
    for (const size of [0, 1, 999, 1000, 1001, 25_000]) {
      const data = random.bytes(size)
      const out = new OutboundSnapshot(7, message, data, 1000)
      const assembler = new SnapshotAssembler(1 << 20, 1000)
      let result = assembler.begin(out.begin)
      for (const chunk of chunksOf(out)) {
        expect(result.completed).toBeNull()
        expect(chunk.data.byteLength).toBeLessThanOrEqual(1000)
        result = assembler.chunk(chunk)
      }
      expect(result.dropped).toBeNull()
      expect(result.completed?.message).toEqual(message)
      expect(bytesEqual(result.completed!.snapshot!, data)).toBe(true)
      expect(assembler.heldBytes).toBe(0)
    }
  })

  it("a missing, repeated or reordered chunk drops the whole snapshot, and its later chunks are ignored", () => {
    const data = prng(4).bytes(5000)
    // [order of chunks delivered, drops reported]: the last one just never completes.
    const cases: Array<[ReadonlyArray<number>, number]> = [[[0, 2, 3, 4], 1], [[0, 1, 1, 2, 3, 4], 1], [[1, 0, 2, 3, 4], 1], [[0, 1, 2, 3], 0]]
    for (const [order, drops] of cases) {
      const out = new OutboundSnapshot(1, message, data, 1000)
      const chunks = chunksOf(out)
      const assembler = new SnapshotAssembler(1 << 20, 1000)
      assembler.begin(out.begin)
      const results = order.map((seq) => assembler.chunk(chunks[seq]!))
      expect(results.some((r) => r.completed !== null)).toBe(false)
      expect(results.filter((r) => r.dropped !== null).length).toBe(drops) // reported once, then quiet
      if (drops > 0) expect(assembler.heldBytes).toBe(0)
    }
  })

  it("an announced size over the limit is refused before any byte arrives", () => {
    const assembler = new SnapshotAssembler(4096, 1000)
    const result = assembler.begin({ _tag: "SnapshotBegin", transfer: 1, message, totalBytes: 2 ** 40, chunkCount: 2 ** 30 })
    expect(result.dropped).toMatch(/more than the 4096 allowed/)
    expect(assembler.heldBytes).toBe(0)
    expect(assembler.chunk({ _tag: "SnapshotChunk", transfer: 1, seq: 0, data: new Uint8Array(10) })).toEqual({ completed: null, dropped: null })
  })

  it("a chunk past the announced size, or a short last chunk, drops the snapshot", () => {
    const assembler = new SnapshotAssembler(1 << 20, 1000)
    assembler.begin({ _tag: "SnapshotBegin", transfer: 1, message, totalBytes: 1500, chunkCount: 2 })
    assembler.chunk({ _tag: "SnapshotChunk", transfer: 1, seq: 0, data: new Uint8Array(1000) })
    expect(assembler.chunk({ _tag: "SnapshotChunk", transfer: 1, seq: 1, data: new Uint8Array(400) }).dropped).toMatch(/missing/)
    assembler.begin({ _tag: "SnapshotBegin", transfer: 2, message, totalBytes: 1500, chunkCount: 2 })
    assembler.chunk({ _tag: "SnapshotChunk", transfer: 2, seq: 0, data: new Uint8Array(1000) })
    expect(assembler.chunk({ _tag: "SnapshotChunk", transfer: 2, seq: 1, data: new Uint8Array(600) }).dropped).toMatch(/runs past/)
  })

  it("a new transfer supersedes an unfinished one", () => {
    const assembler = new SnapshotAssembler(1 << 20, 1000)
    assembler.begin({ _tag: "SnapshotBegin", transfer: 1, message, totalBytes: 1500, chunkCount: 2 })
    assembler.chunk({ _tag: "SnapshotChunk", transfer: 1, seq: 0, data: new Uint8Array(1000) })
    const result = assembler.begin({ _tag: "SnapshotBegin", transfer: 2, message, totalBytes: 10, chunkCount: 1 })
    expect(result.dropped).toMatch(/transfer 1 superseded/)
    const done = assembler.chunk({ _tag: "SnapshotChunk", transfer: 2, seq: 0, data: new Uint8Array(10) })
    expect(done.completed?.snapshot?.byteLength).toBe(10)
  })
})
