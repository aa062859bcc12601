// Role management on a live cluster: four SqlNodes in this process on loopback. Joiners come in
// as spares and the leader's role manager makes three of them voters (through standby); the
// fourth stays a spare (standby target 0). A voter is then stopped (its scope closed): the spare
// is promoted and the lost voter demoted within the unreachable timeout plus a few rounds, and
// writes keep working throughout. Then a voter leaving gracefully steps back to spare on its way
// out and a waiting spare takes its seat at once.
import { describe, expect, it } from "@effect/vitest"
import * as fs from "node:fs"
import * as path from "node:path"
import { Duration, Effect, Exit, Scope } from "effect"
import { make as makeClient } from "../../src/net/client/Client.ts"
import type { SqlNode } from "../../src/node/SqlNode.ts"
import type { Role } from "../../src/raft/types.ts"
import { leaderAmong, startNode as startLoopbackNode, tempDirNow } from "../loopback.ts"
import { eventually } from "../eventually.ts"

const unreachableAfterMs = 600
const roles = { targets: { voters: 3, standbys: 0 }, intervalMs: 100, unreachableAfterMs, probeTimeoutMs: 300 }

/** `crashLike`: its scope close skips the graceful step back to spare, as a crash would. */
const startNode = (dataDir: string, join: ReadonlyArray<string>, scope: Scope.Scope, crashLike = false) =>
  Scope.extend(startLoopbackNode({ dataDir, join, roles, leaveOnShutdown: !crashLike }), scope)

const leaderOf = (nodes: ReadonlyArray<SqlNode>) => leaderAmong(nodes)

const rolesOf = (node: SqlNode) =>
  Effect.map(node.node.raft.status, (status) => new Map<number, Role>(status.membership.members.map((m) => [m.id, m.role])))

describe("role manager, live", () => {
  it.live("joiners become voters through standby; a lost voter is replaced by the spare and writes go on", () =>
    Effect.gen(function*() {
      const base = tempDirNow("tqlite-roles-")
      const scopes = [yield* Scope.make(), yield* Scope.make(), yield* Scope.make(), yield* Scope.make()]
      const nodes: SqlNode[] = []
      nodes.push(yield* startNode(path.join(base, "n1"), [], scopes[0]!))
      yield* leaderOf(nodes)
      const founder = nodes[0]!.node.identity.address
      // n2 will be the crash victim; everyone else shuts down gracefully.
      for (let i = 1; i < 3; i++) nodes.push(yield* startNode(path.join(base, `n${i + 1}`), [founder], scopes[i]!, i === 1))
      yield* eventually("three voters", 10_000, Effect.gen(function*() {
        const leader = yield* leaderOf(nodes)
        const voters = [...(yield* rolesOf(leader)).values()].filter((r) => r === "voter").length
        return voters === 3 ? true : null
      }))
      nodes.push(yield* startNode(path.join(base, "n4"), [founder], scopes[3]!))
      const spareId = nodes[3]!.node.identity.nodeId
      // With every voter seat filled and no standby wanted, the newcomer stays a spare: it is never
      // made a voter, and it is a spare whenever the leader hears every voter. Under load a voter's
      // answers can lag past `unreachableAfterMs` (a follower acknowledges only after its fsync),
      // and the manager then rightly starts the spare catching up as a standby; once the voter is
      // heard again the standby is surplus and goes back to spare. Sampling one instant (as this
      // test did) caught that window now and then: "expected 'spare', received 'standby'".
      const seen = new Set<Role | undefined>()
      const watchUntil = Date.now() + 5 * roles.intervalMs
      while (Date.now() < watchUntil) {
        seen.add((yield* rolesOf(yield* leaderOf(nodes))).get(spareId))
        yield* Effect.sleep(Duration.millis(10))
      }
      expect(seen.has("voter")).toBe(false)
      if (seen.has("standby")) yield* Effect.logInfo("the spare was staged as a standby for a while: a voter looked unreachable")
      yield* eventually("the newcomer a spare", 5_000, Effect.map(rolesOf(yield* leaderOf(nodes)), (r) => (r.get(spareId) === "spare" ? true : null)))

      const client = yield* makeClient({ servers: nodes.map((n) => n.node.identity.address), database: "roles" })
      yield* client.exec("CREATE TABLE t (x INTEGER)")
      yield* client.exec("INSERT INTO t VALUES (1)")

      // Stop a voter that is not the leader, as a crash would (no step back): the leader notices
      // it has gone silent.
      const victimIndex = 1
      if ((yield* leaderOf(nodes)) === nodes[victimIndex]) yield* nodes[victimIndex]!.node.raft.transferLeadership(nodes[0]!.node.identity.nodeId)
      expect(yield* leaderOf(nodes)).not.toBe(nodes[victimIndex])
      const victimId = nodes[victimIndex]!.node.identity.nodeId
      yield* Scope.close(scopes[victimIndex]!, Exit.void)
      const stoppedAt = Date.now()
      const alive = nodes.filter((_, i) => i !== victimIndex)
      yield* eventually("the spare promoted and the lost voter demoted", 10_000, Effect.gen(function*() {
        const current = yield* rolesOf(yield* leaderOf(alive))
        return current.get(spareId) === "voter" && current.get(victimId) === "spare" ? true : null
      }))
      const replacedAfterMs = Date.now() - stoppedAt
      yield* Effect.logInfo(`voter replaced ${replacedAfterMs} ms after it stopped (unreachable after ${unreachableAfterMs} ms)`)
      expect(replacedAfterMs).toBeGreaterThanOrEqual(unreachableAfterMs)
      expect(replacedAfterMs).toBeLessThan(unreachableAfterMs + 5_000)

      yield* client.exec("INSERT INTO t VALUES (2)")
      const rows = yield* client.query("SELECT count(*) AS n FROM t")
      expect(rows.rows[0]).toEqual([2])
      // The promoted voter has every write applied.
      const committed = (yield* (yield* leaderOf(alive)).node.raft.status).commitIndex
      yield* eventually("the promoted node to apply the writes", 5_000, Effect.map(nodes[3]!.node.raft.status, (s) => s.appliedIndex >= committed ? true : null))

      // A graceful leave: with a spare ready to replace it, a voter that shuts down steps back
      // to spare on its way out, and the spare becomes a voter without any unreachable timeout.
      const extraScope = yield* Scope.make()
      const extra = yield* startNode(path.join(base, "n5"), [nodes[3]!.node.identity.address], extraScope)
      const extraId = extra.node.identity.nodeId
      yield* eventually("the fifth node as a spare", 5_000, Effect.map(rolesOf(yield* leaderOf(alive)), (r) => (r.get(extraId) === "spare" ? true : null)))
      const current = yield* leaderOf(alive)
      const leavingIndex = nodes.findIndex((n, i) => i !== victimIndex && n !== current)
      const leavingId = nodes[leavingIndex]!.node.identity.nodeId
      yield* Scope.close(scopes[leavingIndex]!, Exit.void)
      const leftAt = Date.now()
      // Already a spare as its shutdown ends: no unreachable timeout was waited for.
      const remaining = [...alive.filter((n) => n !== nodes[leavingIndex]), extra]
      expect((yield* rolesOf(yield* leaderOf(remaining))).get(leavingId)).toBe("spare")
      yield* eventually("the fifth node promoted", 5_000, Effect.map(rolesOf(yield* leaderOf(remaining)), (r) => (r.get(extraId) === "voter" ? true : null)))
      yield* Effect.logInfo(`the spare took the leaver's seat ${Date.now() - leftAt} ms after it left`)
      yield* client.exec("INSERT INTO t VALUES (3)")
      yield* Scope.close(extraScope, Exit.void)
      for (const [i, scope] of scopes.entries()) if (i !== victimIndex && i !== leavingIndex) yield* Scope.close(scope, Exit.void)
      fs.rmSync(base, { recursive: true, force: true })
    }).pipe(Effect.scoped), 60_000)
})
