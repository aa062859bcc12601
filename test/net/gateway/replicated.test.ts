// The gateway over the replicated SQL surface (src/sqlite/ReplicatedDatabases.ts), in real time:
// three nodes in this process, each with its TCP transport (peers and dqlite clients on one
// address), Raft actor (in-memory log), SQLite state machine and gateway. The real `dqlite` shell
// and the TypeScript client write through the leader; the leader is stopped and the next
// statements succeed against the new one. (The process-level version of this, with `tqlite start`
// and kill -9, belongs to the node wiring.)
import { noSnapshotIo } from "../../../src/actors/snapshotData.ts"
import { execFile } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { describe, expect, it } from "@effect/vitest"
import type { Scope } from "effect"
import { Effect, Exit, Scope as ScopeOps } from "effect"
import type { RaftNode } from "../../../src/actors/RaftActor.ts"
import * as RaftActor from "../../../src/actors/RaftActor.ts"
import { make as makeClient } from "../../../src/net/client/Client.ts"
import { makeClientHandlerSlot } from "../../../src/net/gateway/Gateway.ts"
import { makeRaftClusterControl } from "../../../src/node/raftClusterControl.ts"
import { makeTcp } from "../../../src/net/peers/PeerTransport.ts"
import { defaultRaftConfig } from "../../../src/raft/config.ts"
import { bootstrap } from "../../../src/raft/core.ts"
import type { Membership, NodeId } from "../../../src/raft/types.ts"
import * as Replicated from "../../../src/sqlite/ReplicatedDatabases.ts"
import type { SqliteApplyResult } from "../../../src/sqlite/SqliteMachine.ts"
import { SqliteMachine } from "../../../src/sqlite/SqliteMachine.ts"
import { makeMemoryLogStore } from "../../../src/storage/LogStore.ts"
import { findDqliteShell } from "./harness.ts"

const tickMs = 10
const dqliteBinary = findDqliteShell()

interface LiveNode {
  readonly id: NodeId
  readonly address: string
  readonly raft: RaftNode<SqliteApplyResult, SqliteMachine>
  /** Stops the node: transport, Raft, databases. */
  readonly stop: Effect.Effect<void>
}

const startNodes = (directory: string): Effect.Effect<ReadonlyArray<LiveNode>, never, Scope.Scope> =>
  Effect.gen(function*() {
    const ids: ReadonlyArray<NodeId> = [1, 2, 3]
    const started = []
    for (const id of ids) {
      const scope = yield* ScopeOps.make()
      yield* Effect.addFinalizer(() => ScopeOps.close(scope, Exit.void))
      const slot = makeClientHandlerSlot()
      const transport = yield* makeTcp({ nodeId: id, clusterId: "replicated-gateway", listen: "127.0.0.1:0", onClientConnection: slot.handler }).pipe(
        ScopeOps.extend(scope),
        Effect.orDie
      )
      started.push({ id, scope, slot, transport })
    }
    const config: Membership = { members: started.map((n) => ({ id: n.id, address: n.transport.address, role: "voter" as const })) }
    const nodes: Array<LiveNode> = []
    for (const { id, scope, slot, transport } of started) {
      yield* transport.setPeers(new Map(started.filter((o) => o.id !== id).map((o) => [o.id, o.transport.address])))
      const log = makeMemoryLogStore()
      const boot = bootstrap(config)
      yield* Effect.orDie(log.persist([{ hardState: boot.hardState, entries: boot.entries }]))
      const dataDir = path.join(directory, `n${id}`)
      fs.mkdirSync(dataDir, { recursive: true })
      const machine = yield* SqliteMachine.open({ dataDir, nodeId: id, pageSize: 4096, fsync: "off", bootSnapshot: null })
      yield* ScopeOps.addFinalizer(scope, Effect.sync(() => machine.close()))
      const raft = yield* RaftActor.make<SqliteApplyResult, SqliteMachine>({
        config: { ...defaultRaftConfig(id, id * 7919) },
        recovered: boot,
        stateMachine: machine,
        io: { persist: log.persist, ...noSnapshotIo, send: transport.send },
        tickMs,
        snapshotEveryEntries: 1_000_000,
        mailboxCapacity: 4096,
        batchMax: 256,
        requestTimeoutMs: 3000
      }).pipe(ScopeOps.extend(scope))
      yield* transport.serve(raft.deliver)
      const databases = yield* Replicated.make({ raft, machine, pollMs: tickMs }).pipe(ScopeOps.extend(scope))
      slot.bind({ databases, cluster: yield* makeRaftClusterControl({ node: raft }) })
      nodes.push({ id, address: transport.address, raft, stop: ScopeOps.close(scope, Exit.void) })
    }
    return nodes
  })

const awaitLeader = (nodes: ReadonlyArray<LiveNode>) =>
  Effect.gen(function*() {
    const deadline = Date.now() + 15_000
    for (;;) {
      const statuses = yield* Effect.forEach(nodes, (n) => n.raft.status)
      const leader = statuses.find((s) => s.role === "leader")
      if (leader !== undefined && statuses.every((s) => s.leader === leader.id)) return nodes.find((n) => n.id === leader.id)!
      if (Date.now() > deadline) return yield* Effect.dieMessage("no leader within 15 s")
      yield* Effect.sleep("20 millis")
    }
  })

const shell = (args: ReadonlyArray<string>) =>
  Effect.async<string>((resume) => {
    const child = execFile(dqliteBinary ?? "dqlite", [...args], { timeout: 60_000 }, (error, stdout, stderr) =>
      resume(error === null ? Effect.succeed(stdout) : Effect.dieMessage(`dqlite ${args.join(" ")}: ${String(error)}\n${stdout}${stderr}`)))
    return Effect.sync(() => void child.kill("SIGKILL"))
  })

describe("gateway over the replicated SQL surface", () => {
  it.scopedLive("writes through any node reach the leader; after the leader stops, the next statements succeed on the new one", () =>
    Effect.gen(function*() {
      const directory = yield* Effect.acquireRelease(
        Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "tqlite-replicated-gateway-"))),
        (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
      )
      const nodes = yield* startNodes(directory)
      const leader = yield* awaitLeader(nodes)
      const servers = nodes.map((n) => n.address)
      const client = yield* makeClient({ servers, database: "test", retryBaseMs: 20, retryCapMs: 500, retriesMax: 30 })
      yield* client.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, r INTEGER, at DATETIME, note TEXT)")
      yield* client.exec("INSERT INTO t (r, at, note) VALUES (random(), datetime('now'), ?)", ["from the client"])
      if (dqliteBinary !== null) {
        const s = ["-s", servers.join(","), "test"]
        expect(yield* shell([...s, "INSERT INTO t (r, at, note) VALUES (random(), datetime('now'), 'from the shell')"])).toBe("")
        expect(yield* shell([...s, "SELECT id, note FROM t ORDER BY id"])).toBe("1|from the client\n2|from the shell\n")
        expect(yield* shell([...s, ".leader"])).toBe(`${leader.address}\n`)
      }

      yield* leader.stop
      const next = yield* awaitLeader(nodes.filter((n) => n.id !== leader.id))
      expect(next.id).not.toBe(leader.id)
      yield* client.exec("INSERT INTO t (r, at, note) VALUES (random(), datetime('now'), ?)", ["after the failover"])
      const rows = (yield* client.query("SELECT note FROM t ORDER BY id")).rows.map((row) => row[0])
      expect(rows.at(-1)).toBe("after the failover")
      expect(rows.length).toBe(dqliteBinary !== null ? 3 : 2)
      if (dqliteBinary !== null) {
        const s = ["-s", servers.join(","), "test"]
        expect(yield* shell([...s, "INSERT INTO t (r, at, note) VALUES (random(), datetime('now'), 'shell after failover')"])).toBe("")
        expect((yield* shell([...s, "SELECT count(*) FROM t"])).trim()).toBe("4")
        expect(yield* shell([...s, ".leader"])).toBe(`${next.address}\n`)
      }
    }))
})
