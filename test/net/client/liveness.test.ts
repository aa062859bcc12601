// The client notices a silent server well before its request timeout: a request unanswered for
// `livenessProbeAfterMs` makes it ask the server LEADER on a second connection; no answer to
// that either within `livenessTimeoutMs` and the request fails with ServerUnresponsive (an
// unknown outcome: a write is not retried, a read is, on whichever server leads). A slow but
// living server is left to answer. The "paused" server below stops answering anything, on old
// and new connections alike, as a SIGSTOPped process does (the kernel still accepts).
import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit } from "effect"
import type { ClientOptions } from "../../../src/net/client/Client.ts"
import { make } from "../../../src/net/client/Client.ts"
import type { Request } from "../../../src/net/protocol/requests.ts"
import { Values } from "../../../src/net/protocol/values.ts"
import type { ScriptedAnswer } from "./scriptedServer.ts"
import { scriptedServer } from "./scriptedServer.ts"

const failureTag = <A, E extends { readonly _tag: string }>(exit: Exit.Exit<A, E>) =>
  Exit.isFailure(exit) && exit.cause._tag === "Fail" ? exit.cause.error._tag : Exit.isSuccess(exit) ? "success" : "defect"

/** A leader answering every request at once until `pause()`; then nothing, to anyone. */
const pausableLeader = (id: bigint) =>
  Effect.gen(function*() {
    let paused = false
    const answer = (request: Request, self: string): ScriptedAnswer => {
      if (paused) return "silence"
      switch (request.kind) {
        case "leader":
          return { kind: "server", nodeId: id, address: self }
        case "open":
          return { kind: "db", dbId: 0 }
        case "querySql":
          return { kind: "rows", columns: ["n"], rows: [[Values.integer(id)]], end: "done" }
        default:
          return { kind: "result", lastInsertId: id, rowsAffected: 1n }
      }
    }
    const server = yield* scriptedServer(answer)
    return { ...server, pause: () => void (paused = true) }
  })

const options: Partial<ClientOptions> = {
  requestTimeoutMs: 20_000,
  livenessProbeAfterMs: 200,
  livenessTimeoutMs: 300,
  retryBaseMs: 5,
  retryCapMs: 20
}

describe("client: a silent server", () => {
  it.scopedLive("a write to a paused leader fails ServerUnresponsive within the probe bounds, not retried; a read moves to the next leader", () =>
    Effect.gen(function*() {
      const paused = yield* pausableLeader(1n)
      const next = yield* pausableLeader(2n)
      const db = yield* make({ servers: [paused.address, next.address], database: "test", ...options })
      expect(yield* db.exec("INSERT INTO t VALUES (1)")).toEqual({ lastInsertId: 1n, rowsAffected: 1n })
      paused.pause()

      const writeStarted = Date.now()
      const write = yield* Effect.exit(db.exec("INSERT INTO t VALUES (2)"))
      const writeMs = Date.now() - writeStarted
      expect(failureTag(write)).toBe("ServerUnresponsive")
      // Probe after 200 ms of silence, 300 ms for the probe: far below the 20 s request timeout.
      expect(writeMs).toBeGreaterThanOrEqual(200)
      expect(writeMs).toBeLessThan(3_000)
      // Its outcome is unknown: sent once, never again, and not to the other server either.
      expect(paused.received.filter((r) => r.kind === "execSql")).toHaveLength(2)
      expect(next.received.filter((r) => r.kind === "execSql")).toHaveLength(0)

      // A read is safe to send again: discovery skips the paused server (its LEADER times out
      // after livenessTimeoutMs) and the read is answered by the next leader.
      const readStarted = Date.now()
      expect((yield* db.query("SELECT n FROM t")).rows).toEqual([[2]])
      expect(Date.now() - readStarted).toBeLessThan(3_000)
      expect(next.received.filter((r) => r.kind === "querySql")).toHaveLength(1)
    }))

  it.scopedLive("a slow server that still answers the probe is waited for: its late answer is the result", () =>
    Effect.gen(function*() {
      const server = yield* scriptedServer((request, self): ScriptedAnswer => {
        switch (request.kind) {
          case "leader":
            return { kind: "server", nodeId: 1n, address: self }
          case "open":
            return { kind: "db", dbId: 0 }
          default:
            // Several probe rounds long.
            return { delayMs: 1_200, then: { kind: "result", lastInsertId: 7n, rowsAffected: 1n } }
        }
      })
      const db = yield* make({ servers: [server.address], database: "test", ...options })
      expect(yield* db.exec("INSERT INTO t VALUES (1)")).toEqual({ lastInsertId: 7n, rowsAffected: 1n })
      // It was probed (LEADER on further connections) while the write waited.
      expect(server.received.filter((r) => r.kind === "leader").length).toBeGreaterThanOrEqual(2)
      expect(server.received.filter((r) => r.kind === "execSql")).toHaveLength(1)
    }))

  it.scopedLive("livenessProbeAfterMs 0 turns probing off: the request timeout alone ends the wait", () =>
    Effect.gen(function*() {
      const paused = yield* pausableLeader(1n)
      const db = yield* make({ servers: [paused.address], database: "test", ...options, livenessProbeAfterMs: 0, requestTimeoutMs: 600, retriesMax: 0 })
      yield* db.exec("INSERT INTO t VALUES (1)")
      paused.pause()
      const write = yield* Effect.exit(db.exec("INSERT INTO t VALUES (2)"))
      expect(failureTag(write)).toBe("RequestTimeout")
      expect(paused.received.filter((r) => r.kind === "leader")).toHaveLength(1)
    }))
})
