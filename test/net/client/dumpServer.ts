// A dqlite-protocol server for DUMP tests: LEADER names itself, OPEN succeeds, DUMP gets the bytes a test
// scripts (a FILES answer as the gateway streams it, or a broken one), then the connection closes
// or stays silent. 127.0.0.1, ephemeral port, closed with the scope.
import { Effect } from "effect"
import * as net from "node:net"
import { encodeFilesPieces, encodeResponse } from "../../../src/net/protocol/responses.ts"
import { FrameStream } from "../../../src/net/protocol/socketIo.ts"
import { decodeRequest } from "../../../src/net/protocol/requests.ts"

const kib = 1024

/** How the server answers DUMP: bytes to write (each after the one before drained, with an
 * optional pause between), then close or stay open. */
export interface DumpAnswer {
  readonly parts: ReadonlyArray<Uint8Array>
  readonly pauseMs?: number
  readonly then: "close" | "stay"
}

/** A server answering LEADER with itself and DUMP as `answer` says. `closed` counts connections
 * that ended after a DUMP (the client closed them). */
export const dumpServer = (answer: () => DumpAnswer) =>
  Effect.acquireRelease(
    Effect.async<{ address: string; server: net.Server; dumpsClosed: () => number }>((resume) => {
      let dumpsClosed = 0
      const server = net.createServer((socket) => {
        socket.on("error", () => {})
        const io = new FrameStream(socket, { messageBytesMax: 1 << 20, writeTimeoutMs: 10_000 })
        let dumped = false
        socket.on("close", () => void (dumped && dumpsClosed++))
        Effect.runFork(Effect.gen(function*() {
          if ((yield* io.readWord) === null) return
          for (;;) {
            const frame = yield* io.readFrame
            if (frame === null) return
            const request = decodeRequest(frame)
            if (request.kind === "leader") {
              yield* io.write(encodeResponse({ kind: "server", nodeId: 1n, address }))
              continue
            }
            if (request.kind === "open") {
              yield* io.write(encodeResponse({ kind: "db", dbId: 0 }))
              continue
            }
            dumped = true
            const plan = answer()
            for (const part of plan.parts) {
              yield* io.write(part)
              if (plan.pauseMs !== undefined) yield* Effect.sleep(plan.pauseMs)
            }
            if (plan.then === "close") return socket.end()
          }
        }).pipe(Effect.ignore))
      })
      let address = ""
      server.listen(0, "127.0.0.1", () => {
        address = `127.0.0.1:${(server.address() as net.AddressInfo).port}`
        resume(Effect.succeed({ address, server, dumpsClosed: () => dumpsClosed }))
      })
    }),
    ({ server }) => Effect.sync(() => void server.close())
  )

/** A FILES answer for `files`, as the gateway streams it: names and sizes, then each file. */
export function filesAnswer(files: ReadonlyArray<{ name: string; data: Uint8Array }>): Array<Uint8Array> {
  const pieces = encodeFilesPieces(files.map((f) => ({ name: f.name, sizeBytes: f.data.length })))
  return pieces.flatMap((piece, i) => {
    const data = files[i]!.data
    const parts = [piece]
    for (let offset = 0; offset < data.length; offset += 256 * kib) parts.push(data.subarray(offset, offset + 256 * kib))
    return parts
  })
}

