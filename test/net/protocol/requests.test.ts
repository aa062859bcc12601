import { describe, expect, it } from "vitest"
import { RequestType } from "../../../src/net/protocol/codes.ts"
import { WireError } from "../../../src/net/protocol/errors.ts"
import { decodeFrame, encodeFrame } from "../../../src/net/protocol/framing.ts"
import type { Request } from "../../../src/net/protocol/requests.ts"
import { decodeRequest, encodeRequest, requestSchema, requestTypeCode } from "../../../src/net/protocol/requests.ts"
import { Values } from "../../../src/net/protocol/values.ts"
import { ascii, concat, expectWireError, hex, toHex } from "../gateway/helpers.ts"

function decode(bytes: Uint8Array): Request {
  return decodeRequest(decodeFrame(bytes))
}

/** Captured requests (fact sheet §6, "Captured examples"), header | body. */
const captures: ReadonlyArray<{ name: string; request: Request; bytes: Uint8Array }> = [
  {
    name: "LEADER",
    request: { kind: "leader" },
    bytes: hex("01000000 00 00 0000 | 0000000000000000")
  },
  {
    name: "CLIENT",
    request: { kind: "client", clientId: 0n },
    bytes: hex("01000000 01 00 0000 | 0000000000000000")
  },
  {
    name: 'OPEN "demo"',
    request: { kind: "open", database: "demo", flags: 0n, vfs: "volatile" },
    bytes: concat(hex("04000000 03 00 0000"), ascii("demo", 8), new Uint8Array(8), ascii("volatile", 16))
  },
  {
    name: 'EXEC_SQL "BEGIN"',
    request: { kind: "execSql", schema: 0, dbId: 0n, sql: "BEGIN", params: [] },
    bytes: concat(hex("02000000 08 00 0000"), new Uint8Array(8), ascii("BEGIN", 8))
  }
]

const allKinds: ReadonlyArray<Request> = [
  { kind: "leader" },
  { kind: "client", clientId: 0x7fffffffffffffffn },
  { kind: "heartbeat", timestamp: 1_700_000_000_000n },
  { kind: "open", database: "caf\u00e9.db", flags: 6n, vfs: "" },
  { kind: "prepare", schema: 0, dbId: 0n, sql: "SELECT ?1, ?2" },
  { kind: "prepare", schema: 1, dbId: 0n, sql: "SELECT 1; SELECT 2" },
  { kind: "exec", schema: 0, dbId: 0, stmtId: 3, params: [Values.integer(1), Values.null] },
  { kind: "exec", schema: 1, dbId: 0, stmtId: 0xffffffff, params: [Values.text("x")] },
  { kind: "exec", schema: 0, dbId: 0, stmtId: 1, params: [] },
  { kind: "query", schema: 0, dbId: 0, stmtId: 2, params: [Values.float(1.5), Values.boolean(true)] },
  { kind: "query", schema: 1, dbId: 0, stmtId: 2, params: Array.from({ length: 256 }, (_, i) => Values.integer(i)) },
  { kind: "finalize", dbId: 0, stmtId: 9 },
  { kind: "execSql", schema: 0, dbId: 0n, sql: "INSERT INTO t VALUES (?, ?, ?)", params: [Values.blob(Uint8Array.from([1, 2])), Values.iso8601("2021-02-03 04:05:06.7+01:00"), Values.integer(-(2n ** 63n))] },
  { kind: "execSql", schema: 1, dbId: 0n, sql: "", params: [Values.integer(2n ** 62n)] },
  { kind: "querySql", schema: 0, dbId: 0n, sql: "SELECT * FROM t WHERE k = ?", params: [Values.text("\u{1f600}")] },
  { kind: "querySql", schema: 1, dbId: 0n, sql: "SELECT 1", params: [] },
  { kind: "interrupt", dbId: 0n },
  { kind: "connect", nodeId: 2n, address: "127.0.0.1:9002" },
  { kind: "add", nodeId: 0xbe55318c8571c12dn, address: "[::1]:9003" },
  { kind: "assign", nodeId: 3n, role: 1 },
  { kind: "assign", nodeId: 3n, role: null },
  { kind: "remove", nodeId: 0xffffffffffffffffn },
  { kind: "dump", database: "db.bin" },
  { kind: "cluster", format: 1 },
  { kind: "cluster", format: 0 },
  { kind: "transfer", nodeId: 0n },
  { kind: "describe", format: 0 },
  { kind: "weight", weight: 42n }
]

describe("captured requests", () => {
  for (const { name, request, bytes } of captures) {
    it(`${name}: encodes byte for byte and decodes back`, () => {
      expect(toHex(encodeRequest(request))).toBe(toHex(bytes))
      expect(decode(bytes)).toEqual(request)
    })
  }
})

describe("every request type", () => {
  it("covers every type code 0–19", () => {
    const codes = new Set(allKinds.map(requestTypeCode))
    expect([...codes].sort((a, b) => a - b)).toEqual(Array.from({ length: 20 }, (_, i) => i))
  })

  for (const request of allKinds) {
    it(`round-trips ${request.kind} (schema ${requestSchema(request)})`, () => {
      const bytes = encodeRequest(request)
      expect(bytes.length % 8).toBe(0)
      expect(bytes[4]).toBe(RequestType[request.kind])
      expect(bytes[5]).toBe(requestSchema(request))
      expect(decode(bytes)).toEqual(request)
    })
  }
})

describe("request layouts", () => {
  it("EXEC_SQL with one parameter: id, sql, count + type + pad, value", () => {
    const bytes = encodeRequest({ kind: "execSql", schema: 0, dbId: 0n, sql: "SELECT ?", params: [Values.integer(42)] })
    expect(toHex(bytes)).toBe(
      toHex(concat(hex("05000000 08 00 0000"), new Uint8Array(8), ascii("SELECT ?", 16), hex("01 01 00 00 00 00 00 00"), hex("2a 00 00 00 00 00 00 00")))
    )
  })

  it("EXEC: two u32 ids share the first word, then the 32-bit-count tuple at schema 1", () => {
    const bytes = encodeRequest({ kind: "exec", schema: 1, dbId: 0, stmtId: 5, params: [Values.null] })
    expect(toHex(bytes)).toBe(toHex(hex("03000000 05 01 0000 | 00000000 05000000 | 01000000 05 000000 | 0000000000000000")))
  })

  it("ASSIGN writes the role word only when a role is given", () => {
    expect(encodeRequest({ kind: "assign", nodeId: 1n, role: 2 })).toEqual(hex("02000000 0d 00 0000 | 0100000000000000 | 0200000000000000"))
    expect(encodeRequest({ kind: "assign", nodeId: 1n, role: null })).toEqual(hex("01000000 0d 00 0000 | 0100000000000000"))
  })

  it("accepts a zero-count tuple and ignores bytes after the last field", () => {
    const zeroCount = concat(hex("03000000 09 00 0000"), new Uint8Array(8), ascii("SELECT", 8), new Uint8Array(8))
    expect(decode(zeroCount)).toEqual({ kind: "querySql", schema: 0, dbId: 0n, sql: "SELECT", params: [] })
    expect(decode(hex("02000000 00 00 0000 | 0000000000000000 | ffffffffffffffff"))).toEqual({ kind: "leader" })
    expect(decode(hex("02000000 10 00 0000 | 0100000000000000 | ffffffffffffffff"))).toEqual({ kind: "cluster", format: 1 })
  })

  it("decodes a go-dqlite request whose tuple padding holds leftovers", () => {
    const bytes = concat(hex("05000000 08 00 0000"), new Uint8Array(8), ascii("SELECT ?", 16), hex("01 01 4c 45 43 54 20 2a"), hex("07 00 00 00 00 00 00 00"))
    expect(decode(bytes)).toEqual({ kind: "execSql", schema: 0, dbId: 0n, sql: "SELECT ?", params: [Values.integer(7)] })
  })

  it("reads the same tuple bytes differently at schema 0 and 1", () => {
    // Schema 1: count 1 (4 bytes), type INTEGER. Schema 0: count 1 (1 byte), type 0 (invalid).
    const body = concat(new Uint8Array(8), ascii("x", 8), hex("01 00 00 00 01 00 00 00"), hex("05 00 00 00 00 00 00 00"))
    expect(decodeRequest({ type: RequestType.querySql, schema: 1, body })).toMatchObject({ schema: 1, params: [Values.integer(5)] })
    expectWireError(() => decodeRequest({ type: RequestType.querySql, schema: 0, body }), "BadValueType")
  })
})

describe("request decoding errors", () => {
  it("rejects unknown type codes", () => {
    for (const type of [20, 21, 100, 255]) {
      expectWireError(() => decodeRequest({ type, schema: 0, body: new Uint8Array(8) }), "UnknownType")
    }
  })

  it("rejects schema 1 on single-schema requests and schema 2 on all", () => {
    expectWireError(() => decodeRequest({ type: RequestType.leader, schema: 1, body: new Uint8Array(8) }), "UnsupportedSchema")
    expectWireError(() => decodeRequest({ type: RequestType.cluster, schema: 1, body: new Uint8Array(8) }), "UnsupportedSchema")
    expectWireError(() => decodeRequest({ type: RequestType.exec, schema: 2, body: new Uint8Array(8) }), "UnsupportedSchema")
    expectWireError(() => decodeRequest({ type: RequestType.prepare, schema: 2, body: new Uint8Array(16) }), "UnsupportedSchema")
  })

  it("rejects every encoded request with its last word cut off", () => {
    for (const request of allKinds) {
      const bytes = encodeRequest(request)
      const cut = { type: bytes[4] as number, schema: bytes[5] as number, body: bytes.subarray(8, bytes.length - 8) }
      if (request.kind === "assign" && request.role !== null) {
        // Without its role word an ASSIGN is the legacy one-word PROMOTE.
        expect(decodeRequest(cut)).toEqual({ ...request, role: null })
        continue
      }
      try {
        decodeRequest(cut)
        expect.unreachable(`${request.kind} decoded without its last word`)
      } catch (error) {
        expect(error).toBeInstanceOf(WireError)
        expect(["Truncated", "UnterminatedText"]).toContain((error as WireError).reason)
      }
    }
  })

  it("rejects empty bodies for every type", () => {
    for (let type = 0; type < 20; type++) {
      const textFirst = type === RequestType.open || type === RequestType.dump
      expectWireError(() => decodeRequest({ type, schema: 0, body: new Uint8Array(0) }), textFirst ? "UnterminatedText" : "Truncated")
    }
  })

  it("names parameter errors so a server can answer 'bind parameters'", () => {
    const body = concat(new Uint8Array(8), ascii("SELECT ?", 16), hex("01 09 00 00 00 00 00 00"), new Uint8Array(8))
    const error = expectWireError(() => decodeRequest({ type: RequestType.execSql, schema: 0, body }), "BadValueType")
    expect(error.field.startsWith("params")).toBe(true)
    const fixed = expectWireError(() => decodeRequest({ type: RequestType.execSql, schema: 0, body: body.subarray(0, 8) }), "UnterminatedText")
    expect(fixed.field).toBe("execSql.sql")
  })

  it("rejects a format or role above 2^53 - 1 as OutOfRange", () => {
    expectWireError(() => decode(hex("01000000 10 00 0000 | ffffffffffffffff")), "OutOfRange")
    expectWireError(() => decode(hex("02000000 0d 00 0000 | 0100000000000000 | 0000000000000080")), "OutOfRange")
  })

  it("rejects a partial role word in ASSIGN", () => {
    expectWireError(() => decodeRequest({ type: RequestType.assign, schema: 0, body: new Uint8Array(12) }), "Truncated")
  })
})

describe("request encoding errors", () => {
  it("refuses more than 255 parameters at schema 0, NUL in SQL, bad ids", () => {
    const params = Array.from({ length: 256 }, () => Values.null)
    expectWireError(() => encodeRequest({ kind: "querySql", schema: 0, dbId: 0n, sql: "x", params }), "Unencodable")
    expectWireError(() => encodeRequest({ kind: "execSql", schema: 0, dbId: 0n, sql: "a\0b", params: [] }), "Unencodable")
    expectWireError(() => encodeRequest({ kind: "finalize", dbId: -1, stmtId: 0 }), "Unencodable")
    expectWireError(() => encodeRequest({ kind: "remove", nodeId: 2n ** 64n }), "Unencodable")
    expectWireError(() => encodeRequest({ kind: "exec", schema: 0, dbId: 0, stmtId: 0, params: [Values.unixtime(0)] }), "Unencodable")
  })

  it("frames only whole-word bodies", () => {
    for (const request of allKinds) {
      const bytes = encodeRequest(request)
      const frame = decodeFrame(bytes)
      expect(encodeFrame(frame)).toEqual(bytes)
    }
  })
})
