// Three real Raft actors, each behind its peers transport, whose listener hands dqlite clients to
// the gateway on the same address (makeClientHandlerSlot + raftClusterControl). The SQL surface
// is the single-node fixture gated by the node's Raft role (not replicated: this checks routing,
// LEADER/CLUSTER/ADD/REMOVE/TRANSFER over Raft, and the real shell against the node wiring).
import { noSnapshotIo, snapshotOfBytes } from "../../../src/actors/snapshotData.ts"
import { execFile } from "node:child_process"
import { describe, expect, it } from "@effect/vitest"
import type { Scope } from "effect"
import { Effect, Exit, Scope as ScopeOps } from "effect"
import type { StateMachine } from "../../../src/actors/Applier.ts"
import type { RaftNode } from "../../../src/actors/RaftActor.ts"
import * as RaftActor from "../../../src/actors/RaftActor.ts"
import { make as makeClient } from "../../../src/net/client/Client.ts"
import { makeClientHandlerSlot } from "../../../src/net/gateway/Gateway.ts"
import { makeRaftClusterControl } from "../../../src/node/raftClusterControl.ts"
import type { TransportService } from "../../../src/net/peers/PeerTransport.ts"
import { makeTcp } from "../../../src/net/peers/PeerTransport.ts"
import { defaultRaftConfig } from "../../../src/raft/config.ts"
import { bootstrap } from "../../../src/raft/core.ts"
import type { Membership, NodeId } from "../../../src/raft/types.ts"
import type { SqlDatabases, SqlFailure, SqlSession } from "../../../src/sqlite/Sql.ts"
import { SqlNotLeader } from "../../../src/sqlite/Sql.ts"
import { makeMemoryLogStore } from "../../../src/storage/LogStore.ts"
import { makeSqliteFixture } from "./fixture/sqliteFixture.ts"
import { findDqliteShell } from "./harness.ts"

class Nothing implements StateMachine<null> {
  readonly apply = () => Effect.succeed(null)
  readonly snapshot = snapshotOfBytes(Effect.succeed(new Uint8Array()))
  readonly restore = () => Effect.void
}

/** The fixture's sessions, answering "not leader" unless the Raft node leads. */
const gatedByRole = (databases: SqlDatabases, node: RaftNode<null, Nothing>): SqlDatabases => ({
  open: (name) =>
    Effect.map(databases.open(name), (session): SqlSession => {
      const gate = <A>(effect: Effect.Effect<A, SqlFailure>): Effect.Effect<A, SqlFailure> =>
        Effect.flatMap(node.status, (status): Effect.Effect<A, SqlFailure> =>
          status.role === "leader" ? effect : Effect.fail(new SqlNotLeader({ leader: status.leader, message: "not leader" })))
      return {
        ...session,
        exec: (id, params) => gate(session.exec(id, params)),
        query: (id, params) => gate(session.query(id, params)),
        execSql: (sql, params) => gate(session.execSql(sql, params)),
        querySql: (sql, params) => gate(session.querySql(sql, params))
      }
    })
})

const dqliteBinary = findDqliteShell()
const shell = (args: ReadonlyArray<string>) =>
  Effect.async<string>((resume) => {
    const child = execFile(dqliteBinary ?? "dqlite", [...args], { timeout: 30_000 }, (error, stdout, stderr) =>
      resume(error === null ? Effect.succeed(stdout) : Effect.dieMessage(`dqlite ${args.join(" ")}: ${String(error)}\n${stdout}${stderr}`)))
    return Effect.sync(() => void child.kill("SIGKILL"))
  })

interface Node {
  readonly id: NodeId
  readonly address: string
  readonly raft: RaftNode<null, Nothing>
}

const startCluster = (): Effect.Effect<ReadonlyArray<Node>, never, Scope.Scope> =>
  Effect.gen(function*() {
    const ids: ReadonlyArray<NodeId> = [1, 2, 3]
    const slots = new Map<NodeId, ReturnType<typeof makeClientHandlerSlot>>()
    const transports = new Map<NodeId, TransportService>()
    for (const id of ids) {
      const scope = yield* ScopeOps.make()
      yield* Effect.addFinalizer(() => ScopeOps.close(scope, Exit.void))
      // The transport exists before the node; the gateway is bound to the hook once the node is.
      const slot = makeClientHandlerSlot()
      slots.set(id, slot)
      const transport = yield* makeTcp({ nodeId: id, clusterId: "gateway-test", listen: "127.0.0.1:0", onClientConnection: slot.handler }).pipe(
        ScopeOps.extend(scope),
        Effect.orDie
      )
      transports.set(id, transport)
    }
    const address = (id: NodeId) => transports.get(id)!.address
    const config: Membership = { members: ids.map((id) => ({ id, address: address(id), role: "voter" as const })) }
    const nodes: Array<Node> = []
    for (const id of ids) {
      const transport = transports.get(id)!
      yield* transport.setPeers(new Map(ids.filter((other) => other !== id).map((other) => [other, address(other)])))
      const log = makeMemoryLogStore()
      const boot = bootstrap(config)
      yield* Effect.orDie(log.persist([{ hardState: boot.hardState, entries: boot.entries }]))
      const raft = yield* RaftActor.make<null, Nothing>({
        config: { ...defaultRaftConfig(id), seed: id * 17 },
        recovered: boot,
        stateMachine: new Nothing(),
        io: { persist: log.persist, ...noSnapshotIo, send: transport.send },
        tickMs: 10,
        snapshotEveryEntries: 1_000_000,
        mailboxCapacity: 1024,
        batchMax: 64,
        requestTimeoutMs: 3000
      })
      yield* transport.serve(raft.deliver)
      const fixture = yield* makeSqliteFixture()
      slots.get(id)!.bind({ databases: gatedByRole(fixture.databases, raft), cluster: yield* makeRaftClusterControl({ node: raft }), dumper: fixture.dumper })
      nodes.push({ id, address: address(id), raft })
    }
    return nodes
  })

const leaderOf = (nodes: ReadonlyArray<Node>) =>
  Effect.gen(function*() {
    const deadline = Date.now() + 10_000
    for (;;) {
      const statuses = yield* Effect.forEach(nodes, (n) => n.raft.status)
      const leader = statuses.find((s) => s.role === "leader")
      if (leader !== undefined && statuses.every((s) => s.leader === leader.id)) return nodes.find((n) => n.id === leader.id)!
      if (Date.now() > deadline) return yield* Effect.dieMessage("no leader within 10 s")
      yield* Effect.sleep("20 millis")
    }
  })

describe("gateway over Raft: three nodes, one address each for peers and clients", () => {
  it.scopedLive("any node answers LEADER and CLUSTER from Raft; the client follows TRANSFER; ADD and REMOVE commit", () =>
    Effect.gen(function*() {
      const nodes = yield* startCluster()
      const leader = yield* leaderOf(nodes)
      const follower = nodes.find((n) => n.id !== leader.id)!
      const client = yield* makeClient({ servers: [follower.address], database: "test", retryBaseMs: 20, retryCapMs: 200 })
      expect(yield* client.leader).toEqual({ id: BigInt(leader.id), address: leader.address })
      expect(yield* client.cluster).toEqual(nodes.map((n) => ({ id: BigInt(n.id), address: n.address, role: "voter" })))
      yield* client.exec("CREATE TABLE t (x); INSERT INTO t VALUES (1)")

      yield* client.add(4n, "127.0.0.1:1")
      expect((yield* client.cluster).map((s) => [s.id, s.role])).toEqual([[1n, "voter"], [2n, "voter"], [3n, "voter"], [4n, "spare"]])
      yield* client.remove(4n)
      expect((yield* client.cluster).map((s) => s.id)).toEqual([1n, 2n, 3n])

      yield* client.transfer(BigInt(follower.id))
      const next = yield* leaderOf(nodes)
      expect(next.id).toBe(follower.id)
      expect(yield* client.leader).toEqual({ id: BigInt(follower.id), address: follower.address })
      // The next write goes to the new leader (whose fixture database is its own, so it is empty).
      expect((yield* client.query("SELECT count(*) FROM sqlite_master")).rows).toEqual([[0]])

      if (dqliteBinary !== null) {
        const other = nodes.find((n) => n.id !== next.id)!
        expect(yield* shell(["-s", other.address, "test", ".leader"])).toBe(`${next.address}\n`)
        expect(yield* shell(["-s", other.address, "test", ".cluster"])).toBe(nodes.map((n) => `${n.id.toString(16)}|${n.address}|voter\n`).join(""))
        expect(yield* shell(["-s", other.address, "test", "CREATE TABLE s (x);SELECT count(*) FROM s"])).toBe("0\n")
      }
    }))
})
