// Property tests: round trips of random messages, and random or mutated bytes never make the
// decoders throw anything but WireError.

import fc from "fast-check"
import { describe, expect, it } from "vitest"
import { WireError } from "../../../src/net/protocol/errors.ts"
import { FrameDecoder } from "../../../src/net/protocol/framing.ts"
import type { Frame } from "../../../src/net/protocol/framing.ts"
import type { Request } from "../../../src/net/protocol/requests.ts"
import { decodeRequest, encodeRequest } from "../../../src/net/protocol/requests.ts"
import type { Response, ResponseDecodeOptions } from "../../../src/net/protocol/responses.ts"
import { decodeResponse, encodeResponse } from "../../../src/net/protocol/responses.ts"
import { Values, canonicalInt64, int64Max, int64Min } from "../../../src/net/protocol/values.ts"
import type { Value } from "../../../src/net/protocol/values.ts"

const int64 = fc.bigInt({ min: int64Min, max: int64Max }).map(canonicalInt64)
const u64 = fc.bigInt({ min: 0n, max: 2n ** 64n - 1n })
const u32 = fc.integer({ min: 0, max: 0xffffffff })
const safeCount = fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER })
const wireText = fc.string({ unit: "grapheme", maxLength: 24 }).filter((s) => !s.includes("\0"))

const paramValue: fc.Arbitrary<Value> = fc.oneof(
  int64.map((value): Value => ({ kind: "integer", value })),
  fc.double().map(Values.float),
  wireText.map(Values.text),
  fc.uint8Array({ maxLength: 24 }).map(Values.blob),
  fc.constant(Values.null),
  wireText.map(Values.iso8601),
  int64.map((value): Value => ({ kind: "boolean", value }))
)
const rowValue: fc.Arbitrary<Value> = fc.oneof(paramValue, int64.map((value): Value => ({ kind: "unixtime", value })))
const schema = fc.constantFrom(0 as const, 1 as const)
const params = fc.array(paramValue, { maxLength: 12 })

const request: fc.Arbitrary<Request> = fc.oneof(
  fc.constant<Request>({ kind: "leader" }),
  u64.map((clientId): Request => ({ kind: "client", clientId })),
  u64.map((timestamp): Request => ({ kind: "heartbeat", timestamp })),
  fc.record({ database: wireText, flags: u64, vfs: wireText }).map((r): Request => ({ kind: "open", ...r })),
  fc.record({ schema, dbId: u64, sql: wireText }).map((r): Request => ({ kind: "prepare", ...r })),
  fc.record({ schema, dbId: u32, stmtId: u32, params }).map((r): Request => ({ kind: "exec", ...r })),
  fc.record({ schema, dbId: u32, stmtId: u32, params }).map((r): Request => ({ kind: "query", ...r })),
  fc.record({ dbId: u32, stmtId: u32 }).map((r): Request => ({ kind: "finalize", ...r })),
  fc.record({ schema, dbId: u64, sql: wireText, params }).map((r): Request => ({ kind: "execSql", ...r })),
  fc.record({ schema, dbId: u64, sql: wireText, params }).map((r): Request => ({ kind: "querySql", ...r })),
  u64.map((dbId): Request => ({ kind: "interrupt", dbId })),
  fc.record({ nodeId: u64, address: wireText }).map((r): Request => ({ kind: "connect", ...r })),
  fc.record({ nodeId: u64, address: wireText }).map((r): Request => ({ kind: "add", ...r })),
  fc.record({ nodeId: u64, role: fc.option(safeCount, { nil: null }) }).map((r): Request => ({ kind: "assign", ...r })),
  u64.map((nodeId): Request => ({ kind: "remove", nodeId })),
  wireText.map((database): Request => ({ kind: "dump", database })),
  safeCount.map((format): Request => ({ kind: "cluster", format })),
  u64.map((nodeId): Request => ({ kind: "transfer", nodeId })),
  safeCount.map((format): Request => ({ kind: "describe", format })),
  u64.map((weight): Request => ({ kind: "weight", weight }))
)

const rows = fc.integer({ min: 1, max: 20 }).chain((columnCount) =>
  fc.record({
    columns: fc.array(wireText, { minLength: columnCount, maxLength: columnCount }),
    rows: fc.array(fc.array(rowValue, { minLength: columnCount, maxLength: columnCount }), { maxLength: 6 }),
    end: fc.constantFrom("done" as const, "part" as const)
  })
)

/** A response and the options needed to decode it. */
const response: fc.Arbitrary<{ response: Response; options: ResponseDecodeOptions }> = fc.oneof(
  fc.record({ code: safeCount, message: wireText }).map((r) => ({ response: { kind: "failure", ...r } as Response, options: {} })),
  fc.record({ nodeId: u64, address: wireText }).map((r) => ({ response: { kind: "server", ...r } as Response, options: {} })),
  wireText.map((address) => ({ response: { kind: "serverLegacy", address } as Response, options: { protocol: "legacy" as const } })),
  safeCount.map((heartbeatTimeoutMs) => ({ response: { kind: "welcome", heartbeatTimeoutMs } as Response, options: {} })),
  fc.array(fc.record({ nodeId: u64, address: wireText, role: safeCount }), { maxLength: 5 }).map((servers) => ({
    response: { kind: "servers", format: 1, servers } as Response,
    options: { serversFormat: 1 as const }
  })),
  fc.array(fc.record({ nodeId: u64, address: wireText }), { maxLength: 5 }).map((servers) => ({
    response: { kind: "servers", format: 0, servers } as Response,
    options: { serversFormat: 0 as const }
  })),
  u32.map((dbId) => ({ response: { kind: "db", dbId } as Response, options: {} })),
  fc
    .record({ dbId: u32, stmtId: u32, paramCount: safeCount, tailOffset: fc.option(safeCount, { nil: null }) })
    .map((r) => ({ response: { kind: "stmt", ...r } as Response, options: {} })),
  fc.record({ lastInsertId: u64, rowsAffected: u64 }).map((r) => ({ response: { kind: "result", ...r } as Response, options: {} })),
  rows.map((r) => ({ response: { kind: "rows", ...r } as Response, options: {} })),
  fc.constant({ response: { kind: "empty" } as Response, options: {} }),
  fc
    .array(fc.record({ name: wireText, data: fc.integer({ min: 0, max: 8 }).chain((words) => fc.uint8Array({ minLength: words * 8, maxLength: words * 8 })) }), { maxLength: 3 })
    .map((files) => ({ response: { kind: "files", files } as Response, options: {} })),
  fc.record({ failureDomain: u64, weight: u64 }).map((r) => ({ response: { kind: "metadata", ...r } as Response, options: {} }))
)

/** Run `action`; anything thrown must be a WireError. */
function onlyWireErrors(action: () => unknown): void {
  try {
    action()
  } catch (error) {
    if (!(error instanceof WireError)) throw error
  }
}

function framesOf(bytes: Uint8Array): Array<Frame> {
  const decoder = new FrameDecoder()
  decoder.push(bytes)
  const frames = [...decoder.frames()]
  decoder.finish()
  return frames
}

describe("round trips of random messages", () => {
  it("every request survives encode → FrameDecoder → decode", () => {
    fc.assert(
      fc.property(request, (original) => {
        const frames = framesOf(encodeRequest(original))
        expect(frames.length).toBe(1)
        expect(decodeRequest(frames[0] as Frame)).toEqual(original)
      }),
      { numRuns: 1000 }
    )
  })

  it("every response survives encode → FrameDecoder → decode", () => {
    fc.assert(
      fc.property(response, ({ response: original, options }) => {
        const frames = framesOf(encodeResponse(original))
        expect(frames.length).toBe(1)
        expect(decodeResponse(frames[0] as Frame, options)).toEqual(original)
      }),
      { numRuns: 1000 }
    )
  })
})

describe("untrusted bytes only ever raise WireError", () => {
  const frame = fc.record({
    type: fc.oneof(fc.integer({ min: 0, max: 21 }), fc.integer({ min: 0, max: 255 })),
    schema: fc.oneof(fc.constantFrom(0, 1), fc.integer({ min: 0, max: 255 })),
    body: fc.oneof(
      fc.uint8Array({ maxLength: 96 }),
      // Bytes biased towards small numbers, NULs and markers, which reach deeper paths.
      fc.array(fc.constantFrom(0, 0, 0, 1, 2, 3, 4, 5, 9, 10, 11, 0x31, 0xee, 0xff, 0x61), { maxLength: 96 }).map((a) => Uint8Array.from(a))
    )
  })
  const options = fc.record({ protocol: fc.constantFrom("v1" as const, "legacy" as const), serversFormat: fc.constantFrom(0 as const, 1 as const) })

  it("decodeRequest on random frames", () => {
    fc.assert(
      fc.property(frame, (f) => onlyWireErrors(() => decodeRequest(f))),
      { numRuns: 5000 }
    )
  })

  it("decodeResponse on random frames", () => {
    fc.assert(
      fc.property(frame, options, (f, o) => onlyWireErrors(() => decodeResponse(f, o))),
      { numRuns: 5000 }
    )
  })

  it("FrameDecoder on random streams in random chunks", () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 40 }), { maxLength: 10 }), (chunks) =>
        onlyWireErrors(() => {
          const decoder = new FrameDecoder({ messageBytesMax: 256 })
          for (const chunk of chunks) {
            decoder.push(chunk)
            for (const f of decoder.frames()) {
              onlyWireErrors(() => decodeRequest(f))
              onlyWireErrors(() => decodeResponse(f))
            }
          }
          decoder.finish()
        })
      ),
      { numRuns: 2000 }
    )
  })

  it("mutated valid requests and responses", () => {
    const mutation = fc.record({
      flips: fc.array(fc.record({ at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }), { maxLength: 4 }),
      cutWords: fc.nat({ max: 3 })
    })
    const message = fc.oneof(request.map(encodeRequest), response.map(({ response: r }) => encodeResponse(r)))
    fc.assert(
      fc.property(message, mutation, options, (bytes, { flips, cutWords }, o) => {
        const body = bytes.slice(8, Math.max(8, bytes.length - cutWords * 8))
        for (const { at, value } of flips) if (body.length > 0) body[at % body.length] = value
        const f = { type: bytes[4] as number, schema: bytes[5] as number, body }
        onlyWireErrors(() => decodeRequest(f))
        onlyWireErrors(() => decodeResponse(f, o))
      }),
      { numRuns: 3000 }
    )
  })
})
