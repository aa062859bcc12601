// A dqlite-protocol server whose answers a test scripts request by request: to make the client
// meet what a gateway never does on purpose (a connection dropped after a request, no answer at
// all, no leader anywhere). 127.0.0.1, ephemeral port, closed with the scope.
import * as net from "node:net"
import type { Scope } from "effect"
import { Effect } from "effect"
import type { Request } from "../../../src/net/protocol/requests.ts"
import { decodeRequest } from "../../../src/net/protocol/requests.ts"
import type { Response } from "../../../src/net/protocol/responses.ts"
import { encodeResponse } from "../../../src/net/protocol/responses.ts"
import { FrameStream } from "../../../src/net/protocol/socketIo.ts"

/** What to do with one request: answer, close the connection, never answer, or answer late. */
export type ScriptedAnswer = Response | ReadonlyArray<Response> | "close" | "silence" | { readonly delayMs: number; readonly then: Response }

export interface ScriptedServer {
  readonly address: string
  /** Every request received, in order, across connections. */
  readonly received: Array<Request>
  readonly connections: () => number
  /** Destroys every open connection from the server side. */
  readonly closeConnections: () => void
}

export const scriptedServer = (
  answer: (request: Request, self: string) => ScriptedAnswer
): Effect.Effect<ScriptedServer, never, Scope.Scope> =>
  Effect.gen(function*() {
    const received: Array<Request> = []
    const sockets = new Set<net.Socket>()
    let connections = 0
    let address = ""
    const serve = (socket: net.Socket) =>
      Effect.gen(function*() {
        const io = new FrameStream(socket, { messageBytesMax: 1 << 20, writeTimeoutMs: 5000 })
        if ((yield* io.readWord) === null) return
        for (;;) {
          const frame = yield* io.readFrame
          if (frame === null) return
          const request = decodeRequest(frame)
          received.push(request)
          const reply = answer(request, address)
          if (reply === "close") return
          if (reply === "silence") continue
          if ("delayMs" in reply) {
            yield* Effect.sleep(reply.delayMs)
            yield* io.write(encodeResponse(reply.then))
            continue
          }
          const replies: ReadonlyArray<Response> = Array.isArray(reply) ? reply : [reply as Response]
          for (const response of replies) yield* io.write(encodeResponse(response))
        }
      }).pipe(Effect.ignore, Effect.ensuring(Effect.sync(() => socket.destroy())))
    const server = net.createServer((socket) => {
      socket.on("error", () => {})
      connections++
      sockets.add(socket)
      Effect.runFork(serve(socket))
    })
    address = yield* Effect.acquireRelease(
      Effect.async<string>((resume) => {
        server.listen(0, "127.0.0.1", () => {
          const bound = server.address() as net.AddressInfo
          resume(Effect.succeed(`127.0.0.1:${bound.port}`))
        })
      }),
      () =>
        Effect.sync(() => {
          for (const socket of sockets) socket.destroy()
          server.close()
        })
    )
    const closeConnections = () => {
      for (const socket of sockets) socket.destroy()
      sockets.clear()
    }
    return { address, received, connections: () => connections, closeConnections }
  })

/** A leader that names itself and opens any database; `sql` answers the SQL requests. */
export const scriptedLeader = (sql: (request: Request) => ScriptedAnswer) =>
  scriptedServer((request, self) => {
    switch (request.kind) {
      case "leader":
        return { kind: "server", nodeId: 1n, address: self }
      case "client":
        return { kind: "welcome", heartbeatTimeoutMs: 15000 }
      case "open":
        return { kind: "db", dbId: 0 }
      default:
        return sql(request)
    }
  })
