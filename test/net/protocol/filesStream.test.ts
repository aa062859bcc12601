// A FILES answer read as it arrives (filesStream.ts over FrameDecoder's streamed body, and
// socketIo.ts readFilesBody over a real socket): a body far above messageBytesMax comes out in
// bounded pieces, views of the pushed chunks, with at most about one chunk buffered, and equal to
// what the whole-message decoder gives; every malformed body fails with its own WireError; over a
// socket the stream is read only as the sink consumes, and an early end or a silent server fail.
import { Deferred, Effect, Either, Exit, Fiber } from "effect"
import * as net from "node:net"
import { describe, expect, it } from "vitest"
import { ResponseType } from "../../../src/net/protocol/codes.ts"
import type { WireErrorReason } from "../../../src/net/protocol/errors.ts"
import { WireError } from "../../../src/net/protocol/errors.ts"
import type { FilesPiece } from "../../../src/net/protocol/filesStream.ts"
import { FilesBodyReader } from "../../../src/net/protocol/filesStream.ts"
import { encodeHeader, FrameDecoder } from "../../../src/net/protocol/framing.ts"
import { decodeResponse, encodeFilesPieces, encodeResponse } from "../../../src/net/protocol/responses.ts"
import { FrameStream } from "../../../src/net/protocol/socketIo.ts"
import { concat, expectWireError } from "../gateway/helpers.ts"

const kib = 1024
const mib = 1024 * kib

function u64(n: number): Uint8Array {
  const bytes = new Uint8Array(8)
  new DataView(bytes.buffer).setBigUint64(0, BigInt(n), true)
  return bytes
}

/** A text field: the UTF-8 bytes, a NUL, zeros to the next word. */
function text(value: string): Uint8Array {
  const utf8 = new TextEncoder().encode(value)
  return concat(utf8, new Uint8Array(8 - (utf8.length % 8)))
}

/** A FILES message around a hand-made body (whole words). */
function filesMessage(...body: ReadonlyArray<Uint8Array>): Uint8Array {
  const bytes = concat(...body)
  expect(bytes.length % 8).toBe(0)
  return concat(encodeHeader({ bodyWords: bytes.length / 8, type: ResponseType.files, schema: 0 }), bytes)
}

/** Bytes whose content depends on their position, so a misplaced piece shows. */
function pattern(size: number, seed: number): Uint8Array {
  const bytes = new Uint8Array(size)
  for (let i = 0; i < size; i++) bytes[i] = (i * 31 + seed + (i >> 12)) & 0xff
  return bytes
}

interface Read {
  readonly pieces: Array<FilesPiece>
  readonly files: Array<{ name: string; data: Uint8Array }>
  /** The most bytes the decoder held at once. */
  readonly bufferedBytesMax: number
}

/** Feeds `message` to a decoder in chunks of the sizes `chunkSize` gives, a chunk only when the
 * reader asks for more (as the socket loop does). */
function readStreamed(message: Uint8Array, chunkSize: (index: number) => number, options: { messageBytesMax?: number; pieceBytesMax?: number } = {}): Read {
  const decoder = new FrameDecoder({ messageBytesMax: options.messageBytesMax ?? 64 * kib })
  const pieces: Array<FilesPiece> = []
  const files: Array<{ name: string; parts: Array<Uint8Array> }> = []
  const chunks: Array<Uint8Array> = []
  const chunkBuffers = new Set<ArrayBufferLike>()
  let offset = 0
  let bufferedBytesMax = 0
  const pushNext = () => {
    expect(offset).toBeLessThan(message.length) // the reader never asks for bytes past the message
    const chunk = message.slice(offset, offset + chunkSize(chunks.length))
    offset += chunk.length
    chunks.push(chunk)
    chunkBuffers.add(chunk.buffer)
    decoder.push(chunk)
    bufferedBytesMax = Math.max(bufferedBytesMax, decoder.bufferedBytes)
  }
  while (decoder.peekHeader() === undefined) pushNext()
  decoder.startStreamedBody()
  const reader = new FilesBodyReader(decoder, options.pieceBytesMax === undefined ? {} : { pieceBytesMax: options.pieceBytesMax })
  for (;;) {
    const piece = reader.next()
    if (piece === undefined) {
      pushNext()
      continue
    }
    pieces.push(piece)
    if (piece._tag === "File") files.push({ name: piece.name, parts: [] })
    if (piece._tag === "Data") {
      // A view of one pushed chunk, not a copy.
      if (!chunkBuffers.has(piece.bytes.buffer)) throw new Error("a data piece is not a view of a pushed chunk")
      files[files.length - 1]!.parts.push(piece.bytes)
    }
    if (piece._tag === "End") break
  }
  expect(offset).toBe(message.length)
  expect(decoder.bufferedBytes).toBe(0)
  return { pieces, files: files.map((f) => ({ name: f.name, data: Buffer.concat(f.parts) })), bufferedBytesMax }
}

const readError = (message: Uint8Array, options: { nameBytesMax?: number } = {}): WireError =>
  expectWireError(() => {
    const decoder = new FrameDecoder()
    decoder.push(message)
    decoder.startStreamedBody()
    const reader = new FilesBodyReader(decoder, options)
    for (let piece = reader.next(); piece !== undefined && piece._tag !== "End"; piece = reader.next()) { /* read on */ }
  }, expectedReason)

let expectedReason: WireErrorReason = "Truncated"

describe("FILES body streamed", () => {
  it("a body far above messageBytesMax comes out in bounded pieces, holding one chunk at a time", () => {
    const files = [{ name: "app", data: pattern(3 * mib + 4096, 1) }, { name: "app-wal", data: pattern(40 * kib, 2) }]
    const message = encodeResponse({ kind: "files", files })
    // The whole-message path refuses it: its header announces more than 64 KiB.
    const whole = new FrameDecoder({ messageBytesMax: 64 * kib })
    whole.push(message)
    expectWireError(() => whole.next(), "TooLarge")
    const read = readStreamed(message, () => 64 * kib, { pieceBytesMax: 16 * kib })
    expect(read.files.map((f) => f.name)).toEqual(["app", "app-wal"])
    read.files.forEach((f, i) => expect(Buffer.compare(f.data, files[i]!.data)).toBe(0))
    expect(read.pieces[0]).toEqual({ _tag: "Files", count: 2, bodyBytes: message.length - 8 })
    expect(read.pieces.filter((p) => p._tag === "File")).toEqual([
      { _tag: "File", index: 0, name: "app", sizeBytes: 3 * mib + 4096 },
      { _tag: "File", index: 1, name: "app-wal", sizeBytes: 40 * kib }
    ])
    const data = read.pieces.filter((p): p is Extract<FilesPiece, { _tag: "Data" }> => p._tag === "Data")
    expect(Math.max(...data.map((p) => p.bytes.length))).toBe(16 * kib)
    expect(data.length).toBeGreaterThanOrEqual((3 * mib + 4096 + 40 * kib) / (16 * kib))
    // One chunk, plus at most a few words of the one before.
    expect(read.bufferedBytesMax).toBeLessThanOrEqual(64 * kib + 8)
  })

  it("any split of the stream gives what the whole-message decoder gives", () => {
    const files = [{ name: "x", data: pattern(40 * kib, 3) }, { name: "x-wal", data: new Uint8Array(0) }, { name: "naïve-name-longer-than-a-word", data: pattern(808, 4) }]
    const message = encodeResponse({ kind: "files", files })
    const decoded = decodeResponse({ type: ResponseType.files, schema: 0, body: message.subarray(8) })
    let seed = 7
    const random = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31)
    expect(decoded.kind).toBe("files")
    const expected = decoded.kind === "files" ? decoded.files.map((f) => ({ name: f.name, data: Buffer.from(f.data) })) : []
    for (const split of [() => 1, () => 3, () => 8, () => 4093, () => 1 + (random() % 70_000)]) {
      const read = readStreamed(message, split, { messageBytesMax: 16 })
      expect(read.files.map((f) => f.name)).toEqual(expected.map((f) => f.name))
      read.files.forEach((f, i) => expect(Buffer.compare(f.data, expected[i]!.data), f.name).toBe(0))
    }
    // The gateway's streamed encoding (header and names apart from the bytes) reads the same.
    const pieces = encodeFilesPieces(files.map((f) => ({ name: f.name, sizeBytes: f.data.length })))
    const streamed = concat(...pieces.flatMap((piece, i) => [piece, files[i]!.data]))
    expect(Buffer.compare(streamed, message)).toBe(0)
  })

  it("no files, and bytes after the last file, are read to the end of the body", () => {
    expect(readStreamed(encodeResponse({ kind: "files", files: [] }), () => 5).pieces).toEqual([
      { _tag: "Files", count: 0, bodyBytes: 8 },
      { _tag: "End" }
    ])
    const trailing = filesMessage(u64(1), text("db"), u64(8), pattern(8, 0), pattern(24, 1))
    const read = readStreamed(trailing, () => 7)
    expect(read.files).toEqual([{ name: "db", data: Buffer.from(pattern(8, 0)) }])
    expect(read.pieces[read.pieces.length - 1]).toEqual({ _tag: "End" })
  })

  it("each malformed body fails with its reason, naming the field", () => {
    expectedReason = "UnterminatedText"
    expect(readError(filesMessage(u64(1), new TextEncoder().encode("abcdefghabcdefghabcdefgh"))).field).toBe("files[0].name")
    expectedReason = "TooLarge"
    expect(readError(filesMessage(u64(1), text("n".repeat(100)), u64(0)), { nameBytesMax: 64 }).message).toContain("no NUL within 64 bytes")
    expectedReason = "Truncated"
    expect(readError(filesMessage(u64(1), text("db"), u64(1000), pattern(16, 0))).message).toBe("Truncated at files[0].data: a file of 1000 bytes overruns the 16 bytes left of the body")
    expect(readError(filesMessage(u64(4), text("db"), u64(0))).message).toBe("Truncated at files: 4 files cannot fit in 16 bytes")
    expect(readError(filesMessage(u64(2), text("db"), u64(24), pattern(24, 0))).message).toBe("Truncated at files[1].name: the body ends after 1 of the 2 files it announced")
    expect(readError(filesMessage(u64(1), text("database-name"))).field).toBe("files[0].size")
    expect(readError(filesMessage()).field).toBe("files.n")
    // A header of another type is not streamed as FILES by the socket loop (below); the reader
    // itself only checks the body.
  })
})

// ---------------------------------------------------------------------------------------------
// Over a socket

/** A loopback connection: `serve` gets the server's end, the test the client's. */
const socketPair = (serve: (socket: net.Socket) => void) =>
  Effect.acquireRelease(
    Effect.async<{ client: net.Socket; server: net.Server }>((resume) => {
      const server = net.createServer((socket) => {
        socket.on("error", () => {})
        serve(socket)
      })
      server.listen(0, "127.0.0.1", () => {
        const port = (server.address() as net.AddressInfo).port
        const client = net.connect(port, "127.0.0.1", () => resume(Effect.succeed({ client, server })))
      })
    }),
    ({ client, server }) => Effect.sync(() => {
      client.destroy()
      server.close()
    })
  )

/** Writes `parts` in order, each after the socket drained. */
async function writeAll(socket: net.Socket, parts: Iterable<Uint8Array>): Promise<void> {
  for (const part of parts) {
    if (socket.destroyed) return
    if (!socket.write(part)) {
      await new Promise<void>((resolve) => {
        const done = () => {
          socket.off("drain", done).off("close", done)
          resolve()
        }
        socket.on("drain", done).on("close", done)
      })
    }
  }
}

function* patternPieces(total: number, pieceBytes: number, seed: number): Generator<Uint8Array> {
  for (let offset = 0; offset < total; offset += pieceBytes) {
    const piece = new Uint8Array(Math.min(pieceBytes, total - offset))
    for (let i = 0; i < piece.length; i++) piece[i] = ((offset + i) * 7 + seed) & 0xff
    yield piece
  }
}

const run = <A, E>(effect: Effect.Effect<A, E, import("effect").Scope.Scope>) => Effect.runPromise(Effect.scoped(effect))

describe("FILES body over a socket (FrameStream.readFilesBody)", () => {
  it("is read only as the sink consumes: a blocked sink stops the reads, what is held stays bounded", async () => {
    const fileBytes = 64 * mib
    const [first] = encodeFilesPieces([{ name: "big", sizeBytes: fileBytes }])
    await run(Effect.gen(function*() {
      const { client } = yield* socketPair((socket) => void writeAll(socket, [first!, ...patternPieces(fileBytes, 256 * kib, 5)]))
      const io = new FrameStream(client, { messageBytesMax: 64 * kib, writeTimeoutMs: 5_000 })
      const release = yield* Deferred.make<void>()
      let received = 0
      let mismatches = 0
      let pieceBytesMax = 0
      let bufferedBytesMax = 0
      let pieces = 0
      const sink = (piece: FilesPiece) => Effect.gen(function*() {
        bufferedBytesMax = Math.max(bufferedBytesMax, io.decoder.bufferedBytes)
        if (piece._tag !== "Data") return
        pieces++
        pieceBytesMax = Math.max(pieceBytesMax, piece.bytes.length)
        for (let i = 0; i < piece.bytes.length; i += 4093) if (piece.bytes[i] !== (((received + i) * 7 + 5) & 0xff)) mismatches++
        received += piece.bytes.length
        if (pieces === 1) yield* Deferred.await(release) // the sink is busy with its first piece
      })
      const header = yield* io.readHeader
      expect(header).toEqual({ bodyWords: (first!.length - 8 + fileBytes) / 8, type: ResponseType.files, schema: 0 })
      const reading = yield* Effect.fork(io.readFilesBody(sink, { idleTimeoutMs: 10_000 }))
      while (pieces === 0) yield* Effect.sleep("5 millis")
      yield* Effect.sleep("150 millis")
      const readWhileBlocked = client.bytesRead
      yield* Effect.sleep("250 millis")
      // Nothing more was taken from the kernel while the sink ran: TCP holds the rest.
      expect(client.bytesRead).toBe(readWhileBlocked)
      expect(readWhileBlocked).toBeLessThan(2 * mib)
      yield* Deferred.succeed(release, undefined)
      yield* Fiber.join(reading)
      expect(received).toBe(fileBytes)
      expect(mismatches).toBe(0)
      expect(pieceBytesMax).toBeLessThanOrEqual(1 * mib)
      expect(bufferedBytesMax).toBeLessThanOrEqual(2 * mib)
    }))
  }, 60_000)

  it("a stream that ends inside a file fails Truncated, naming where", async () => {
    const [first] = encodeFilesPieces([{ name: "db", sizeBytes: 64 * kib }])
    const outcome = await run(Effect.gen(function*() {
      const { client } = yield* socketPair((socket) => void writeAll(socket, [first!, pattern(1000, 0)]).then(() => socket.end()))
      const io = new FrameStream(client, { messageBytesMax: 1024, writeTimeoutMs: 5_000 })
      yield* io.readHeader
      return yield* Effect.either(io.readFilesBody(() => Effect.void, { idleTimeoutMs: 10_000 }))
    }))
    expect(Either.isLeft(outcome) && outcome.left._tag).toBe("FramingError")
    const error = (outcome as Either.Left<{ readonly _tag: "FramingError"; readonly error: WireError }, void>).left.error
    expect(error.reason).toBe("Truncated")
    expect(error.message).toContain(`the stream ended after ${first!.length - 8 + 1000} of the ${first!.length - 8 + 64 * kib}-byte FILES body inside file 0 (${64 * kib - 1000} of its bytes missing)`)
  })

  it("a server that stops sending mid-body is given up after the idle timeout", async () => {
    const [first] = encodeFilesPieces([{ name: "db", sizeBytes: 64 * kib }])
    const exit = await run(Effect.gen(function*() {
      const { client } = yield* socketPair((socket) => void writeAll(socket, [first!, pattern(1000, 0)]))
      const io = new FrameStream(client, { messageBytesMax: 1024, writeTimeoutMs: 5_000 })
      yield* io.readHeader
      const started = Date.now()
      const exit = yield* Effect.exit(io.readFilesBody(() => Effect.void, { idleTimeoutMs: 200 }))
      return { exit, elapsedMs: Date.now() - started }
    }))
    expect(Exit.isFailure(exit.exit) && exit.exit.cause._tag === "Fail" && exit.exit.cause.error).toMatchObject({ _tag: "SocketError", reason: "Timeout" })
    expect(exit.elapsedMs).toBeGreaterThanOrEqual(190)
    expect(exit.elapsedMs).toBeLessThan(5_000)
  })

  it("a sink's failure stops the read with that failure", async () => {
    const [first] = encodeFilesPieces([{ name: "db", sizeBytes: 8 * kib }])
    const outcome = await run(Effect.gen(function*() {
      const { client } = yield* socketPair((socket) => void writeAll(socket, [first!, pattern(8 * kib, 0)]))
      const io = new FrameStream(client, { messageBytesMax: 1024, writeTimeoutMs: 5_000 })
      yield* io.readHeader
      return yield* Effect.either(io.readFilesBody((piece) => piece._tag === "Data" ? Effect.fail("disk full" as const) : Effect.void, { idleTimeoutMs: 10_000 }))
    }))
    expect(outcome).toEqual(Either.left("disk full"))
  })
})
