import fc from "fast-check"
import { describe, expect, it } from "vitest"
import { AssertionError } from "../../../src/assert.ts"
import { RequestType, ResponseType } from "../../../src/net/protocol/codes.ts"
import {
  FrameDecoder,
  decodeFrame,
  decodeHeader,
  decodeProtocolVersion,
  encodeFrame,
  encodeHeader,
  encodeProtocolVersion
} from "../../../src/net/protocol/framing.ts"
import type { Frame } from "../../../src/net/protocol/framing.ts"
import { decodeRequest, encodeRequest } from "../../../src/net/protocol/requests.ts"
import { encodeResponse } from "../../../src/net/protocol/responses.ts"
import { Values } from "../../../src/net/protocol/values.ts"
import { concat, expectWireError, hex } from "../gateway/helpers.ts"

/** A stream of several messages of different sizes, including a multi-word ROWS. */
function sampleStream(): { bytes: Uint8Array; frames: Array<Frame> } {
  const messages = [
    encodeRequest({ kind: "leader" }),
    encodeRequest({ kind: "open", database: "demo", flags: 0n, vfs: "volatile" }),
    encodeRequest({ kind: "execSql", schema: 0, dbId: 0n, sql: "INSERT INTO t VALUES(?, ?)", params: [Values.integer(1), Values.text("x")] }),
    encodeResponse({
      kind: "rows",
      columns: ["a", "b"],
      rows: Array.from({ length: 50 }, (_, i) => [Values.integer(i), Values.blob(new Uint8Array(i))]),
      end: "done"
    }),
    encodeFrame({ type: 99, schema: 7, body: new Uint8Array(0) })
  ]
  return { bytes: concat(...messages), frames: messages.map((m) => decodeFrame(m)) }
}

function drain(decoder: FrameDecoder): Array<Frame> {
  return [...decoder.frames()]
}

describe("header", () => {
  it("encodes words, type and schema with zero unused bytes (captured LEADER header)", () => {
    expect(encodeHeader({ bodyWords: 1, type: RequestType.leader, schema: 0 })).toEqual(hex("01 00 00 00 00 00 00 00"))
    expect(encodeHeader({ bodyWords: 0x01020304, type: 0xab, schema: 1 })).toEqual(hex("04 03 02 01 ab 01 00 00"))
  })

  it("decodes and ignores the unused bytes", () => {
    expect(decodeHeader(hex("0e 00 00 00 07 00 ab cd"))).toEqual({ bodyWords: 14, type: ResponseType.rows, schema: 0 })
    expect(decodeHeader(hex("ff ff ff ff 05 01 00 00"))).toEqual({ bodyWords: 0xffffffff, type: 5, schema: 1 })
  })

  it("rejects a short header", () => {
    expectWireError(() => decodeHeader(hex("01 00 00 00 00 00 00")), "Truncated")
  })

  it("refuses to frame a body that is not whole words", () => {
    expectWireError(() => encodeFrame({ type: 0, schema: 0, body: new Uint8Array(7) }), "Unencodable")
  })

  it("decodeFrame checks the announced size against the bytes and the maximum", () => {
    expectWireError(() => decodeFrame(hex("02 00 00 00 00 00 00 00 | 00 00 00 00 00 00 00 00")), "Truncated")
    expectWireError(() => decodeFrame(hex("00 00 01 00 00 00 00 00"), 1024), "TooLarge")
  })
})

describe("protocol version word", () => {
  it("encodes v1 and legacy as captured", () => {
    expect(encodeProtocolVersion("v1")).toEqual(hex("01 00 00 00 00 00 00 00"))
    expect(encodeProtocolVersion("legacy")).toEqual(hex("e5 3f 43 60 d7 4d 10 86"))
  })

  it("decodes v1, legacy and anything else", () => {
    expect(decodeProtocolVersion(hex("01 00 00 00 00 00 00 00"))).toEqual({ kind: "v1" })
    expect(decodeProtocolVersion(hex("e5 3f 43 60 d7 4d 10 86"))).toEqual({ kind: "legacy" })
    expect(decodeProtocolVersion(hex("02 00 00 00 00 00 00 00"))).toEqual({ kind: "unknown", value: 2n })
    expectWireError(() => decodeProtocolVersion(hex("01 00")), "Truncated")
  })
})

describe("FrameDecoder", () => {
  it("yields the same messages whether fed whole or one byte at a time", () => {
    const { bytes, frames } = sampleStream()
    const whole = new FrameDecoder()
    whole.push(bytes)
    expect(drain(whole)).toEqual(frames)

    const byByte = new FrameDecoder()
    const seen: Array<Frame> = []
    for (let i = 0; i < bytes.length; i++) {
      byByte.push(bytes.subarray(i, i + 1))
      seen.push(...drain(byByte))
    }
    expect(seen).toEqual(frames)
    expect(byByte.bufferedBytes).toBe(0)
    byByte.finish()
  })

  it("yields the same messages for any split of the stream", () => {
    const { bytes, frames } = sampleStream()
    fc.assert(
      fc.property(fc.uniqueArray(fc.integer({ min: 1, max: bytes.length - 1 }), { maxLength: 40 }), (cuts) => {
        const points = [0, ...[...cuts].sort((a, b) => a - b), bytes.length]
        const decoder = new FrameDecoder()
        const seen: Array<Frame> = []
        for (let i = 0; i + 1 < points.length; i++) {
          decoder.push(bytes.subarray(points[i], points[i + 1]))
          seen.push(...drain(decoder))
        }
        expect(seen).toEqual(frames)
        decoder.finish()
      }),
      { numRuns: 200 }
    )
  })

  it("returns a zero-word message as an empty body (the request decoder then rejects it)", () => {
    const decoder = new FrameDecoder()
    decoder.push(hex("00 00 00 00 00 00 00 00"))
    const frame = decoder.next()
    expect(frame).toEqual({ type: RequestType.leader, schema: 0, body: new Uint8Array(0) })
    expectWireError(() => decodeRequest(frame as Frame), "Truncated")
  })

  it("hands out the version word and a request arriving in the same chunk", () => {
    const decoder = new FrameDecoder()
    decoder.push(concat(encodeProtocolVersion("v1"), encodeRequest({ kind: "client", clientId: 7n })))
    expect(decodeProtocolVersion(decoder.nextWord() as Uint8Array)).toEqual({ kind: "v1" })
    expect(decodeRequest(decoder.next() as Frame)).toEqual({ kind: "client", clientId: 7n })
    expect(decoder.next()).toBeUndefined()
  })

  it("waits for the whole version word", () => {
    const decoder = new FrameDecoder()
    decoder.push(hex("01 00 00"))
    expect(decoder.nextWord()).toBeUndefined()
    decoder.push(hex("00 00 00 00 00"))
    expect(decoder.nextWord()).toEqual(hex("01 00 00 00 00 00 00 00"))
  })

  it("throws TooLarge as soon as an oversized header arrives, and stays failed", () => {
    const decoder = new FrameDecoder({ messageBytesMax: 1024 })
    decoder.push(hex("ff ff ff ff 00 00 00 00"))
    expectWireError(() => decoder.next(), "TooLarge")
    expectWireError(() => decoder.next(), "TooLarge")
    expectWireError(() => decoder.push(new Uint8Array(8)), "TooLarge")
    expectWireError(() => decoder.finish(), "TooLarge")
  })

  it("accepts a message of exactly the maximum and rejects one word more", () => {
    const exact = new FrameDecoder({ messageBytesMax: 64 })
    exact.push(encodeFrame({ type: 1, schema: 0, body: new Uint8Array(56) }))
    expect(exact.next()?.body.length).toBe(56)
    const over = new FrameDecoder({ messageBytesMax: 64 })
    over.push(hex("08 00 00 00 01 00 00 00"))
    expectWireError(() => over.next(), "TooLarge")
  })

  it("uses a 64 MiB maximum by default", () => {
    const decoder = new FrameDecoder()
    expect(decoder.messageBytesMax).toBe(64 * 1024 * 1024)
    decoder.push(hex("00 00 00 01 00 00 00 00")) // 2^24 words = 128 MiB
    expectWireError(() => decoder.next(), "TooLarge")
  })

  it("reports a stream that ends inside a message", () => {
    const decoder = new FrameDecoder()
    decoder.push(hex("02 00 00 00 00 00 00 00 | 00 00"))
    expect(decoder.next()).toBeUndefined()
    expect(decoder.bufferedBytes).toBe(10)
    expectWireError(() => decoder.finish(), "Truncated")
    const headerOnly = new FrameDecoder()
    headerOnly.push(hex("01 00 00"))
    expectWireError(() => headerOnly.finish(), "Truncated")
  })

  it("copies bodies out of the pushed chunks", () => {
    const message = encodeRequest({ kind: "client", clientId: 1n })
    const decoder = new FrameDecoder()
    decoder.push(message)
    const frame = decoder.next() as Frame
    message.fill(0xff)
    expect(frame.body).toEqual(hex("01 00 00 00 00 00 00 00"))
  })

  it("rejects a maximum that cannot hold a one-word message", () => {
    expect(() => new FrameDecoder({ messageBytesMax: 8 })).toThrow(AssertionError)
    expect(() => new FrameDecoder({ messageBytesMax: 1.5 })).toThrow(AssertionError)
  })

  it("stays linear when fed many tiny chunks", () => {
    const body = new Uint8Array(200_000)
    const message = encodeFrame({ type: 9, schema: 0, body })
    const decoder = new FrameDecoder()
    const started = Date.now()
    for (let i = 0; i < message.length; i++) decoder.push(message.subarray(i, i + 1))
    expect(decoder.next()?.body.length).toBe(body.length)
    expect(Date.now() - started).toBeLessThan(5_000)
  })
})
