// A leader that loses its leadership closes the client connections opened on it — at once when
// idle, right after the answer in hand otherwise — so clients look for the new leader instead of
// asking a node that no longer leads. Connections opened on a follower stay. Three SqlNodes in
// this process on loopback; the leadership moves by a transfer (the process test
// test/process/pause.test.ts does it with SIGSTOP).
import { describe, expect, it } from "@effect/vitest"
import * as net from "node:net"
import { Duration, Effect, Exit, Scope } from "effect"
import { encodeProtocolVersion } from "../../src/net/protocol/framing.ts"
import { make as makeClient } from "../../src/net/client/Client.ts"
import type { SqlNode } from "../../src/node/SqlNode.ts"
import { leaderAmong, startCluster, tempDir } from "../loopback.ts"
import { eventually } from "../eventually.ts"


/** A raw client connection that has sent the protocol word (its session is being served). */
const rawConnection = (address: string) =>
  Effect.acquireRelease(
    Effect.async<{ readonly socket: net.Socket; readonly closedAt: () => number | null }>((resume) => {
      const [host, port] = [address.slice(0, address.lastIndexOf(":")), Number(address.slice(address.lastIndexOf(":") + 1))]
      let closedAt: number | null = null
      const socket = net.connect({ host, port }, () => {
        socket.write(encodeProtocolVersion("v1"))
        resume(Effect.succeed({ socket, closedAt: () => closedAt }))
      })
      socket.on("error", () => {})
      socket.on("close", () => void (closedAt = Date.now()))
    }),
    ({ socket }) => Effect.sync(() => socket.destroy())
  )

describe("a deposed leader", () => {
  it.live("closes the client connections opened on it; those on followers stay open", () =>
    Effect.gen(function*() {
      const scopes = [yield* Scope.make(), yield* Scope.make(), yield* Scope.make()]
      const { nodes } = yield* startCluster(3, {
        dir: yield* tempDir("tqlite-deposed-"),
        node: () => ({ leaveOnShutdown: false, roles: { intervalMs: 100 } }),
        scopeOf: (i) => scopes[i]!,
        voters: 3
      })
      const servers = nodes.map((n) => n.node.identity.address)
      const leader = yield* leaderAmong(nodes)
      const follower = nodes.find((n) => n !== leader)!

      const client = yield* makeClient({ servers, database: "deposed", livenessProbeAfterMs: 0 })
      yield* client.exec("CREATE TABLE t (x)")
      const onLeader = yield* rawConnection(leader.node.identity.address)
      const onFollower = yield* rawConnection(follower.node.identity.address)
      yield* Effect.sleep(Duration.millis(100)) // both sessions served
      expect(onLeader.closedAt()).toBeNull()

      const movedAt = Date.now()
      yield* leader.node.raft.transferLeadership(follower.node.identity.nodeId)
      yield* eventually("the old leader to step down", 5_000, Effect.map(leader.node.raft.status, (s) => (s.role !== "leader" ? true : null)))
      const steppedDownAt = Date.now()
      const closedAt = yield* eventually("the connection on the old leader to close", 2_000, Effect.sync(() => onLeader.closedAt()))
      yield* Effect.logInfo(`closed ${closedAt - steppedDownAt} ms after the step-down was seen (${closedAt - movedAt} ms after the transfer was asked)`)
      // The watch reads the role every tick (20 ms here): well under a second even under load.
      expect(closedAt - steppedDownAt).toBeLessThan(1_000)
      // A connection opened on a follower is not a leader's: it stays.
      yield* Effect.sleep(Duration.millis(200))
      expect(onFollower.closedAt()).toBeNull()
      // The client's pooled connection to the old leader was closed too: its next write goes to
      // the new leader without a "not leader" round trip or an unknown outcome.
      expect(yield* client.exec("INSERT INTO t VALUES (1)")).toMatchObject({ rowsAffected: 1n })
      expect((yield* leaderAmong(nodes)).node.identity.nodeId).toBe(follower.node.identity.nodeId)

      yield* client.exec("SELECT 1").pipe(Effect.ignore)
      for (const scope of scopes) yield* Scope.close(scope, Exit.void)
    }).pipe(Effect.scoped), 60_000)
})
