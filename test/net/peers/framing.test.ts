// Length-prefixed frames over arbitrary chunk boundaries, the size limit, and the msgpackr
// codec of peer frames (records, bytes and numbers round-trip; garbage is a typed error).
import fc from "fast-check"
import { describe, expect, it } from "@effect/vitest"
import { Either } from "effect"
import type { PeerFrame } from "../../../src/net/peers/framing.ts"
import { dataChunkFrame, dataHeaderMarker, encodeFrames, envelopeSizeBytes, FrameDecoder, inlineDataBytes, inlineDataMarker, largeFrameBytes, makePacker, makeUnpacker, outOfBandDataBytes, snapshotChunkFrame, snapshotChunkHeaderBytes, snapshotChunkMarker } from "../../../src/net/peers/framing.ts"
import { message, plain, prng } from "./helpers.ts"

/** Pulls every whole frame the decoder has. */
function drain(decoder: FrameDecoder): Array<Uint8Array> {
  const frames: Array<Uint8Array> = []
  while (true) {
    const next = decoder.next()
    if (Either.isLeft(next)) throw next.left
    if (next.right === null) return frames
    frames.push(next.right)
  }
}

describe("framing", () => {
  it("frames survive any split of the byte stream", () => {
    fc.assert(
      fc.property(
        fc.array(fc.uint8Array({ minLength: 1, maxLength: 3000 }), { minLength: 1, maxLength: 40 }),
        fc.array(fc.integer({ min: 1, max: 5000 }), { minLength: 1, maxLength: 50 }),
        (payloads, cuts) => {
          const stream = encodeFrames(payloads)
          const decoder = new FrameDecoder(4096)
          const frames: Array<Uint8Array> = []
          let offset = 0
          for (let i = 0; offset < stream.byteLength; i++) {
            const size = cuts[i % cuts.length]!
            decoder.push(stream.subarray(offset, offset + size))
            offset += size
            frames.push(...drain(decoder))
          }
          expect(frames.map((f) => Array.from(f))).toEqual(payloads.map((p) => Array.from(p)))
          expect(decoder.bufferedBytes).toBe(0)
        }
      ),
      { numRuns: 200 }
    )
  })

  it("byte-at-a-time delivery of a large frame works and stays linear", () => {
    const random = prng(7)
    const payload = random.bytes(300_000)
    const stream = encodeFrames([payload, Uint8Array.of(1)])
    const decoder = new FrameDecoder(1 << 20)
    const frames: Array<Uint8Array> = []
    for (let i = 0; i < stream.byteLength; i++) {
      decoder.push(stream.subarray(i, i + 1))
      frames.push(...drain(decoder))
    }
    expect(frames.length).toBe(2)
    expect(Buffer.compare(frames[0]!, payload)).toBe(0)
    expect(Array.from(frames[1]!)).toEqual([1])
  })

  it("a frame announcing more than the limit is FrameTooLarge as soon as its length arrives", () => {
    const decoder = new FrameDecoder(1024)
    decoder.push(Uint8Array.of(0xff, 0xff, 0xff)) // 3 of the 4 length bytes: not yet known
    expect(decoder.next()).toEqual(Either.right(null))
    decoder.push(Uint8Array.of(0xff))
    const result = decoder.next()
    expect(Either.isLeft(result)).toBe(true)
    if (Either.isLeft(result)) {
      expect(result.left._tag).toBe("FrameTooLarge")
      expect(result.left).toMatchObject({ frameBytes: 0xffffffff, frameBytesMax: 1024 })
    }
    expect(decoder.bufferedBytes).toBe(4) // nothing of the announced size was allocated or awaited
    // The limit is inclusive.
    const exact = new FrameDecoder(5)
    exact.push(encodeFrames([Uint8Array.of(1, 2, 3, 4, 5)]))
    expect(drain(exact).length).toBe(1)
  })

  it("an empty frame is malformed", () => {
    const decoder = new FrameDecoder(1024)
    decoder.push(Uint8Array.of(0, 0, 0, 0))
    const result = decoder.next()
    expect(Either.isLeft(result) && result.left._tag).toBe("MalformedFrame")
  })

  it("the first word can be taken before frames, and leftovers handed back", () => {
    const decoder = new FrameDecoder(64)
    decoder.push(Uint8Array.of(1, 2, 3, 4, 5, 6, 7, 8, 9, 10))
    expect(Array.from(decoder.take(8))).toEqual([1, 2, 3, 4, 5, 6, 7, 8])
    expect(Array.from(decoder.takeAll())).toEqual([9, 10])
    expect(decoder.bufferedBytes).toBe(0)
  })
})

describe("large frames and data frames (issue 17: a 20 MiB entry)", () => {
  /** An AppendEntries with commands of these sizes (and a barrier and a config between). */
  const appendWith = (sizes: ReadonlyArray<number>): PeerFrame => ({
    _tag: "Message",
    message: {
      _tag: "AppendEntries", from: 1, to: 2, term: 3, prevIndex: 9, prevTerm: 3, commit: 9,
      entries: [
        ...sizes.map((size, i) => ({ kind: "command" as const, term: 3, index: 10 + i, data: Uint8Array.from({ length: size }, (_, j) => (i * 7 + j) & 0xff) })),
        { kind: "barrier" as const, term: 3, index: 10 + sizes.length },
        { kind: "config" as const, term: 3, index: 11 + sizes.length, config: { members: [{ id: 1, address: "a:1", role: "voter" as const }] } }
      ]
    }
  })
  const concat = (parts: ReadonlyArray<Uint8Array>) => {
    const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0))
    let at = 0
    for (const part of parts) {
      out.set(part, at)
      at += part.byteLength
    }
    return out
  }

  /** The frames a link sends for `frame`: a data message's header then its data in chunks of
   * `chunkBytes`, or the one frame. */
  const framesFor = (packer: ReturnType<typeof makePacker>, frame: PeerFrame, chunkBytes: number): Array<Uint8Array> => {
    const data = packer.packData(frame)
    if (data === null) return [packer.pack(frame)]
    const out = [data.header]
    for (const part of data.data) {
      for (let at = 0; at < part.byteLength; at += chunkBytes) out.push(concat(dataChunkFrame(part.subarray(at, at + chunkBytes)).parts))
    }
    return out
  }

  it("a message with large entries is a data message: its chunks view the entries' own bytes, other messages may come between them, and it round-trips", () => {
    const big = appendWith([outOfBandDataBytes, 0, 5, outOfBandDataBytes + 1])
    const data = makePacker().packData(big)!
    expect(data.header[0]).toBe(dataHeaderMarker)
    const entries = big._tag === "Message" && big.message._tag === "AppendEntries" ? big.message.entries : []
    // No copy: the non-empty entries' data are the parts, as they are.
    expect(data.data).toEqual(entries.flatMap((e) => (e.kind === "command" && e.data.byteLength > 0 ? [e.data] : [])))
    expect(data.data.every((part, i) => part === (entries.filter((e) => e.kind === "command" && e.data.byteLength > 0)[i] as { data: Uint8Array }).data)).toBe(true)
    expect(makePacker().packData(appendWith([3]))).toBeNull()
    const packer = makePacker()
    const unpacker = makeUnpacker()
    const heartbeat: PeerFrame = { _tag: "Message", message: { _tag: "Heartbeat", from: 1, to: 2, term: 3, commit: 1, context: 4 } }
    // Packed in the order they go (records are defined by the first frame that uses them):
    // small, [header, chunk, heartbeat, chunk, …], small: delivered as small, heartbeat, big, small.
    const first = packer.pack(appendWith([3]))
    const chunks = framesFor(packer, big, 100_000)
    const between = packer.pack(heartbeat)
    const wire = [first, chunks[0]!, chunks[1]!, between, ...chunks.slice(2), packer.pack(appendWith([1, 2]))]
    const delivered = wire.map((payload) => {
      const result = unpacker.receive(payload)
      if (Either.isLeft(result)) throw new Error(`${wire.indexOf(payload)} of ${wire.length} (${payload[0]}, ${payload.byteLength}): ${result.left.detail}`)
      return result.right
    }).filter((frame) => frame !== null)
    expect(plain(delivered)).toEqual(plain([appendWith([3]), heartbeat, big, appendWith([1, 2])]))
  })

  it("a data message broken off, overtaken by an AppendEntries, or larger than the bound is MalformedFrame", () => {
    const big = appendWith([outOfBandDataBytes])
    const malformed = (payloads: ReadonlyArray<Uint8Array>, dataBytesMax?: number) => {
      const unpacker = makeUnpacker(dataBytesMax)
      const results = payloads.map((payload) => unpacker.receive(payload))
      return results.some((result) => Either.isLeft(result) && result.left._tag === "MalformedFrame")
    }
    const packer = () => makePacker()
    const p1 = packer()
    const [header, ...chunks] = framesFor(p1, big, 100_000)
    expect(malformed([header!, ...chunks])).toBe(false)
    expect(malformed([header!, ...chunks], outOfBandDataBytes - 1)).toBe(true)
    expect(malformed([chunks[0]!])).toBe(true) // a chunk with no header
    const p2 = packer()
    const [header2, ...chunks2] = framesFor(p2, big, 100_000)
    expect(malformed([header2!, p2.pack(appendWith([1]))])).toBe(true) // an AppendEntries overtakes it
    expect(malformed([header2!, chunks2[0]!, header2!])).toBe(true) // a second one begins
    expect(malformed([header2!, ...chunks2, concat(dataChunkFrame(Uint8Array.of(1)).parts)])).toBe(true) // past its end
    expect(malformed([Uint8Array.of(dataHeaderMarker, 1, 2, 3)])).toBe(true) // header not msgpack
  })

  it("an append to two followers is packed once: only its header per connection, its entries' data the same bytes by reference for both (issue 12)", () => {
    const append = appendWith([40_000, 100, 3_000, 0, 70_000, 5])
    const entries = append._tag === "Message" && append.message._tag === "AppendEntries" ? append.message.entries : []
    const datas = entries.flatMap((e) => (e.kind === "command" ? [e.data] : []))
    const toFollowers = [makePacker(), makePacker()].map((packer) => packer.packFrame(append))
    for (const frame of toFollowers) {
      // The header is all msgpack packed for this connection: tiny beside the data.
      expect(frame.parts[0]![0]).toBe(inlineDataMarker)
      expect(frame.parts[0]!.byteLength).toBeLessThan(1024)
      expect(frame.byteLength).toBe(frame.parts.reduce((n, part) => n + part.byteLength, 0))
      // The large entries' data are parts as they are (no copy); the small ones between them
      // are gathered into one part.
      expect(frame.parts[1]).toBe(datas[0])
      expect(frame.parts[3]).toBe(datas[4])
      expect(Buffer.compare(frame.parts[2]!, concat([datas[1]!, datas[2]!]))).toBe(0)
      expect(Buffer.compare(frame.parts[4]!, datas[5]!)).toBe(0)
    }
    expect(toFollowers[0]!.parts[1]).toBe(toFollowers[1]!.parts[1])
    // Each connection's receiver gets the append back, its entries' data viewing the one frame.
    for (const frame of toFollowers) {
      const payload = concat(frame.parts)
      const received = makeUnpacker().receive(payload)
      if (Either.isLeft(received)) throw new Error(received.left.detail)
      expect(plain([received.right])).toEqual(plain([append]))
      const got = received.right?._tag === "Message" && received.right.message._tag === "AppendEntries" ? received.right.message.entries : []
      for (const entry of got) if (entry.kind === "command") expect(entry.data.buffer).toBe(payload.buffer)
    }
    // Below the bound an append is one msgpack part, as before; so is any other message.
    const small = makePacker().packFrame(appendWith([inlineDataBytes - 1]))
    expect(small.parts.length).toBe(1)
    expect(small.parts[0]![0]).not.toBe(inlineDataMarker)
  })

  it("inline data frames in sequence with other frames round-trip; a short, inconsistent or misplaced one is MalformedFrame", () => {
    const packer = makePacker()
    const unpacker = makeUnpacker()
    const frames = [appendWith([inlineDataBytes]), appendWith([1]), appendWith([inlineDataBytes, inlineDataBytes * 2]), appendWith([2, 3])]
    const delivered = frames.map((frame) => {
      const result = unpacker.receive(concat(packer.packFrame(frame).parts))
      if (Either.isLeft(result)) throw new Error(result.left.detail)
      return result.right
    })
    expect(plain(delivered)).toEqual(plain(frames))
    const malformed = (payloads: ReadonlyArray<Uint8Array>, dataBytesMax?: number) => {
      const receiver = makeUnpacker(dataBytesMax)
      return payloads.map((payload) => receiver.receive(payload)).some((result) => Either.isLeft(result) && result.left._tag === "MalformedFrame")
    }
    const one = concat(makePacker().packFrame(appendWith([inlineDataBytes])).parts)
    expect(malformed([one])).toBe(false)
    expect(malformed([one], inlineDataBytes - 1)).toBe(true) // more data than allowed
    expect(malformed([one.subarray(0, one.byteLength - 1)])).toBe(true) // a data byte missing
    expect(malformed([concat([one, Uint8Array.of(0)])])).toBe(true) // a data byte too many
    expect(malformed([Uint8Array.of(inlineDataMarker, 1, 0)])).toBe(true) // shorter than its prefix
    expect(malformed([Uint8Array.of(inlineDataMarker, 200, 0, 0, 0, 1, 2)])).toBe(true) // header past the end
    expect(malformed([Uint8Array.of(inlineDataMarker, 2, 0, 0, 0, 0xc1, 0xc1)])).toBe(true) // header not msgpack
    const p = makePacker()
    const [header] = framesFor(p, appendWith([outOfBandDataBytes]), 100_000)
    expect(malformed([header!, concat(p.packFrame(appendWith([inlineDataBytes])).parts)])).toBe(true) // inside a data message
  })

  it("a large frame is received into a buffer of its own, whatever the chunking, between small frames", () => {
    const big = Uint8Array.from({ length: largeFrameBytes + 12_345 }, (_, i) => (i * 31) & 0xff)
    const payloads = [Uint8Array.of(1, 2, 3), big, Uint8Array.of(4), big.subarray(0, largeFrameBytes), Uint8Array.of(5, 6)]
    const stream = encodeFrames(payloads)
    for (const chunkBytes of [1_000, 65_536, 700_001, stream.byteLength]) {
      const decoder = new FrameDecoder(64 * 1024 * 1024)
      const frames: Array<Uint8Array> = []
      for (let at = 0; at < stream.byteLength; at += chunkBytes) {
        decoder.push(stream.subarray(at, at + chunkBytes))
        frames.push(...drain(decoder))
      }
      expect(frames.length).toBe(payloads.length)
      frames.forEach((frame, i) => expect(Buffer.compare(frame, payloads[i]!)).toBe(0))
      // The large ones own exactly their bytes (no slice of a bigger, growing buffer).
      expect(frames[1]!.buffer.byteLength).toBe(big.byteLength)
      expect(decoder.bufferedBytes).toBe(0)
    }
  })

  // Snapshot chunk frames and reused buffers (issue 17: a join at disk speed).
  it("a chunk is raw bytes behind a fixed header: the data is a view of the sender's buffer and of the received frame", () => {
    const data = Uint8Array.from({ length: 5000 }, (_, i) => (i * 7) & 0xff)
    const packed = snapshotChunkFrame(3, 2 ** 40, data)
    expect(packed.parts[1] === data).toBe(true) // not copied
    expect(packed.byteLength).toBe(snapshotChunkHeaderBytes + data.byteLength)
    const payload = concat(packed.parts)
    expect(payload[0]).toBe(snapshotChunkMarker)
    const decoded = Either.getOrThrow(makeUnpacker().receive(payload))
    expect(decoded?._tag).toBe("SnapshotChunk")
    if (decoded?._tag !== "SnapshotChunk") return
    expect({ transfer: decoded.transfer, offset: decoded.offset }).toEqual({ transfer: 3, offset: 2 ** 40 })
    expect(Buffer.compare(decoded.data, data)).toBe(0)
    expect(decoded.data.buffer === payload.buffer).toBe(true) // a view of the frame
  })

  it("a chunk without data, with a bad offset, or inside a data message is MalformedFrame", () => {
    const malformed = (payload: Uint8Array, unpacker = makeUnpacker()) => {
      const result = unpacker.receive(payload)
      return Either.isLeft(result) && result.left._tag === "MalformedFrame"
    }
    const good = concat(snapshotChunkFrame(1, 0, Uint8Array.of(9)).parts)
    expect(malformed(good)).toBe(false)
    expect(malformed(good.subarray(0, snapshotChunkHeaderBytes))).toBe(true)
    const negative = good.slice()
    new DataView(negative.buffer).setFloat64(9, -1, true)
    expect(malformed(negative)).toBe(true)
    const packer = makePacker()
    const [header] = framesFor(packer, appendWith([outOfBandDataBytes]), 100_000)
    const unpacker = makeUnpacker()
    expect(malformed(header!, unpacker)).toBe(false)
    expect(malformed(good, unpacker)).toBe(true)
  })

  it("a large frame handed back is filled again by the next large frame of its size, and only then", () => {
    const size = largeFrameBytes + 17
    const first = Uint8Array.from({ length: size }, (_, i) => i & 0xff)
    const second = Uint8Array.from({ length: size }, (_, i) => (i * 3) & 0xff)
    const third = Uint8Array.from({ length: size + 1 }, (_, i) => (i * 5) & 0xff)
    const decoder = new FrameDecoder(64 * 1024 * 1024)
    // As a socket delivers it: 64 KiB at a time, so the frame is received into its own buffer.
    const receive = (payload: Uint8Array): Uint8Array => {
      const stream = encodeFrames([payload])
      const frames: Array<Uint8Array> = []
      for (let at = 0; at < stream.byteLength; at += 65_536) {
        decoder.push(stream.subarray(at, at + 65_536))
        frames.push(...drain(decoder))
      }
      expect(frames.length).toBe(1)
      return frames[0]!
    }
    const same = (x: Uint8Array, y: Uint8Array) => x.buffer === y.buffer
    const a = receive(first)
    // Not handed back: the next frame gets memory of its own.
    const b = receive(second)
    expect(same(a, b)).toBe(false)
    expect(Buffer.compare(a, first)).toBe(0)
    decoder.recycle(a)
    const c = receive(second)
    expect(same(c, a)).toBe(true)
    expect(Buffer.compare(c, second)).toBe(0)
    // Another size does not take it; a view into a frame is never kept.
    decoder.recycle(c)
    decoder.recycle(b.subarray(1))
    const d = receive(third)
    expect(same(d, c) || same(d, b)).toBe(false)
    expect(Buffer.compare(d, third)).toBe(0)
    const e = receive(first)
    expect(same(e, c)).toBe(true)
    expect(Buffer.compare(e, first)).toBe(0)
  })
})

describe("msgpackr codec of peer frames", () => {
  it("every kind of Raft message round-trips, in sequence, with bytes as bytes and numbers as numbers", () => {
    fc.assert(
      fc.property(fc.array(message, { minLength: 1, maxLength: 30 }), (messages) => {
        const packer = makePacker()
        const unpacker = makeUnpacker()
        for (const m of messages) {
          const decoded = unpacker.unpack(packer.pack({ _tag: "Message", message: m }))
          expect(Either.isRight(decoded)).toBe(true)
          if (Either.isLeft(decoded)) return
          expect(plain(decoded.right)).toEqual(plain({ _tag: "Message", message: m }))
          if (decoded.right._tag === "Message" && decoded.right.message._tag === "AppendEntries") {
            for (const e of decoded.right.message.entries) {
              if (e.kind === "command") expect(e.data).toBeInstanceOf(Uint8Array)
              expect(typeof e.index).toBe("number")
            }
          }
        }
      }),
      { numRuns: 150 }
    )
  })

  it("large safe integers stay numbers (not bigint) and snapshot chunk data stays bytes", () => {
    const packer = makePacker()
    const unpacker = makeUnpacker()
    const big = Number.MAX_SAFE_INTEGER
    const frames: Array<PeerFrame> = [
      { _tag: "Message", message: { _tag: "Heartbeat", from: 1, to: 2, term: big, commit: 2 ** 40, context: 2 ** 32 } },
      { _tag: "SnapshotChunk", transfer: 3, offset: 2 ** 40, data: new Uint8Array([0, 255, 7]) }
    ]
    const decoded = frames.map((f) => Either.getOrThrow(unpacker.unpack(packer.pack(f))))
    expect(decoded[0]).toEqual(frames[0])
    const heartbeat = decoded[0]!._tag === "Message" ? decoded[0]!.message : null
    expect(typeof (heartbeat as { term: unknown }).term).toBe("number")
    const chunk = decoded[1]!
    expect(chunk._tag === "SnapshotChunk" && chunk.data instanceof Uint8Array && Array.from(chunk.data)).toEqual([0, 255, 7])
  })

  it("records are defined once per connection: later frames are smaller, and need the earlier ones", () => {
    const packer = makePacker()
    const frame: PeerFrame = { _tag: "Message", message: { _tag: "HeartbeatResponse", from: 1, to: 2, term: 3, context: 4 } }
    const first = packer.pack(frame)
    const second = packer.pack(frame)
    expect(second.byteLength).toBeLessThan(first.byteLength)
    // A decoder that missed the first frame cannot read the second: codecs are per connection.
    expect(Either.isLeft(makeUnpacker().unpack(second))).toBe(true)
    // Codecs share nothing: another connection's first frame is whole on its own.
    expect(Either.getOrThrow(makeUnpacker().unpack(makePacker().pack(frame)))).toEqual(frame)
  })

  it("garbage payloads are MalformedFrame, never an exception", () => {
    const random = prng(99)
    for (let i = 0; i < 3000; i++) {
      const unpacker = makeUnpacker()
      const bytes = random.bytes(1 + random.int(64))
      const result = unpacker.unpack(bytes)
      if (Either.isLeft(result)) expect(result.left._tag).toBe("MalformedFrame")
    }
    // Well-formed msgpack that is not a frame, or a frame whose message is wrong.
    const packer = makePacker()
    const unpacker = makeUnpacker()
    const wrong = [
      { hello: 1 },
      { _tag: "Message", message: { _tag: "Heartbeat", from: 1, to: 2, term: "3", commit: 0, context: 0 } },
      { _tag: "Message", message: { _tag: "AppendEntries", from: 1, to: 2, term: 3, prevIndex: 0, prevTerm: 0, commit: 0, entries: [{ kind: "command", term: 1, index: 1, data: "x" }] } },
      { _tag: "SnapshotBegin", transfer: 1, totalBytes: 1, chunkCount: 1, message: { _tag: "TimeoutNow", from: 1, to: 2, term: 1 } },
      { _tag: "Message", message: { _tag: "Nope", from: 1, to: 2, term: 1 } }
    ]
    for (const value of wrong) {
      const result = unpacker.unpack(packer.pack(value as unknown as PeerFrame))
      expect(Either.isLeft(result) && result.left._tag).toBe("MalformedFrame")
    }
  })

  it("the size estimate counts entry payloads, not snapshot data (read from its file as it is sent)", () => {
    const data = new Uint8Array(10_000)
    expect(envelopeSizeBytes({
      message: { _tag: "AppendEntries", from: 1, to: 2, term: 1, prevIndex: 0, prevTerm: 0, commit: 0, entries: [{ kind: "command", term: 1, index: 1, data }] },
      snapshot: null
    })).toBeGreaterThan(10_000)
    expect(envelopeSizeBytes({ message: { _tag: "TimeoutNow", from: 1, to: 2, term: 1 }, snapshot: { sizeBytes: 2 ** 40, crc32c: 0 } })).toBeLessThan(1000)
  })
})
