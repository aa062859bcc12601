import { describe, expect, it } from "vitest"
import { ErrorCode, Failures, ResponseType, rowsBatchBytesTarget } from "../../../src/net/protocol/codes.ts"
import { decodeFrame } from "../../../src/net/protocol/framing.ts"
import type { Response, ResponseDecodeOptions } from "../../../src/net/protocol/responses.ts"
import {
  RowsWriter,
  decodeResponse,
  encodeFilesPieces,
  encodeResponse,
  failure,
  leadershipLostFailure,
  notLeaderFailure,
  responseSchema,
  responseTypeCode
} from "../../../src/net/protocol/responses.ts"
import { Values } from "../../../src/net/protocol/values.ts"
import type { Value } from "../../../src/net/protocol/values.ts"
import { ascii, concat, expectWireError, hex, toHex } from "../gateway/helpers.ts"

function decode(bytes: Uint8Array, options: ResponseDecodeOptions = {}): Response {
  return decodeResponse(decodeFrame(bytes), options)
}

/** Captured responses (fact sheet §6 and §4.3), header | body. */
const captures: ReadonlyArray<{ name: string; response: Response; bytes: Uint8Array; options?: ResponseDecodeOptions }> = [
  {
    name: "SERVER",
    response: { kind: "server", nodeId: 0x2dc171858c3155ben, address: "127.0.0.1:9001" },
    bytes: concat(hex("03000000 01 00 0000 | be55318c8571c12d"), ascii("127.0.0.1:9001", 16))
  },
  {
    name: "WELCOME",
    response: { kind: "welcome", heartbeatTimeoutMs: 15000 },
    bytes: hex("01000000 02 00 0000 | 983a000000000000")
  },
  {
    name: "DB",
    response: { kind: "db", dbId: 0 },
    bytes: hex("01000000 04 00 0000 | 0000000000000000")
  },
  {
    name: "RESULT",
    response: { kind: "result", lastInsertId: 2n, rowsAffected: 1n },
    bytes: hex("02000000 06 00 0000 | 0200000000000000 0100000000000000")
  },
  {
    name: "FAILURE (UNIQUE)",
    response: { kind: "failure", code: 2067, message: "UNIQUE constraint failed: model.key" },
    bytes: concat(hex("06000000 00 00 0000 | 1308000000000000"), ascii("UNIQUE constraint failed: model.key", 40))
  },
  {
    name: "legacy SERVER (address only)",
    response: { kind: "serverLegacy", address: "127.0.0.1:9001" },
    bytes: concat(hex("02000000 01 00 0000"), ascii("127.0.0.1:9001", 16)),
    options: { protocol: "legacy" }
  },
  {
    name: "ROWS for SELECT 1, 'x', NULL, 2.0, x'ff'",
    response: {
      kind: "rows",
      columns: ["1", "'x'", "NULL", "2.0", "x'ff'"],
      rows: [[Values.integer(1), Values.text("x"), Values.null, Values.float(2), Values.blob(Uint8Array.from([0xff]))]],
      end: "done"
    },
    bytes: concat(
      hex("0e000000 07 00 0000 | 0500000000000000"),
      ascii("1", 8),
      ascii("'x'", 8),
      ascii("NULL", 8),
      ascii("2.0", 8),
      ascii("x'ff'", 8),
      hex("31 25 04 00 00 00 00 00"),
      hex("01 00 00 00 00 00 00 00"),
      ascii("x", 8),
      hex("00 00 00 00 00 00 00 00"),
      hex("00 00 00 00 00 00 00 40"),
      hex("01 00 00 00 00 00 00 00"),
      hex("ff 00 00 00 00 00 00 00"),
      hex("ff ff ff ff ff ff ff ff")
    )
  }
]

const rowValues: Array<Value> = [
  Values.integer(-(2n ** 63n)),
  Values.float(-0.5),
  Values.text("\u00fcber"),
  Values.blob(Uint8Array.from([0, 1, 2, 3, 4, 5, 6, 7, 8])),
  Values.null,
  Values.unixtime(1_600_000_000),
  Values.iso8601(""),
  Values.boolean(5)
]

const allKinds: ReadonlyArray<{ response: Response; options?: ResponseDecodeOptions }> = [
  { response: { kind: "failure", code: ErrorCode.dqliteParse, message: "unrecognized request type" } },
  { response: { kind: "failure", code: 0, message: "" } },
  { response: { kind: "server", nodeId: 0n, address: "" } },
  { response: { kind: "server", nodeId: 0xffffffffffffffffn, address: "node-1.example:9001" } },
  { response: { kind: "serverLegacy", address: "@abstract" }, options: { protocol: "legacy" } },
  { response: { kind: "welcome", heartbeatTimeoutMs: 15000 } },
  {
    response: {
      kind: "servers",
      format: 1,
      servers: [
        { nodeId: 1n, address: "127.0.0.1:9001", role: 0 },
        { nodeId: 0x2dc171858c3155ben, address: "127.0.0.1:9002", role: 1 },
        { nodeId: 3n, address: "127.0.0.1:9003", role: 2 }
      ]
    }
  },
  { response: { kind: "servers", format: 0, servers: [{ nodeId: 1n, address: "a" }] }, options: { serversFormat: 0 } },
  { response: { kind: "servers", format: 1, servers: [] } },
  { response: { kind: "db", dbId: 0 } },
  { response: { kind: "stmt", dbId: 0, stmtId: 7, paramCount: 2, tailOffset: null } },
  { response: { kind: "stmt", dbId: 0, stmtId: 0, paramCount: 0, tailOffset: 9 } },
  { response: { kind: "result", lastInsertId: 0xfffffffffffffffen, rowsAffected: 0n } },
  { response: { kind: "rows", columns: ["a", "b", "c", "d", "e", "f", "g", "h"], rows: [rowValues, rowValues], end: "part" } },
  { response: { kind: "rows", columns: ["n"], rows: [], end: "done" } },
  { response: { kind: "rows", columns: [], rows: [], end: "done" } },
  { response: { kind: "empty" } },
  {
    response: {
      kind: "files",
      files: [
        { name: "demo", data: new Uint8Array(4096).fill(7) },
        { name: "demo-wal", data: new Uint8Array(0) }
      ]
    }
  },
  { response: { kind: "metadata", failureDomain: 3n, weight: 0xffffffffffffffffn } }
]

describe("captured responses", () => {
  for (const { name, response, bytes, options } of captures) {
    it(`${name}: encodes byte for byte and decodes back`, () => {
      expect(toHex(encodeResponse(response))).toBe(toHex(bytes))
      expect(decode(bytes, options ?? {})).toEqual(response)
    })
  }

  it("the not-leader failure is code 10250, text 'not leader'", () => {
    expect(toHex(encodeResponse(notLeaderFailure))).toBe(toHex(concat(hex("03000000 00 00 0000 | 0a28000000000000"), ascii("not leader", 16))))
    expect(notLeaderFailure).toEqual({ kind: "failure", code: 10250, message: "not leader" })
    expect(leadershipLostFailure).toEqual({ kind: "failure", code: 10506, message: "leadership lost" })
    expect(ErrorCode.notLeader).toBe(10 | (40 << 8))
    expect(ErrorCode.leadershipLost).toBe(10 | (41 << 8))
    expect(ErrorCode.notLeaderLegacy).toBe(10 | (32 << 8))
    expect(failure(Failures.noDatabaseOpened)).toEqual({ kind: "failure", code: 12, message: "no database opened" })
  })
})

describe("every response type", () => {
  it("covers every type code 0–10", () => {
    const codes = new Set(allKinds.map(({ response }) => responseTypeCode(response)))
    expect([...codes].sort((a, b) => a - b)).toEqual(Array.from({ length: 11 }, (_, i) => i))
  })

  for (const { response, options } of allKinds) {
    it(`round-trips ${response.kind}${response.kind === "stmt" && response.tailOffset !== null ? " with offset" : ""}`, () => {
      const bytes = encodeResponse(response)
      expect(bytes.length % 8).toBe(0)
      expect(bytes[4]).toBe(responseTypeCode(response))
      expect(bytes[5]).toBe(responseSchema(response))
      expect(decode(bytes, options ?? {})).toEqual(response)
    })
  }
})

describe("response layouts", () => {
  it("STMT with offset is 4 words and says schema 1 in its header", () => {
    const bytes = encodeResponse({ kind: "stmt", dbId: 0, stmtId: 1, paramCount: 2, tailOffset: 9 })
    expect(toHex(bytes)).toBe(toHex(hex("03000000 05 01 0000 | 00000000 01000000 | 0200000000000000 | 0900000000000000")))
    // The same body under a schema-0 header is read without the offset.
    expect(decodeResponse({ type: ResponseType.stmt, schema: 0, body: bytes.subarray(8) })).toEqual({
      kind: "stmt",
      dbId: 0,
      stmtId: 1,
      paramCount: 2,
      tailOffset: null
    })
  })

  it("SERVERS writes roles only in format 1", () => {
    const servers = [{ nodeId: 1n, address: "a", role: 2 }]
    expect(encodeResponse({ kind: "servers", format: 1, servers })).toEqual(
      hex("04000000 03 00 0000 | 0100000000000000 | 0100000000000000 | 6100000000000000 | 0200000000000000")
    )
    expect(encodeResponse({ kind: "servers", format: 0, servers })).toEqual(
      hex("03000000 03 00 0000 | 0100000000000000 | 0100000000000000 | 6100000000000000")
    )
  })

  it("a zero-column ROWS is the count word then DONE", () => {
    expect(encodeResponse({ kind: "rows", columns: [], rows: [], end: "done" })).toEqual(
      hex("02000000 07 00 0000 | 0000000000000000 | ffffffffffffffff")
    )
  })

  it("PART writes the full eight 0xee bytes", () => {
    const bytes = encodeResponse({ kind: "rows", columns: ["x"], rows: [], end: "part" })
    expect(bytes.subarray(bytes.length - 8)).toEqual(hex("ee ee ee ee ee ee ee ee"))
  })

  it("FILES carries raw bytes without padding", () => {
    const bytes = encodeResponse({ kind: "files", files: [{ name: "db", data: hex("53 51 4c 69 74 65 20 66") }] })
    expect(bytes).toEqual(hex("04000000 09 00 0000 | 0100000000000000 | 6462000000000000 | 0800000000000000 | 53514c6974652066"))
    expectWireError(() => encodeResponse({ kind: "files", files: [{ name: "db", data: new Uint8Array(5) }] }), "Unencodable")
  })

  it("FILES in pieces (a streamed DUMP): the pieces with each file's bytes between them are the whole message", () => {
    const main = new Uint8Array(4096 * 3).map((_, i) => (i * 31) & 0xff)
    const pieces = encodeFilesPieces([{ name: "demo", sizeBytes: main.byteLength }, { name: "demo-wal", sizeBytes: 0 }])
    expect(pieces.length).toBe(2)
    const whole = encodeResponse({ kind: "files", files: [{ name: "demo", data: main }, { name: "demo-wal", data: new Uint8Array(0) }] })
    expect(concat(pieces[0]!, main, pieces[1]!)).toEqual(whole)
    expectWireError(() => encodeFilesPieces([{ name: "db", sizeBytes: 12 }]), "Unencodable")
  })

  it("FILES decoding tolerates a size that is not a multiple of 8 (text padding is relative)", () => {
    const body = concat(hex("0200000000000000"), ascii("a", 8), hex("0300000000000000 | 010203"), ascii("b", 8), hex("0000000000000000 | 0000000000"))
    expect(decodeResponse({ type: ResponseType.files, schema: 0, body })).toEqual({
      kind: "files",
      files: [
        { name: "a", data: hex("01 02 03") },
        { name: "b", data: new Uint8Array(0) }
      ]
    })
  })

  it("DB ignores its padding word half and EMPTY its content", () => {
    expect(decodeResponse({ type: ResponseType.db, schema: 0, body: hex("00000000 ffffffff") })).toEqual({ kind: "db", dbId: 0 })
    expect(decodeResponse({ type: ResponseType.empty, schema: 0, body: hex("0102030405060708") })).toEqual({ kind: "empty" })
  })
})

describe("response decoding errors", () => {
  it("rejects unknown type codes", () => {
    for (const type of [11, 12, 255]) {
      expectWireError(() => decodeResponse({ type, schema: 0, body: new Uint8Array(8) }), "UnknownType")
    }
  })

  it("rejects ROWS without a marker, with a partial marker, or with an impossible column count", () => {
    const noMarker = concat(hex("0100000000000000"), ascii("a", 8), hex("01 00 00 00 00 00 00 00"), hex("0100000000000000"))
    expectWireError(() => decodeResponse({ type: ResponseType.rows, schema: 0, body: noMarker }), "Truncated")
    const partial = concat(hex("0100000000000000"), ascii("a", 8), hex("ff ff ff ff 00 00 00 00"), new Uint8Array(8))
    expectWireError(() => decodeResponse({ type: ResponseType.rows, schema: 0, body: partial }), "BadMarker")
    const zeroColumnsRow = hex("0000000000000000 | 0100000000000000 | ffffffffffffffff")
    expectWireError(() => decodeResponse({ type: ResponseType.rows, schema: 0, body: zeroColumnsRow }), "BadMarker")
    const hugeCount = hex("ffffffff00000000 | ffffffffffffffff")
    expectWireError(() => decodeResponse({ type: ResponseType.rows, schema: 0, body: hugeCount }), "Truncated")
    const badNibble = concat(hex("0100000000000000"), ascii("a", 8), hex("07 00 00 00 00 00 00 00"), new Uint8Array(8), hex("ffffffffffffffff"))
    expectWireError(() => decodeResponse({ type: ResponseType.rows, schema: 0, body: badNibble }), "BadValueType")
  })

  it("rejects list counts that cannot fit before allocating", () => {
    expectWireError(() => decodeResponse({ type: ResponseType.servers, schema: 0, body: hex("ffffffffffff0000") }), "Truncated")
    expectWireError(() => decodeResponse({ type: ResponseType.files, schema: 0, body: hex("0200000000000000 | 6100000000000000") }), "Truncated")
    const bigFile = concat(hex("0100000000000000"), ascii("a", 8), hex("ffffffffffffffff"))
    expectWireError(() => decodeResponse({ type: ResponseType.files, schema: 0, body: bigFile }), "Truncated")
  })

  it("reads SERVERS according to the requested format", () => {
    const format1 = encodeResponse({ kind: "servers", format: 1, servers: [{ nodeId: 1n, address: "a", role: 0 }] })
    // Read as format 0, the role word is just a trailing word (ignored).
    expect(decode(format1, { serversFormat: 0 })).toEqual({ kind: "servers", format: 0, servers: [{ nodeId: 1n, address: "a" }] })
    const format0 = encodeResponse({ kind: "servers", format: 0, servers: [{ nodeId: 1n, address: "a" }, { nodeId: 2n, address: "b" }] })
    expectWireError(() => decode(format0, { serversFormat: 1 }), "Truncated")
  })

  it("rejects a truncated FAILURE", () => {
    expectWireError(() => decodeResponse({ type: ResponseType.failure, schema: 0, body: hex("0100000000000000") }), "UnterminatedText")
    expectWireError(() => decodeResponse({ type: ResponseType.failure, schema: 0, body: hex("01000000") }), "Truncated")
  })
})

describe("RowsWriter", () => {
  it("pages like C dqlite: append while under 4096 bytes, then PART", () => {
    const columns = ["id", "name"]
    const messages: Array<Uint8Array> = []
    let writer = new RowsWriter(columns)
    for (let i = 0; i < 1000; i++) {
      if (writer.messageBytes >= rowsBatchBytesTarget) {
        messages.push(writer.finish("part"))
        writer = new RowsWriter(columns)
      }
      writer.appendRow([Values.integer(i), Values.text(`row ${i}`)])
    }
    messages.push(writer.finish("done"))
    const decoded = messages.map((m) => decode(m))
    expect(decoded.length).toBeGreaterThan(1)
    const rows = decoded.flatMap((r) => (r.kind === "rows" ? r.rows : []))
    expect(rows.length).toBe(1000)
    expect(rows[999]).toEqual([Values.integer(999), Values.text("row 999")])
    expect(decoded.map((r) => (r.kind === "rows" ? r.end : "?"))).toEqual([...Array(decoded.length - 1).fill("part"), "done"])
    for (const m of messages.slice(0, -1)) expect(m.length).toBeLessThan(rowsBatchBytesTarget + 64)
    for (const r of decoded) expect(r).toMatchObject({ columns })
  })

  it("leaves the message unchanged when a row fails to encode", () => {
    const writer = new RowsWriter(["a", "b"])
    writer.appendRow([Values.integer(1), Values.text("ok")])
    const before = writer.messageBytes
    expectWireError(() => writer.appendRow([Values.integer(2), Values.text("bad\0")]), "Unencodable")
    expectWireError(() => writer.appendRow([Values.integer(2)]), "Unencodable")
    expect(writer.messageBytes).toBe(before)
    expect(writer.rowCount).toBe(1)
    expect(decode(writer.finish("done"))).toEqual({ kind: "rows", columns: ["a", "b"], rows: [[Values.integer(1), Values.text("ok")]], end: "done" })
  })

  it("refuses rows for a zero-column result and use after finish", () => {
    const writer = new RowsWriter([])
    expectWireError(() => writer.appendRow([]), "Unencodable")
    writer.finish("done")
    expectWireError(() => writer.finish("done"), "Unencodable")
  })
})
