import { describe, expect, it } from "vitest"
import { ValueType } from "../../../src/net/protocol/codes.ts"
import { Values, canonicalInt64, int64Max, int64Min } from "../../../src/net/protocol/values.ts"
import type { Value } from "../../../src/net/protocol/values.ts"
import {
  Reader,
  Writer,
  paddedBytes,
  paramsHeaderBytes,
  readParams,
  readRow,
  readValue,
  rowHeaderBytes,
  textWireBytes,
  writeParams,
  writeRow,
  writeValue
} from "../../../src/net/protocol/wire.ts"
import { ascii, concat, expectWireError, hex } from "../gateway/helpers.ts"

function encodeValue(value: Value): Uint8Array {
  const w = new Writer()
  writeValue(w, value, "v")
  return w.toBytes()
}

function decodeValue(bytes: Uint8Array, code: number): { value: Value; consumed: number } {
  const r = new Reader(bytes)
  const value = readValue(r, code, "v")
  return { value, consumed: r.offset }
}

function roundTrip(value: Value): Value {
  const bytes = encodeValue(value)
  expect(bytes.length % 8).toBe(0)
  const { value: decoded, consumed } = decodeValue(bytes, ValueType[value.kind])
  expect(consumed).toBe(bytes.length)
  return decoded
}

describe("padding", () => {
  it("rounds byte counts up to whole words", () => {
    expect([0, 1, 7, 8, 9, 15, 16, 17].map(paddedBytes)).toEqual([0, 8, 8, 8, 16, 16, 16, 24])
  })
})

describe("text", () => {
  it("encodes the empty string as one zero word", () => {
    expect(encodeValue(Values.text(""))).toEqual(new Uint8Array(8))
  })

  it("pads 7, 8 and 9 byte strings to 8, 16 and 16 bytes (the NUL needs room)", () => {
    expect(encodeValue(Values.text("abcdefg"))).toEqual(ascii("abcdefg", 8))
    expect(encodeValue(Values.text("abcdefgh"))).toEqual(ascii("abcdefgh", 16))
    expect(encodeValue(Values.text("abcdefghi"))).toEqual(ascii("abcdefghi", 16))
    expect(["abcdefg", "abcdefgh", "abcdefghi"].map(textWireBytes)).toEqual([8, 16, 16])
  })

  it("counts multibyte UTF-8 by bytes, not characters", () => {
    const text = "h\u00e9\u2192\u{1d11e}" // 1 + 2 + 3 + 4 = 10 bytes
    const bytes = encodeValue(Values.text(text))
    expect(bytes.length).toBe(16)
    expect(bytes.subarray(0, 11)).toEqual(hex("68 c3a9 e28692 f09d849e 00"))
    expect(roundTrip(Values.text(text))).toEqual(Values.text(text))
  })

  it("keeps a leading byte-order mark", () => {
    expect(roundTrip(Values.text("\ufeffx"))).toEqual(Values.text("\ufeffx"))
  })

  it("decodes up to the first NUL and skips padding without looking at it", () => {
    const r = new Reader(concat(hex("61 62 00 ff ff ff ff ff"), hex("2a 00 00 00 00 00 00 00")))
    expect(r.text("t")).toBe("ab")
    expect(r.offset).toBe(8)
    expect(r.int64("i")).toBe(42)
  })

  it("rejects a text without NUL", () => {
    expectWireError(() => new Reader(ascii("abcdefgh", 8)).text("t"), "UnterminatedText")
  })

  it("rejects a text whose padding runs past the end", () => {
    expectWireError(() => new Reader(hex("61 62 00")).text("t"), "Truncated")
  })

  it("refuses to encode NUL and lone surrogates", () => {
    expectWireError(() => encodeValue(Values.text("a\0b")), "Unencodable")
    expectWireError(() => encodeValue(Values.text("a\ud800b")), "Unencodable")
    expectWireError(() => encodeValue(Values.text("\udc00")), "Unencodable")
  })

  it("replaces invalid UTF-8 instead of throwing", () => {
    expect(new Reader(hex("ff fe 00 00 00 00 00 00")).text("t")).toBe("\ufffd\ufffd")
  })
})

describe("blob", () => {
  it("encodes lengths 0, 7, 8 and 9 as length word plus padded bytes", () => {
    expect(encodeValue(Values.blob(new Uint8Array(0)))).toEqual(hex("00 00 00 00 00 00 00 00"))
    const seven = Uint8Array.from([1, 2, 3, 4, 5, 6, 7])
    expect(encodeValue(Values.blob(seven))).toEqual(concat(hex("07 00 00 00 00 00 00 00"), hex("01 02 03 04 05 06 07 00")))
    expect(encodeValue(Values.blob(new Uint8Array(8).fill(0xaa))).length).toBe(16)
    const nine = encodeValue(Values.blob(new Uint8Array(9).fill(0xbb)))
    expect(nine.length).toBe(24)
    expect(nine.subarray(17)).toEqual(new Uint8Array(7))
  })

  it("round-trips lengths around word boundaries", () => {
    for (const length of [0, 1, 7, 8, 9, 15, 16, 17, 1000]) {
      const data = Uint8Array.from({ length }, (_, i) => (i * 37) & 0xff)
      expect(roundTrip(Values.blob(data))).toEqual(Values.blob(data))
    }
  })

  it("accepts garbage padding (captured from the C server after a 1-byte blob)", () => {
    const { value, consumed } = decodeValue(concat(hex("01 00 00 00 00 00 00 00"), hex("ff 02 00 00 01 00 20 00")), ValueType.blob)
    expect(value).toEqual(Values.blob(Uint8Array.from([0xff])))
    expect(consumed).toBe(16)
  })

  it("returns a copy, not a view into the message", () => {
    const body = concat(hex("01 00 00 00 00 00 00 00"), hex("05 00 00 00 00 00 00 00"))
    const { value } = decodeValue(body, ValueType.blob)
    body[8] = 9
    expect(value).toEqual(Values.blob(Uint8Array.from([5])))
  })

  it("rejects a length beyond the body without allocating it", () => {
    expectWireError(() => decodeValue(hex("ff ff ff ff ff ff ff ff"), ValueType.blob), "Truncated")
    expectWireError(() => decodeValue(concat(hex("09 00 00 00 00 00 00 00"), new Uint8Array(8)), ValueType.blob), "Truncated")
  })
})

describe("integers (int64, canonical number | bigint)", () => {
  const cases: ReadonlyArray<[bigint, string]> = [
    [0n, "00 00 00 00 00 00 00 00"],
    [1n, "01 00 00 00 00 00 00 00"],
    [-1n, "ff ff ff ff ff ff ff ff"],
    [-2n, "fe ff ff ff ff ff ff ff"],
    [int64Max, "ff ff ff ff ff ff ff 7f"],
    [int64Min, "00 00 00 00 00 00 00 80"],
    [2n ** 53n - 1n, "ff ff ff ff ff ff 1f 00"],
    [2n ** 53n, "00 00 00 00 00 00 20 00"],
    [-(2n ** 53n), "00 00 00 00 00 00 e0 ff"]
  ]

  it("encodes two's complement little-endian", () => {
    for (const [value, bytes] of cases) expect(encodeValue(Values.integer(value))).toEqual(hex(bytes))
  })

  it("decodes to a number exactly when the value is a safe integer", () => {
    for (const [value, bytes] of cases) {
      const decoded = decodeValue(hex(bytes), ValueType.integer).value
      const safe = value >= BigInt(Number.MIN_SAFE_INTEGER) && value <= BigInt(Number.MAX_SAFE_INTEGER)
      expect(decoded).toEqual({ kind: "integer", value: safe ? Number(value) : value })
    }
  })

  it("round-trips the extremes, negatives and the safe-integer edges", () => {
    for (const [value] of cases) {
      const canonical = canonicalInt64(value)
      expect(roundTrip(Values.integer(canonical))).toEqual({ kind: "integer", value: canonical })
    }
    expect(roundTrip(Values.integer(-123456789))).toEqual({ kind: "integer", value: -123456789 })
  })

  it("normalises a bigint in the safe range to a number", () => {
    expect(Values.integer(42n)).toEqual({ kind: "integer", value: 42 })
    expect(typeof Values.integer(2n ** 60n).value).toBe("bigint")
  })

  it("refuses fractions, non-finite numbers and values outside int64", () => {
    expectWireError(() => encodeValue({ kind: "integer", value: 1.5 }), "Unencodable")
    expectWireError(() => encodeValue({ kind: "integer", value: Number.NaN }), "Unencodable")
    expectWireError(() => encodeValue({ kind: "integer", value: 2n ** 63n }), "Unencodable")
    expectWireError(() => encodeValue({ kind: "integer", value: -(2n ** 63n) - 1n }), "Unencodable")
  })

  it("keeps unixtime and boolean as raw int64", () => {
    expect(roundTrip(Values.unixtime(-86400))).toEqual({ kind: "unixtime", value: -86400 })
    expect(roundTrip(Values.boolean(5))).toEqual({ kind: "boolean", value: 5 })
    expect(encodeValue(Values.boolean(true))).toEqual(hex("01 00 00 00 00 00 00 00"))
    expect(encodeValue(Values.boolean(false))).toEqual(new Uint8Array(8))
  })
})

describe("float, null, iso8601", () => {
  it("encodes 2.5 as captured", () => {
    expect(encodeValue(Values.float(2.5))).toEqual(hex("00 00 00 00 00 00 04 40"))
  })

  it("round-trips -0, NaN, infinities and subnormals", () => {
    expect(Object.is((roundTrip(Values.float(-0)) as { value: number }).value, -0)).toBe(true)
    expect(Number.isNaN((roundTrip(Values.float(Number.NaN)) as { value: number }).value)).toBe(true)
    for (const x of [Infinity, -Infinity, Number.MIN_VALUE, Number.MAX_VALUE, 0.1]) {
      expect(roundTrip(Values.float(x))).toEqual(Values.float(x))
    }
  })

  it("writes null as one zero word and ignores its content on input", () => {
    expect(encodeValue(Values.null)).toEqual(new Uint8Array(8))
    expect(decodeValue(hex("de ad be ef 00 00 00 01"), ValueType.null)).toEqual({ value: Values.null, consumed: 8 })
  })

  it("encodes iso8601 as text, including the empty text C sends for NULL", () => {
    expect(encodeValue(Values.iso8601(""))).toEqual(new Uint8Array(8))
    const stamp = "2021-02-03 04:05:06.7+01:00"
    expect(encodeValue(Values.iso8601(stamp))).toEqual(ascii(stamp, 32))
    expect(roundTrip(Values.iso8601(stamp))).toEqual(Values.iso8601(stamp))
  })
})

describe("parameter tuples", () => {
  function encodeParams(values: ReadonlyArray<Value>, schema: 0 | 1): Uint8Array {
    const w = new Writer()
    writeParams(w, values, schema)
    return w.toBytes()
  }

  it("lays out 9 integers at schema 0 as in the capture: count, types, pad, values", () => {
    const values = Array.from({ length: 9 }, (_, i) => Values.integer(i))
    const bytes = encodeParams(values, 0)
    expect(bytes.subarray(0, 16)).toEqual(hex("09 01 01 01 01 01 01 01 | 01 01 00 00 00 00 00 00"))
    expect(bytes.length).toBe(16 + 9 * 8)
    expect(readParams(new Reader(bytes), 0)).toEqual(values)
  })

  it("sizes the header: schema 0 fits 7 types in the first word, schema 1 fits 4", () => {
    expect([0, 7, 8, 15, 16].map((n) => paramsHeaderBytes(n, 0))).toEqual([8, 8, 16, 16, 24])
    expect([0, 4, 5, 12, 13].map((n) => paramsHeaderBytes(n, 1))).toEqual([8, 8, 16, 16, 24])
    const five = Array.from({ length: 5 }, () => Values.float(1))
    expect(encodeParams(five, 1).subarray(0, 16)).toEqual(hex("05 00 00 00 02 02 02 02 | 02 00 00 00 00 00 00 00"))
  })

  it("writes nothing for no parameters, and reads both the absent and the zero-count tuple", () => {
    expect(encodeParams([], 0).length).toBe(0)
    expect(readParams(new Reader(new Uint8Array(0)), 0)).toEqual([])
    expect(readParams(new Reader(new Uint8Array(8)), 0)).toEqual([])
    expect(readParams(new Reader(new Uint8Array(8)), 1)).toEqual([])
  })

  it("ignores garbage padding as go-dqlite leaves it (captured: count 1, INTEGER, 'LECT *')", () => {
    const bytes = concat(hex("01 01 4c 45 43 54 20 2a"), hex("2a 00 00 00 00 00 00 00"))
    expect(readParams(new Reader(bytes), 0)).toEqual([Values.integer(42)])
  })

  it("round-trips every parameter type at both schemas", () => {
    const values: Array<Value> = [
      Values.integer(-7),
      Values.float(0.5),
      Values.text("h\u00e9"),
      Values.blob(Uint8Array.from([1, 2, 3])),
      Values.null,
      Values.iso8601("2020-01-02"),
      Values.boolean(true),
      Values.integer(int64Min)
    ]
    for (const schema of [0, 1] as const) {
      const bytes = encodeParams(values, schema)
      expect(readParams(new Reader(bytes), schema)).toEqual(values)
    }
  })

  it("needs schema 1 above 255 parameters", () => {
    const values = Array.from({ length: 300 }, (_, i) => Values.integer(i))
    expectWireError(() => encodeParams(values, 0), "Unencodable")
    const bytes = encodeParams(values, 1)
    expect(bytes.subarray(0, 4)).toEqual(hex("2c 01 00 00"))
    expect(readParams(new Reader(bytes), 1)).toEqual(values)
    expect(encodeParams(values.slice(0, 255), 0)[0]).toBe(255)
  })

  it("rejects UNIXTIME and unknown type codes, naming the parameter", () => {
    const unixtime = concat(hex("01 09 00 00 00 00 00 00"), new Uint8Array(8))
    const error = expectWireError(() => readParams(new Reader(unixtime), 0), "BadValueType")
    expect(error.field).toBe("params[0]")
    const unknown = concat(hex("02 01 06 00 00 00 00 00"), new Uint8Array(16))
    expect(expectWireError(() => readParams(new Reader(unknown), 0), "BadValueType").field).toBe("params[1]")
    expectWireError(() => encodeParams([Values.unixtime(1)], 0), "Unencodable")
  })

  it("rejects counts that cannot fit before allocating anything", () => {
    expectWireError(() => readParams(new Reader(hex("c8 01 01 01 01 01 01 01")), 0), "Truncated")
    expectWireError(() => readParams(new Reader(hex("ff ff ff ff 01 01 01 01")), 1), "Truncated")
    expectWireError(() => readParams(new Reader(hex("01 00 00")), 1), "Truncated")
    const shortValue = concat(hex("01 04 00 00 00 00 00 00"), hex("10 00 00 00 00 00 00 00"))
    expectWireError(() => readParams(new Reader(shortValue), 0), "Truncated")
  })
})

describe("row tuples", () => {
  it("packs types in nibbles, low nibble first (captured header 31 25 04)", () => {
    const w = new Writer()
    writeRow(w, [Values.integer(1), Values.text("x"), Values.null, Values.float(2), Values.blob(Uint8Array.from([0xff]))])
    const bytes = w.toBytes()
    expect(bytes.subarray(0, 8)).toEqual(hex("31 25 04 00 00 00 00 00"))
    expect(bytes.length).toBe(8 + 6 * 8)
  })

  it("uses one header word per 16 columns", () => {
    expect([1, 2, 16, 17, 32, 33].map(rowHeaderBytes)).toEqual([8, 8, 8, 16, 16, 24])
    const values = Array.from({ length: 17 }, () => Values.boolean(1))
    const w = new Writer()
    writeRow(w, values)
    const bytes = w.toBytes()
    expect(bytes.subarray(0, 16)).toEqual(hex("bb bb bb bb bb bb bb bb | 0b 00 00 00 00 00 00 00"))
    expect(readRow(new Reader(bytes), 17)).toEqual(values)
  })

  it("round-trips every row type", () => {
    const values: Array<Value> = [
      Values.integer(int64Max),
      Values.float(-1.25),
      Values.text(""),
      Values.blob(new Uint8Array(0)),
      Values.null,
      Values.unixtime(1_600_000_000),
      Values.iso8601(""),
      Values.boolean(0)
    ]
    const w = new Writer()
    writeRow(w, values)
    expect(readRow(new Reader(w.toBytes()), values.length)).toEqual(values)
  })

  it("rejects nibbles outside the row types", () => {
    const bytes = concat(hex("06 00 00 00 00 00 00 00"), new Uint8Array(8))
    expect(expectWireError(() => readRow(new Reader(bytes), 1), "BadValueType").field).toBe("row[0]")
    const zero = concat(hex("01 00 00 00 00 00 00 00"), new Uint8Array(16))
    expectWireError(() => readRow(new Reader(zero), 2), "BadValueType")
  })
})
