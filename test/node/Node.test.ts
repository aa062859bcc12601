// A node wired from its parts on the real disk and real sockets: bootstrap, restart from the
// data directory, refusal of a directory that belongs to another node, and a three-node cluster
// built by adding members that survives losing its leader.
import { Counter, counterMachine } from "./counter.ts"
import { describe, expect, it } from "@effect/vitest"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Duration, Effect, Either, Exit, Scope } from "effect"
import * as Node from "../../src/node/Node.ts"
import type { TqliteNode } from "../../src/node/Node.ts"
import { Disk } from "../../src/storage/Disk.ts"
import { freePort } from "../freePort.ts"

const tempDir = () => fs.mkdtempSync(path.join(os.tmpdir(), "tqlite-node-"))

type CounterNode = TqliteNode<number, Counter>

const start = (dataDir: string, address: string, mode: Node.NodeOptions<number, Counter>["start"], scope: Scope.Scope) =>
  Node.make<number, Counter>({
    dataDir,
    address,
    start: mode,
    stateMachine: counterMachine,
    tickMs: 20,
    snapshotEveryEntries: 50,
    requestTimeoutMs: 3000
  }).pipe(Scope.extend(scope), Effect.provide(Disk.layerNode))

/** Waits (real time) until one of `nodes` leads; returns it. */
const leaderOf = (nodes: ReadonlyArray<CounterNode>) =>
  Effect.gen(function*() {
    for (let i = 0; i < 300; i++) {
      for (const node of nodes) if ((yield* node.raft.status).role === "leader") return node
      yield* Effect.sleep(Duration.millis(20))
    }
    return yield* Effect.dieMessage("no leader")
  })

const add = (sum: number) => Uint8Array.of(sum)

describe("Node", () => {
  it.live("bootstraps, then restarts from its data directory as the same node with the same state", () =>
    Effect.gen(function*() {
      const dir = tempDir()
      const address = `127.0.0.1:${yield* freePort}`
      const first = yield* Scope.make()
      const node = yield* start(dir, address, { _tag: "Bootstrap" }, first)
      yield* leaderOf([node])
      for (const n of [5, 6, 7]) yield* node.raft.propose(add(n))
      const id = node.identity
      yield* Scope.close(first, Exit.void)

      const second = yield* Scope.make()
      const again = yield* start(dir, address, { _tag: "Bootstrap" }, second)
      expect(again.identity.nodeId).toBe(id.nodeId)
      expect(again.identity.clusterId).toBe(id.clusterId)
      yield* leaderOf([again])
      const applied = yield* again.raft.propose(add(1))
      expect(applied.result).toBe(19)
      yield* Scope.close(second, Exit.void)

      const third = yield* Scope.make()
      const moved = yield* Effect.either(start(dir, `127.0.0.1:${yield* freePort}`, { _tag: "Bootstrap" }, third))
      expect(moved._tag).toBe("Left")
      if (moved._tag === "Left") expect((moved.left as { _tag: string })._tag).toBe("IdentityMismatch")
      yield* Scope.close(third, Exit.void)
    }), 30_000)

  it.live("a restart does not wait for its boot snapshot's check unless the state machine loads it; a corrupt one is refused either way", () =>
    Effect.gen(function*() {
      const dir = tempDir()
      const address = `127.0.0.1:${yield* freePort}`
      const first = yield* Scope.make()
      const node = yield* start(dir, address, { _tag: "Bootstrap" }, first)
      yield* leaderOf([node])
      for (let i = 0; i < 60; i++) yield* node.raft.propose(add(1))
      yield* Scope.close(first, Exit.void)
      const snapshotsDir = path.join(dir, "snapshots")
      const files = fs.readdirSync(snapshotsDir).filter((name) => !name.startsWith(".") && !name.endsWith(".tmp"))
      expect(files.length).toBeGreaterThan(0)
      // One bit of the snapshot's data (the 8 bytes before its 24-byte trailer) flipped.
      const file = path.join(snapshotsDir, files[files.length - 1]!)
      const bytes = fs.readFileSync(file)
      bytes[bytes.length - 24 - 1]! ^= 0x10
      fs.writeFileSync(file, bytes)

      // A state machine whose files are current (it does not load the snapshot): the node starts
      // and serves; the snapshot, checked in the background, cannot be loaded or sent.
      let boot: Parameters<Node.NodeOptions<number, Counter>["stateMachine"]>[1] = null
      const second = yield* Scope.make()
      const again = yield* Node.make<number, Counter>({
        dataDir: dir,
        address,
        start: { _tag: "Bootstrap" },
        stateMachine: (_identity, snapshot) => Effect.sync(() => {
          boot = snapshot
          return new Counter(null)
        }),
        tickMs: 20,
        snapshotEveryEntries: 1000,
        requestTimeoutMs: 3000
      }).pipe(Scope.extend(second), Effect.provide(Disk.layerNode))
      yield* leaderOf([again])
      expect(boot).not.toBeNull()
      const loaded = yield* Effect.exit(boot!.load)
      expect(Exit.isFailure(loaded) ? String(Exit.isFailure(loaded) && loaded.cause) : "loaded").toContain("SnapshotCorrupted")
      yield* Scope.close(second, Exit.void)

      // A state machine that restores from it: the node refuses to start.
      const third = yield* Scope.make()
      const refused = yield* Effect.exit(start(dir, address, { _tag: "Bootstrap" }, third))
      expect(Exit.isFailure(refused) ? String(refused.cause) : "started").toContain("SnapshotCorrupted")
      yield* Scope.close(third, Exit.void)
    }), 30_000)

  it.live("grows to three nodes by adding members, replicates, and survives losing the leader", () =>
    Effect.gen(function*() {
      const scopes = [yield* Scope.make(), yield* Scope.make(), yield* Scope.make()]
      const addresses = [`127.0.0.1:${yield* freePort}`, `127.0.0.1:${yield* freePort}`, `127.0.0.1:${yield* freePort}`]
      const founder = yield* start(tempDir(), addresses[0]!, { _tag: "Bootstrap" }, scopes[0]!)
      yield* leaderOf([founder])
      const joiners: CounterNode[] = []
      for (const i of [1, 2]) {
        const node = yield* start(tempDir(), addresses[i]!, { _tag: "Join", clusterId: founder.identity.clusterId }, scopes[i]!)
        joiners.push(node)
        const leader = yield* leaderOf([founder, ...joiners])
        yield* leader.raft.changeMembership({ kind: "add", node: node.identity.nodeId, address: node.identity.address, role: "standby" })
        yield* leader.raft.changeMembership({ kind: "assign", node: node.identity.nodeId, role: "voter" })
      }
      const all = [founder, ...joiners]
      let leader = yield* leaderOf(all)
      for (let i = 0; i < 60; i++) yield* leader.raft.propose(add(1))
      // Every node applies the same history; reads on the leader are linearizable.
      expect(yield* leader.raft.read((sm) => sm.total)).toBe(60)
      const voters = (yield* leader.raft.status).membership.members.filter((m) => m.role === "voter")
      expect(voters.length).toBe(3)

      // A transfer hands leadership to another voter (the graceful-shutdown path).
      const transferred = yield* Effect.either(leader.raft.transferLeadership(null))
      expect(transferred).toEqual(Either.right(undefined))
      const after = yield* leaderOf(all)
      expect(after.identity.nodeId).not.toBe(leader.identity.nodeId)
      leader = after

      const leaderIndex = all.indexOf(leader)
      yield* Scope.close(scopes[leaderIndex]!, Exit.void)
      const survivors = all.filter((n) => n !== leader)
      leader = yield* leaderOf(survivors)
      const applied = yield* leader.raft.propose(add(2))
      expect(applied.result).toBe(62)
      for (const scope of scopes) yield* Scope.close(scope, Exit.void)
    }), 60_000)
})
