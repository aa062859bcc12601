// `recover` on a cluster that lost its majority for good: three SqlNodes on loopback hold data,
// all stop, two lose their data directories, and the survivor's membership is rewritten to itself
// alone. It then leads, has every committed write, accepts new ones, and a new node can join it.
// Refusals: a data directory in use, malformed --members, a membership without this node.
import { describe, expect, it } from "@effect/vitest"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Duration, Effect, Exit, Scope } from "effect"
import { make as makeClient } from "../../src/net/client/Client.ts"
import { parseMembers, recoverMembership } from "../../src/node/recover.ts"
import type { SqlNode } from "../../src/node/SqlNode.ts"
import * as SqlNodeModule from "../../src/node/SqlNode.ts"
import type { Membership } from "../../src/raft/types.ts"
import { Disk } from "../../src/storage/Disk.ts"
import { freePort } from "../freePort.ts"
import { eventually } from "../eventually.ts"

const roles = { targets: { voters: 3, standbys: 1 }, intervalMs: 100, unreachableAfterMs: 1_000, probeTimeoutMs: 300 }

const startNode = (dataDir: string, address: string, join: ReadonlyArray<string>, scope: Scope.Scope) =>
  SqlNodeModule.start({ dataDir, address, join, tickMs: 20, roles }).pipe(Scope.extend(scope), Effect.provide(Disk.layerNode))


const leaderOf = (nodes: ReadonlyArray<SqlNode>) =>
  eventually("a leader", 10_000, Effect.gen(function*() {
    for (const n of nodes) if ((yield* n.node.raft.status).role === "leader") return n
    return null
  }))

const recover = (dir: string, membership: Membership) => recoverMembership(dir, membership).pipe(Effect.provide(Disk.layerNode))

describe("recover", () => {
  it("parses --members and rejects malformed ones", () => {
    expect(parseMembers("0x2a@127.0.0.1:9001,7@10.0.0.2:9002")).toEqual({
      members: [{ id: 7, address: "10.0.0.2:9002", role: "voter" }, { id: 42, address: "127.0.0.1:9001", role: "voter" }]
    })
    for (const bad of ["", "1", "@127.0.0.1:1", "x@127.0.0.1:1", "1@127.0.0.1", "1@127.0.0.1:70000", "1@a:1,1@b:2", "1@a:1,2@a:1", "-3@a:1"]) {
      expect(parseMembers(bad)).toMatchObject({ _tag: "InvalidMembers" })
    }
  })

  it.live("a lone survivor becomes a one-voter cluster with all committed data, takes writes, and takes a new member", () =>
    Effect.gen(function*() {
      const base = fs.mkdtempSync(path.join(os.tmpdir(), "tqlite-recover-"))
      const dirs = [0, 1, 2].map((i) => path.join(base, `n${i + 1}`))
      const addresses = [`127.0.0.1:${yield* freePort}`, `127.0.0.1:${yield* freePort}`, `127.0.0.1:${yield* freePort}`]
      const scopes = [yield* Scope.make(), yield* Scope.make(), yield* Scope.make()]
      const nodes: SqlNode[] = [yield* startNode(dirs[0]!, addresses[0]!, [], scopes[0]!)]
      yield* leaderOf(nodes)
      for (const i of [1, 2]) nodes.push(yield* startNode(dirs[i]!, addresses[i]!, [addresses[0]!], scopes[i]!))
      yield* eventually("three voters", 15_000, Effect.map((yield* leaderOf(nodes)).node.raft.status, (s) =>
        s.membership.members.filter((m) => m.role === "voter").length === 3 ? true : null))
      const rows = 50
      yield* Effect.scoped(Effect.gen(function*() {
        const client = yield* makeClient({ servers: addresses, database: "app" })
        yield* client.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        for (let i = 0; i < rows; i++) yield* client.exec("INSERT INTO t (v) VALUES (?)", [`row ${i}`])
      }))
      // The survivor: a follower that has applied every committed write.
      const leader = yield* leaderOf(nodes)
      const committed = (yield* leader.node.raft.status).commitIndex
      const survivorIndex = nodes.findIndex((n) => n !== leader)
      const survivor = nodes[survivorIndex]!
      yield* eventually("the survivor to apply everything", 5_000, Effect.map(survivor.node.raft.status, (s) => (s.appliedIndex >= committed ? true : null)))
      const self = { members: [{ id: survivor.node.identity.nodeId, address: addresses[survivorIndex]!, role: "voter" as const }] }

      // Refused while the node runs: its data directory is locked.
      const inUse = yield* Effect.flip(recover(dirs[survivorIndex]!, self))
      expect(inUse._tag).toBe("DataDirInUse")

      for (const scope of scopes) yield* Scope.close(scope, Exit.void)
      for (const [i, dir] of dirs.entries()) if (i !== survivorIndex) fs.rmSync(dir, { recursive: true, force: true })

      // Refused: a membership that leaves this node out, or names it at another address.
      const without = yield* Effect.flip(recover(dirs[survivorIndex]!, { members: [{ id: 99, address: "127.0.0.1:1", role: "voter" }] }))
      expect(without._tag).toBe("InvalidMembers")
      const moved = yield* Effect.flip(recover(dirs[survivorIndex]!, { members: [{ ...self.members[0]!, address: "127.0.0.1:1" }] }))
      expect(moved._tag).toBe("InvalidMembers")

      const result = yield* recover(dirs[survivorIndex]!, self)
      expect(result.previous.members.filter((m) => m.role === "voter")).toHaveLength(3)
      expect(result.membership).toEqual(self)

      const again = yield* Scope.make()
      const revived = yield* startNode(dirs[survivorIndex]!, addresses[survivorIndex]!, [], again)
      yield* leaderOf([revived])
      const status = yield* revived.node.raft.status
      expect(status.membership).toEqual(self)
      yield* Effect.scoped(Effect.gen(function*() {
        const client = yield* makeClient({ servers: [addresses[survivorIndex]!], database: "app" })
        // Every committed row is there: count and the last one written.
        expect((yield* client.query("SELECT count(*), max(id) FROM t")).rows[0]).toEqual([rows, rows])
        expect((yield* client.query("SELECT v FROM t WHERE id = ?", [rows])).rows[0]).toEqual([`row ${rows - 1}`])
        yield* client.exec("INSERT INTO t (v) VALUES ('after recovery')")
        expect((yield* client.query("SELECT count(*) FROM t")).rows[0]).toEqual([rows + 1])
      }))

      // A new node joins the recovered cluster (as a spare; with two members it becomes a standby).
      const newcomerScope = yield* Scope.make()
      const newcomerAddress = `127.0.0.1:${yield* freePort}`
      const newcomer = yield* startNode(path.join(base, "n4"), newcomerAddress, [addresses[survivorIndex]!], newcomerScope)
      yield* eventually("the newcomer to become a standby", 10_000, Effect.map(revived.node.raft.status, (s) =>
        s.membership.members.find((m) => m.id === newcomer.node.identity.nodeId)?.role === "standby" ? true : null))
      const committedNow = (yield* revived.node.raft.status).commitIndex
      yield* eventually("the newcomer to catch up", 10_000, Effect.map(newcomer.node.raft.status, (s) => (s.appliedIndex >= committedNow ? true : null)))
      yield* Scope.close(newcomerScope, Exit.void)
      yield* Scope.close(again, Exit.void)
      fs.rmSync(base, { recursive: true, force: true })
    }), 90_000)
})
