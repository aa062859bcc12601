// Fuzz against a live gateway: well-formed requests in random order and with random contents,
// the same requests mutated (bytes flipped, header fields changed, cut short), and random bytes,
// each case on its own connection. Every case must end with the gateway answering only
// decodable responses and closing the connection when we stop sending; meanwhile a witness
// client on its own connection keeps getting right answers, and no defect is ever logged.
import * as net from "node:net"
import { describe, expect, it } from "@effect/vitest"
import fc from "fast-check"
import { Duration, Effect, Logger } from "effect"
import { encodeProtocolVersion } from "../../../src/net/protocol/framing.ts"
import { FrameDecoder } from "../../../src/net/protocol/framing.ts"
import type { Request } from "../../../src/net/protocol/requests.ts"
import { encodeRequest } from "../../../src/net/protocol/requests.ts"
import { decodeResponse } from "../../../src/net/protocol/responses.ts"
import type { Value } from "../../../src/net/protocol/values.ts"
import { Values } from "../../../src/net/protocol/values.ts"
import { querySql, rawConnect, startGateway } from "./harness.ts"

const statements = [
  "CREATE TABLE IF NOT EXISTS f (a, b)",
  "INSERT INTO f VALUES (?, ?)",
  "SELECT * FROM f",
  "SELECT * FROM f WHERE a = ?",
  "DELETE FROM f WHERE rowid % 2 = 0",
  "BEGIN",
  "COMMIT",
  "ROLLBACK",
  "SELECT 1; SELECT 2",
  "SELEC nonsense",
  "",
  "WITH RECURSIVE k(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM k WHERE n < 2000) SELECT n, 'x' FROM k",
  "CREATE TRIGGER IF NOT EXISTS g AFTER INSERT ON f BEGIN SELECT 1; END",
  "SELECT ?1, ?2, :x"
]
const sql = fc.constantFrom(...statements)
const value: fc.Arbitrary<Value> = fc.oneof(
  fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }).map(Values.integer),
  fc.double().map(Values.float),
  fc.string({ maxLength: 12 }).filter((s) => !s.includes("\0")).map(Values.text),
  fc.uint8Array({ maxLength: 40 }).map(Values.blob),
  fc.constant(Values.null),
  fc.boolean().map(Values.boolean)
)
const params = fc.oneof({ weight: 3, arbitrary: fc.constant([]) }, { weight: 2, arbitrary: fc.array(value, { maxLength: 4 }) })
const small = fc.integer({ min: 0, max: 4 })
const schema = fc.constantFrom(0 as const, 1 as const)

const request: fc.Arbitrary<Request> = fc.oneof(
  fc.constant<Request>({ kind: "leader" }),
  fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }).map((clientId): Request => ({ kind: "client", clientId })),
  fc.constant<Request>({ kind: "heartbeat", timestamp: 1n }),
  fc.constantFrom("fuzz", "other", "").map((database): Request => ({ kind: "open", database, flags: 0n, vfs: "volatile" })),
  fc.record({ schema, sql }).map(({ schema, sql }): Request => ({ kind: "prepare", schema, dbId: 0n, sql })),
  fc.record({ schema, stmtId: small, params }).map((r): Request => ({ kind: "exec", dbId: 0, ...r })),
  fc.record({ schema, stmtId: small, params }).map((r): Request => ({ kind: "query", dbId: 0, ...r })),
  small.map((stmtId): Request => ({ kind: "finalize", dbId: 0, stmtId })),
  fc.record({ schema, sql, params }).map((r): Request => ({ kind: "execSql", dbId: 0n, ...r })),
  fc.record({ schema, sql, params }).map((r): Request => ({ kind: "querySql", dbId: 0n, ...r })),
  fc.constant<Request>({ kind: "interrupt", dbId: 0n }),
  fc.record({ nodeId: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }), address: fc.constant("127.0.0.1:1") }).map((r): Request => ({ kind: "add", ...r })),
  fc.record({ nodeId: fc.bigInt({ min: 0n, max: 9n }), role: fc.option(fc.integer({ min: 0, max: 5 }), { nil: null }) }).map((r): Request => ({ kind: "assign", ...r })),
  fc.bigInt({ min: 0n, max: 9n }).map((nodeId): Request => ({ kind: "remove", nodeId })),
  fc.constantFrom("fuzz", "nope").map((database): Request => ({ kind: "dump", database })),
  fc.integer({ min: 0, max: 3 }).map((format): Request => ({ kind: "cluster", format })),
  fc.bigInt({ min: 0n, max: 9n }).map((nodeId): Request => ({ kind: "transfer", nodeId })),
  fc.integer({ min: 0, max: 2 }).map((format): Request => ({ kind: "describe", format })),
  fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }).map((weight): Request => ({ kind: "weight", weight }))
)

type Mutation =
  | { readonly kind: "flip"; readonly at: number; readonly xor: number }
  | { readonly kind: "type"; readonly type: number }
  | { readonly kind: "schema"; readonly schema: number }
  | { readonly kind: "words"; readonly delta: number }
  | { readonly kind: "cut"; readonly keep: number }

const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ kind: fc.constant("flip" as const), at: fc.nat(), xor: fc.integer({ min: 1, max: 255 }) }),
  fc.record({ kind: fc.constant("type" as const), type: fc.integer({ min: 0, max: 255 }) }),
  fc.record({ kind: fc.constant("schema" as const), schema: fc.integer({ min: 0, max: 255 }) }),
  fc.record({ kind: fc.constant("words" as const), delta: fc.integer({ min: -3, max: 3 }) }),
  fc.record({ kind: fc.constant("cut" as const), keep: fc.nat() })
)

function mutate(bytes: Uint8Array, m: Mutation): Uint8Array {
  const out = Uint8Array.from(bytes)
  const view = new DataView(out.buffer)
  switch (m.kind) {
    case "flip":
      out[m.at % out.length] = (out[m.at % out.length] ?? 0) ^ m.xor
      return out
    case "type":
      out[4] = m.type
      return out
    case "schema":
      out[5] = m.schema
      return out
    case "words":
      view.setUint32(0, Math.max(0, view.getUint32(0, true) + m.delta), true)
      return out
    case "cut":
      return out.subarray(0, m.keep % (out.length + 1))
  }
}

const message: fc.Arbitrary<Uint8Array> = fc.oneof(
  { weight: 5, arbitrary: request.map(encodeRequest) },
  { weight: 4, arbitrary: fc.tuple(request, mutation).map(([r, m]) => mutate(encodeRequest(r), m)) },
  // A header with a plausible size and a random body.
  {
    weight: 1,
    arbitrary: fc.tuple(fc.integer({ min: 0, max: 30 }), fc.integer({ min: 0, max: 19 }), fc.nat({ max: 1 })).chain(([words, type, schema]) =>
      fc.uint8Array({ minLength: words * 8, maxLength: words * 8 }).map((body) => {
        const header = new Uint8Array(8)
        new DataView(header.buffer).setUint32(0, words, true)
        header[4] = type
        header[5] = schema
        return Uint8Array.from([...header, ...body])
      })
    )
  },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 64 }) }
)

const fuzzCase = fc.record({
  openFirst: fc.boolean(),
  version: fc.oneof({ weight: 9, arbitrary: fc.constant("v1" as const) }, { weight: 1, arbitrary: fc.constantFrom("legacy" as const, "garbage" as const) }),
  messages: fc.array(message, { minLength: 1, maxLength: 12 })
})

/** Sends the case's bytes, half-closes, and collects every byte until the gateway closes. */
const runCase = (address: string, bytes: Uint8Array) =>
  Effect.async<Buffer, Error>((resume) => {
    const [host, port] = address.split(":") as [string, string]
    const socket = net.connect({ host, port: Number(port) })
    const received: Array<Buffer> = []
    socket.on("error", () => {})
    socket.on("data", (chunk: Buffer) => void received.push(chunk))
    socket.on("connect", () => socket.end(bytes))
    socket.on("close", () => resume(Effect.succeed(Buffer.concat(received))))
    return Effect.sync(() => socket.destroy())
  }).pipe(Effect.timeoutFail({ duration: Duration.seconds(10), onTimeout: () => new Error("the gateway left a fuzzed connection open") }))

const seed = 0x5eed_0006
const runs = 300

describe("gateway: live fuzz", () => {
  it.scopedLive(`random and mutated messages never break the gateway (seed ${seed}, ${runs} cases)`, () => {
    const logs: Array<string> = []
    const logger = Logger.make(({ logLevel, message }) => {
      if (logLevel.label === "ERROR" || logLevel.label === "FATAL") logs.push(Array.isArray(message) ? message.map(String).join(" ") : String(message))
    })
    return Effect.gen(function*() {
      const gateway = yield* startGateway({ others: [{ id: 2, address: "127.0.0.1:9002", role: "voter" }] })
      const witness = yield* rawConnect(gateway.address)
      yield* witness.open("witness")
      yield* witness.call({ kind: "execSql", schema: 0, dbId: 0n, sql: "CREATE TABLE w (n)", params: [] })
      const setup = yield* rawConnect(gateway.address)
      yield* setup.open("fuzz")
      yield* setup.call({ kind: "execSql", schema: 0, dbId: 0n, sql: "CREATE TABLE f (a, b); INSERT INTO f VALUES (1, 2)", params: [] })
      setup.socket.destroy()
      const cases = fc.sample(fuzzCase, { seed, numRuns: runs })
      const kinds = new Map<string, number>()
      for (const [index, fuzz] of cases.entries()) {
        const version = fuzz.version === "garbage" ? Uint8Array.from([9, 9, 9, 9, 9, 9, 9, 9]) : encodeProtocolVersion(fuzz.version)
        const open = fuzz.openFirst ? [encodeRequest({ kind: "open", database: "fuzz", flags: 0n, vfs: "" })] : []
        const bytes = Buffer.concat([version, ...open, ...fuzz.messages])
        const received = yield* runCase(gateway.address, bytes).pipe(Effect.mapError((e) => new Error(`case ${index} (seed ${seed}): ${e.message}`)))
        // Everything the gateway sent is whole, decodable responses.
        const decoder = new FrameDecoder({ messageBytesMax: 64 * 1024 * 1024 })
        decoder.push(received)
        // (SERVERS carries roles only for CLUSTER format 1, so either format may be the right one.)
        const protocol = fuzz.version === "legacy" ? "legacy" : "v1"
        const decodes = (frame: import("../../../src/net/protocol/framing.ts").Frame) => {
          let kind: string
          try {
            kind = decodeResponse(frame, { protocol, serversFormat: 1 }).kind
          } catch {
            kind = decodeResponse(frame, { protocol, serversFormat: 0 }).kind
          }
          kinds.set(kind, (kinds.get(kind) ?? 0) + 1)
        }
        for (const frame of decoder.frames()) expect(() => decodes(frame), `case ${index} (seed ${seed})`).not.toThrow()
        expect(decoder.bufferedBytes, `case ${index}: partial response`).toBe(0)
        // The witness is served correctly throughout.
        yield* witness.call({ kind: "execSql", schema: 0, dbId: 0n, sql: "INSERT INTO w VALUES (?)", params: [Values.integer(index)] })
        expect(yield* witness.call(querySql("SELECT count(*), sum(n) FROM w"))).toMatchObject({
          rows: [[Values.integer(index + 1), Values.integer((index * (index + 1)) / 2)]]
        })
      }
      // Every fuzzed connection is gone and released its database session.
      const deadline = Date.now() + 5000
      while (gateway.fixture.openSessions() > 1 && Date.now() < deadline) yield* Effect.sleep("10 millis")
      expect(gateway.fixture.openSessions()).toBe(1)
      expect((yield* gateway.server.stats).connections).toBe(1)
      expect(logs).toEqual([])
      // The cases reached the SQL surface and the cluster, not only the decoder.
      for (const kind of ["failure", "server", "db", "stmt", "result", "rows", "empty", "servers", "metadata", "files"]) {
        expect(kinds.get(kind) ?? 0, `responses of kind ${kind}`).toBeGreaterThan(0)
      }
    }).pipe(Effect.provide(Logger.replace(Logger.defaultLogger, logger)))
  })
})
