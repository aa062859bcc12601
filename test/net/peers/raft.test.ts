// The real Raft actor over real sockets: three nodes, each with its own TCP transport on
// loopback, elect a leader, commit 100 proposals, lose the leader's transport, and commit on.
import { noSnapshotIo, readAllBytes, snapshotOfBytes, type SnapshotSource } from "../../../src/actors/snapshotData.ts"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Scope } from "effect"
import type { StateMachine } from "../../../src/actors/Applier.ts"
import type { RaftNode } from "../../../src/actors/RaftActor.ts"
import * as RaftActor from "../../../src/actors/RaftActor.ts"
import type { TransportService } from "../../../src/net/peers/PeerTransport.ts"
import { makeTcp } from "../../../src/net/peers/PeerTransport.ts"
import { defaultRaftConfig } from "../../../src/raft/config.ts"
import { bootstrap } from "../../../src/raft/core.ts"
import type { Entry, Membership, NodeId } from "../../../src/raft/types.ts"
import { makeMemoryLogStore } from "../../../src/storage/LogStore.ts"
import { waitUntil } from "./helpers.ts"

/** A counter: each command adds its first byte; apply returns the new total. */
class Counter implements StateMachine<number> {
  total = 0
  readonly apply = (entry: Entry) =>
    Effect.sync(() => {
      if (entry.kind === "command") this.total += entry.data[0] ?? 0
      return this.total
    })
  readonly snapshot = snapshotOfBytes(Effect.sync(() => Uint8Array.of(this.total)))
  readonly restore = (_: unknown, source: SnapshotSource) => Effect.map(Effect.orDie(readAllBytes(source)), (data) => void (this.total = data[0] ?? 0))
}

interface Member {
  readonly node: RaftNode<number, Counter>
  readonly counter: Counter
  readonly transport: TransportService
  readonly stop: Effect.Effect<void>
}

const tickMs = 10

describe("Raft over TCP", () => {
  it.scopedLive("three nodes elect a leader, commit 100 proposals, and keep committing after the leader's transport dies", () =>
    Effect.gen(function*() {
      const ids: ReadonlyArray<NodeId> = [1, 2, 3]
      const transports = new Map<NodeId, { transport: TransportService; scope: Scope.CloseableScope }>()
      for (const id of ids) {
        const scope = yield* Scope.make()
        yield* Effect.addFinalizer(() => Scope.close(scope, Exit.void))
        const transport = yield* makeTcp({ nodeId: id, clusterId: "raft-test", listen: "127.0.0.1:0" }).pipe(Scope.extend(scope))
        transports.set(id, { transport, scope })
      }
      const address = (id: NodeId) => transports.get(id)!.transport.address
      const config: Membership = { members: ids.map((id) => ({ id, address: address(id), role: "voter" as const })) }
      const members = new Map<NodeId, Member>()
      for (const id of ids) {
        const { transport, scope } = transports.get(id)!
        yield* transport.setPeers(new Map(ids.filter((other) => other !== id).map((other) => [other, address(other)])))
        const log = makeMemoryLogStore()
        const boot = bootstrap(config)
        yield* log.persist([{ hardState: boot.hardState, entries: boot.entries }])
        const counter = new Counter()
        const node = yield* RaftActor.make<number, Counter>({
          config: { ...defaultRaftConfig(id), seed: id * 31 },
          recovered: boot,
          stateMachine: counter,
          io: {
            persist: log.persist,
            ...noSnapshotIo,
            send: transport.send
          },
          tickMs,
          snapshotEveryEntries: 1_000_000,
          mailboxCapacity: 1024,
          batchMax: 64,
          requestTimeoutMs: 3000
        })
        yield* transport.serve(node.deliver)
        members.set(id, { node, counter, transport, stop: Scope.close(scope, Exit.void) })
      }

      /** A leader that every other live node follows. */
      const leaderAmong = (live: ReadonlyArray<NodeId>) =>
        Effect.gen(function*() {
          let found: Member | null = null
          yield* waitUntil("a leader", Effect.gen(function*() {
            const statuses = yield* Effect.forEach(live, (id) => members.get(id)!.node.status)
            const leader = statuses.find((s) => s.role === "leader")
            if (leader === undefined || !statuses.every((s) => s.leader === leader.id && s.term === leader.term)) return false
            found = members.get(leader.id)!
            return true
          }), 10_000)
          return found!
        })

      const propose = (member: Member, count: number, concurrency: number) =>
        Effect.forEach(Array.from({ length: count }), () => member.node.propose(Uint8Array.of(1)), { concurrency })

      const first = yield* leaderAmong(ids)
      const applied = yield* propose(first, 100, 10)
      expect(applied.length).toBe(100)
      expect(Math.max(...applied.map((a) => a.result))).toBe(100)
      yield* waitUntil("every node to apply 100", Effect.sync(() => ids.every((id) => members.get(id)!.counter.total === 100)))
      const linkStats = (yield* first.transport.stats).links
      expect(linkStats.every((l) => l.connected && l.sent > 0)).toBe(true)

      // The leader's transport dies: it can neither send nor receive.
      yield* first.stop
      const survivors = ids.filter((id) => id !== first.node.id)
      const second = yield* leaderAmong(survivors)
      expect(second.node.id).not.toBe(first.node.id)
      const more = yield* propose(second, 20, 5)
      expect(Math.max(...more.map((a) => a.result))).toBe(120)
      yield* waitUntil("both survivors to apply 120", Effect.sync(() => survivors.every((id) => members.get(id)!.counter.total === 120)))
      expect(first.counter.total).toBe(100)
    }), 30_000)
})
