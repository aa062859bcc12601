// Client.dumpTo streams a DUMP's FILES answer to a sink, whatever its size against
// messageBytesMax; Client.dump still returns whole files, bounded by messageBytesMax. A FAILURE
// answer fails before the sink sees anything; a malformed body, a stream that ends mid-file, a
// server gone silent mid-body (idle timeout), a dump past its deadline and a failing sink each
// give their typed error and close the connection (the rest of the body cannot be skipped).
import { Effect, Either } from "effect"
import { describe, expect, it } from "vitest"
import type { ClientOptions } from "../../../src/net/client/Client.ts"
import { make } from "../../../src/net/client/Client.ts"
import { ErrorCode, ResponseType } from "../../../src/net/protocol/codes.ts"
import type { FilesPiece } from "../../../src/net/protocol/filesStream.ts"
import { encodeHeader } from "../../../src/net/protocol/framing.ts"
import { encodeResponse } from "../../../src/net/protocol/responses.ts"
import type { DumpAnswer } from "./dumpServer.ts"
import { dumpServer, filesAnswer } from "./dumpServer.ts"

const kib = 1024
const mib = 1024 * kib

function pattern(size: number, seed: number): Uint8Array {
  const bytes = new Uint8Array(size)
  for (let i = 0; i < size; i++) bytes[i] = (i * 13 + seed) & 0xff
  return bytes
}

/** A sink that keeps every file (for checking) and counts the pieces. */
function collecting() {
  const files: Array<{ name: string; parts: Array<Uint8Array> }> = []
  let pieces = 0
  let pieceBytesMax = 0
  const sink = (piece: FilesPiece) =>
    Effect.sync(() => {
      pieces++
      if (piece._tag === "File") files.push({ name: piece.name, parts: [] })
      if (piece._tag === "Data") {
        pieceBytesMax = Math.max(pieceBytesMax, piece.bytes.length)
        files[files.length - 1]!.parts.push(piece.bytes)
      }
    })
  return { sink, files: () => files.map((f) => ({ name: f.name, data: Buffer.concat(f.parts) })), pieces: () => pieces, pieceBytesMax: () => pieceBytesMax }
}

const clientOptions = (address: string, options: Partial<ClientOptions> = {}): ClientOptions => ({
  servers: [address], database: "db", retriesMax: 0, requestTimeoutMs: 10_000, ...options
})

const run = <A, E>(effect: Effect.Effect<A, E, import("effect").Scope.Scope>) => Effect.runPromise(Effect.scoped(effect))

describe("Client.dumpTo and Client.dump", () => {
  it("dumpTo streams an answer 80× messageBytesMax; dump refuses it whole, and returns it under a larger bound", async () => {
    const files = [{ name: "db", data: pattern(5 * mib, 1) }, { name: "db-wal", data: new Uint8Array(0) }]
    await run(Effect.gen(function*() {
      const server = yield* dumpServer(() => ({ parts: filesAnswer(files), then: "stay" }))
      const small = yield* make(clientOptions(server.address, { messageBytesMax: 64 * kib }))
      const collected = collecting()
      yield* small.dumpTo(server.address, "db", collected.sink)
      expect(collected.files().map((f) => f.name)).toEqual(["db", "db-wal"])
      expect(Buffer.compare(collected.files()[0]!.data, files[0]!.data)).toBe(0)
      expect(collected.files()[1]!.data.length).toBe(0)
      expect(collected.pieceBytesMax()).toBeLessThanOrEqual(mib)
      const refused = yield* Effect.either(small.dump(server.address))
      expect(Either.isLeft(refused) && refused.left._tag).toBe("ProtocolError")
      expect(Either.isLeft(refused) && "detail" in refused.left && refused.left.detail).toMatch(/exceeds messageBytesMax 65536 \(dumpTo streams any size\)/)
      const large = yield* make(clientOptions(server.address, { messageBytesMax: 16 * mib }))
      const whole = yield* large.dump(server.address)
      expect(whole.map((f) => f.name)).toEqual(["db", "db-wal"])
      expect(Buffer.compare(whole[0]!.data, files[0]!.data)).toBe(0)
    }))
  })

  it("a FAILURE answer fails before the sink sees anything", async () => {
    await run(Effect.gen(function*() {
      const server = yield* dumpServer(() => ({ parts: [encodeResponse({ kind: "failure", code: ErrorCode.notLeader, message: "not leader" })], then: "stay" }))
      const client = yield* make(clientOptions(server.address))
      const collected = collecting()
      const outcome = yield* Effect.either(client.dumpTo(server.address, "db", collected.sink))
      expect(Either.isLeft(outcome) && outcome.left._tag === "ServerFailure" && outcome.left.isNotLeader).toBe(true)
      expect(collected.pieces()).toBe(0)
    }))
  })

  const failureOf = (answer: DumpAnswer, options: { readonly timeoutMs?: number; readonly idleTimeoutMs?: number; readonly sinkFails?: boolean } = {}) =>
    run(Effect.gen(function*() {
      const server = yield* dumpServer(() => answer)
      const client = yield* make(clientOptions(server.address))
      const collected = collecting()
      const sink = options.sinkFails === true
        ? (piece: FilesPiece) => piece._tag === "Data" ? Effect.fail({ _tag: "DiskFull" as const }) : collected.sink(piece)
        : collected.sink
      const started = Date.now()
      const outcome = yield* Effect.either(client.dumpTo(server.address, "db", sink, options))
      const elapsedMs = Date.now() - started
      // The client closed the connection: the server sees it end.
      for (let i = 0; i < 200 && server.dumpsClosed() === 0; i++) yield* Effect.sleep("10 millis")
      return { error: Either.isLeft(outcome) ? outcome.left : null, closed: server.dumpsClosed(), elapsedMs, pieces: collected.pieces() }
    }))

  it("a body whose file overruns it: ProtocolError, connection closed", async () => {
    const body = [new Uint8Array(8), new Uint8Array(8), new Uint8Array(8)]
    new DataView(body[0]!.buffer).setBigUint64(0, 1n, true)
    body[1]!.set([0x64, 0x62]) // "db" NUL
    new DataView(body[2]!.buffer).setBigUint64(0, 4096n, true)
    const header = encodeHeader({ bodyWords: 3 + 2, type: ResponseType.files, schema: 0 })
    const failure = await failureOf({ parts: [header, ...body, new Uint8Array(16)], then: "stay" })
    expect(failure.error).toMatchObject({ _tag: "ProtocolError" })
    expect((failure.error as { detail: string }).detail).toBe("dump: Truncated at files[0].data: a file of 4096 bytes overruns the 16 bytes left of the body")
    expect(failure.closed).toBe(1)
  })

  it("a stream that ends inside a file: ProtocolError naming where", async () => {
    const answer = filesAnswer([{ name: "db", data: pattern(256 * kib, 2) }])
    const failure = await failureOf({ parts: answer.slice(0, 1).concat([answer[1]!.subarray(0, 1000)]), then: "close" })
    expect(failure.error).toMatchObject({ _tag: "ProtocolError" })
    expect((failure.error as { detail: string }).detail).toMatch(/^dump: Truncated at files: the stream ended after \d+ of the \d+-byte FILES body inside file 0 \(261144 of its bytes missing\)$/)
  })

  it("a server silent mid-body: RequestTimeout after the idle timeout, connection closed", async () => {
    const answer = filesAnswer([{ name: "db", data: pattern(256 * kib, 2) }])
    const failure = await failureOf({ parts: answer.slice(0, 1).concat([answer[1]!.subarray(0, 1000)]), then: "stay" }, { idleTimeoutMs: 300 })
    expect(failure.error).toMatchObject({ _tag: "RequestTimeout", timeoutMs: 300 })
    expect((failure.error as { request: string }).request).toMatch(/^dump \(idle: no bytes for 300 ms after \d+ of the/)
    expect(failure.closed).toBe(1)
    expect(failure.elapsedMs).toBeLessThan(5_000)
  })

  it("a dump that keeps trickling past its deadline: RequestTimeout with the dump's timeout", async () => {
    const answer = filesAnswer([{ name: "db", data: pattern(64 * kib, 2) }])
    const trickle = [answer[0]!, ...Array.from({ length: 8 * kib }, (_, i) => answer[1]!.subarray(i * 8, i * 8 + 8))]
    const failure = await failureOf({ parts: trickle, pauseMs: 20, then: "stay" }, { timeoutMs: 500, idleTimeoutMs: 5_000 })
    expect(failure.error).toMatchObject({ _tag: "RequestTimeout", timeoutMs: 500, request: "dump" })
    expect(failure.pieces).toBeGreaterThan(3) // it was making progress
    expect(failure.elapsedMs).toBeLessThan(4_000)
    expect(failure.closed).toBe(1)
  })

  it("a failing sink: its own error, connection closed", async () => {
    const failure = await failureOf({ parts: filesAnswer([{ name: "db", data: pattern(mib, 2) }]), then: "stay" }, { sinkFails: true })
    expect(failure.error).toEqual({ _tag: "DiskFull" })
    expect(failure.closed).toBe(1)
  })
})
