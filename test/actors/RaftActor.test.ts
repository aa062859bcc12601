// The Raft driver actor under TestClock: proposals commit and return the state machine's result,
// reads are linearizable, and a stalled write fails with a typed error instead of hanging.
import { noSnapshotIo, readAllBytes, snapshotOfBytes, type SnapshotSource } from "../../src/actors/snapshotData.ts"
import { describe, expect, it } from "@effect/vitest"
import { Chunk, Deferred, Effect, Exit, Fiber, Scope, Stream, TestClock } from "effect"
import type { Applied, StateMachine } from "../../src/actors/Applier.ts"
import type { RaftNode } from "../../src/actors/RaftActor.ts"
import * as RaftActor from "../../src/actors/RaftActor.ts"
import type { RaftConfig } from "../../src/raft/config.ts"
import { defaultRaftConfig } from "../../src/raft/config.ts"
import { bootstrap } from "../../src/raft/core.ts"
import type { Entry, Membership, NodeId } from "../../src/raft/types.ts"
import { makeMemoryLogStore } from "../../src/storage/LogStore.ts"

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

const tickMs = 10

/** n nodes wired by an in-memory network that delivers at once unless a node is cut off. */
const cluster = (n: number, overrides: Partial<RaftConfig> = {}, readFails?: unknown) =>
  Effect.gen(function*() {
    /** In order: each node's log persists ("persist <node> <last index>", when the write begins)
     * and sends of entries ("send <node> <last index>"). */
    const events: Array<string> = []
    const readBacks = { entries: 0 }
    const ids = Array.from({ length: n }, (_, i) => i + 1)
    const config: Membership = { members: ids.map((id) => ({ id, address: `n${id}`, role: "voter" as const })) }
    const nodes = new Map<NodeId, RaftNode<number, Counter>>()
    const machines = new Map<NodeId, Counter>()
    const cut = new Set<NodeId>()
    for (const id of ids) {
      const log = makeMemoryLogStore()
      const boot = bootstrap(config)
      yield* log.persist([{ hardState: boot.hardState, entries: boot.entries }])
      const node = yield* RaftActor.make<number, Counter>({
        config: { ...defaultRaftConfig(id), seed: id * 31, ...overrides },
        recovered: boot,
        stateMachine: machines.set(id, new Counter()).get(id)!,
        io: {
          persist: (batches) =>
            Effect.suspend(() => {
              const last = batches.flatMap((batch) => batch.entries).at(-1)
              if (last !== undefined) events.push(`persist ${id} ${last.index}`)
              return log.persist(batches)
            }),
          readEntries: (lo, hi) =>
            readFails !== undefined ? Effect.fail(readFails) : Effect.tap(log.read(lo, hi), (entries) => Effect.sync(() => void (readBacks.entries += entries.length))),
          ...noSnapshotIo,
          send: (envelope) => {
            const message = envelope.message
            if (message._tag === "AppendEntries" && message.entries.length > 0) events.push(`send ${id} ${message.entries.at(-1)!.index}`)
            if (message._tag === "AppendEntries") events.push(`commit-sent ${id} ${message.commit}`)
            if (message._tag === "AppendEntries" && message.entries.length === 0) events.push(`empty ${id} ${message.commit}`)
            if (message._tag === "Heartbeat") events.push(`beat ${id} ${message.commit}`)
            return cut.has(envelope.message.from) || cut.has(envelope.message.to)
              ? Effect.void
              : Effect.suspend(() => nodes.get(envelope.message.to)?.deliver(envelope) ?? Effect.void)
          }
        },
        tickMs,
        snapshotEveryEntries: 1000,
        mailboxCapacity: 256,
        batchMax: 64,
        requestTimeoutMs: 1000
      })
      nodes.set(id, node)
    }
    const leader = Effect.gen(function*() {
      for (let i = 0; i < 200; i++) {
        for (const node of nodes.values()) {
          if (cut.has(node.id)) continue
          const status = yield* node.status
          if (status.role === "leader") return node
        }
        yield* TestClock.adjust(tickMs)
      }
      return yield* Effect.dieMessage("no leader elected")
    })
    return { nodes, machines, cut, leader, readBacks, events }
  })

describe("RaftActor", () => {
  it.scoped("a read-back that finds a record other than the entry its index names stops the node", () =>
    Effect.gen(function*() {
      const corrupt = { _tag: "LogCorrupted", file: "log-1.seg", offset: 0, reason: "the record there holds index 7" }
      // One byte of cache, and one entry at a time handed to the applier: the next entries are
      // evicted before the applier asks for them, so they are read back — from a broken log.
      const { leader } = yield* cluster(1, { entryCacheBytesMax: 1, applyInflightBytesMax: 1 }, corrupt)
      const node = yield* leader
      const failed = yield* Effect.fork(Effect.flip(node.failed))
      yield* Effect.forEach([1, 2, 3, 4], (amount) => Effect.fork(node.propose(Uint8Array.of(amount))))
      yield* TestClock.adjust(tickMs * 10)
      const failure = yield* Fiber.join(failed)
      expect(failure.actor).toContain("raft-")
    }))

  it.scoped("a follower far behind is caught up from entries evicted from the leader's memory", () =>
    Effect.gen(function*() {
      // 8 bytes of entry data per node: every entry older than the last few is read back.
      const { nodes, machines, cut, leader, readBacks } = yield* cluster(3, { entryCacheBytesMax: 8, entryLoadBytesMax: 256 })
      const node = yield* leader
      yield* TestClock.adjust(tickMs * 3)
      const behind = [...nodes.values()].find((n) => n.id !== node.id)!
      cut.add(behind.id)
      const fibers = yield* Effect.forEach(Array.from({ length: 60 }, (_, i) => i % 7 + 1), (amount) => Effect.fork(node.propose(Uint8Array.of(amount))))
      yield* TestClock.adjust(tickMs * 10)
      const applied = yield* Effect.forEach(fibers, Fiber.join)
      const total = Math.max(...applied.map((a) => a.result))
      expect(readBacks.entries).toBeGreaterThan(0) // the leader's own applier read entries back
      const before = readBacks.entries
      cut.delete(behind.id)
      for (let i = 0; i < 100 && machines.get(behind.id)!.total !== total; i++) yield* TestClock.adjust(tickMs)
      expect(machines.get(behind.id)!.total).toBe(total)
      // Catching up took read-backs: at most 8 bytes of data were in any node's memory.
      expect(readBacks.entries - before).toBeGreaterThanOrEqual(50)
      expect((yield* behind.status).appliedIndex).toBe((yield* node.status).commitIndex)
    }))

  it.scoped("a single node elects itself and applies proposals in order", () =>
    Effect.gen(function*() {
      const { leader } = yield* cluster(1)
      const node = yield* leader
      const results: Array<Applied<number>> = []
      for (const amount of [3, 4, 5]) {
        const fiber = yield* Effect.fork(node.propose(Uint8Array.of(amount)))
        yield* TestClock.adjust(tickMs)
        results.push(yield* Fiber.join(fiber))
      }
      expect(results.map((r) => r.result)).toEqual([3, 7, 12])
      expect(results.map((r) => r.index)).toEqual([results[0]!.index, results[0]!.index + 1, results[0]!.index + 2])
    }))

  it.scoped("three nodes commit a batch of concurrent proposals, and a linearizable read sees them", () =>
    Effect.gen(function*() {
      const { leader } = yield* cluster(3)
      const node = yield* leader
      const fibers = yield* Effect.forEach([1, 2, 3, 4, 5, 6, 7, 8], (amount) => Effect.fork(node.propose(Uint8Array.of(amount))))
      yield* TestClock.adjust(tickMs * 5)
      const applied = yield* Effect.forEach(fibers, Fiber.join)
      expect(applied.map((a) => a.result).sort((a, b) => a - b).at(-1)).toBe(36)
      const read = yield* Effect.fork(node.read((sm) => sm.total))
      yield* TestClock.adjust(tickMs * 3)
      expect(yield* Fiber.join(read)).toBe(36)
    }))

  it.scoped("a leader starts writing its new entries to its log before it sends them to the followers", () =>
    Effect.gen(function*() {
      const { leader, events } = yield* cluster(3)
      const node = yield* leader
      yield* TestClock.adjust(tickMs * 3)
      const applied = yield* Effect.forEach([1, 2, 3], (amount) =>
        Effect.gen(function*() {
          const proposal = yield* Effect.fork(node.propose(Uint8Array.of(amount)))
          yield* TestClock.adjust(tickMs)
          return yield* Fiber.join(proposal)
        }))
      for (const { index } of applied) {
        const persisted = events.indexOf(`persist ${node.id} ${index}`)
        const sent = events.indexOf(`send ${node.id} ${index}`)
        expect(persisted, `entry ${index}: ${events.join(", ")}`).toBeGreaterThanOrEqual(0)
        expect(sent).toBeGreaterThanOrEqual(0)
        // The leader's fsync then runs while the appends travel, not after they were written.
        expect(persisted, `entry ${index}: ${events.join(", ")}`).toBeLessThan(sent)
      }
    }))

  it.scoped("a proposal made with proposeNow is answered in the applier's turn, and its client runs before the sends that carry the commit", () =>
    Effect.gen(function*() {
      const { leader, events } = yield* cluster(3)
      const node = yield* leader
      yield* TestClock.adjust(tickMs * 3)
      for (const amount of [1, 2, 3]) {
        // The client: a fiber waiting for the callback, as the writer's session waits for its answer.
        const answered = yield* Deferred.make<number>()
        const client = yield* Effect.fork(Effect.flatMap(Deferred.await(answered), (index) => Effect.sync(() => events.push(`client ${node.id} ${index}`))))
        let appliedWhenCalled = -1
        const offered = node.proposeNow(Uint8Array.of(amount), (exit) => {
          if (!Exit.isSuccess(exit)) throw new Error(`the proposal failed: ${String(exit.cause)}`)
          // Called once applied and published: a read now sees the entry applied.
          appliedWhenCalled = exit.value.index
          Deferred.unsafeDone(answered, Exit.succeed(exit.value.index))
        })
        expect(offered).toBe(true)
        yield* TestClock.adjust(tickMs)
        yield* Fiber.join(client)
        const index = appliedWhenCalled
        expect(index).toBeGreaterThan(0)
        expect((yield* node.status).commitIndex).toBeGreaterThanOrEqual(index)
        // The leader's first message telling a follower that `index` is committed leaves after
        // the client has run (a send before it would mean the answer waited behind the sends).
        const answeredAt = events.indexOf(`client ${node.id} ${index}`)
        const commitSentAt = events.findIndex((event) => {
          const [kind, from, commit] = event.split(" ")
          return kind === "commit-sent" && Number(from) === node.id && Number(commit) >= index
        })
        expect(commitSentAt, events.join(", ")).toBeGreaterThan(answeredAt)
      }
    }))

    it.scoped("a follower answers RaftNotLeader naming the leader", () =>
    Effect.gen(function*() {
      const { nodes, leader } = yield* cluster(3)
      const node = yield* leader
      yield* TestClock.adjust(tickMs * 3)
      const follower = [...nodes.values()].find((n) => n.id !== node.id)!
      const exit = yield* Effect.exit(follower.propose(Uint8Array.of(1)))
      expect(exit).toStrictEqual(Exit.fail(expect.anything()))
      if (Exit.isFailure(exit) && exit.cause._tag === "Fail") {
        expect(exit.cause.error._tag).toBe("RaftNotLeader")
        expect((exit.cause.error as { leader: number | null }).leader).toBe(node.id)
      }
    }))

  it.scoped("changes: the current state first, then each change of role, term or leader (not of commit)", () =>
    Effect.gen(function*() {
      const { nodes, cut, leader } = yield* cluster(3)
      const node = yield* leader
      yield* TestClock.adjust(tickMs * 3)
      const seen = yield* Effect.fork(Stream.runCollect(Stream.take(node.changes, 2)))
      yield* Effect.yieldNow()
      // Commits alone publish nothing.
      const write = yield* Effect.fork(node.propose(Uint8Array.of(1)))
      yield* TestClock.adjust(tickMs * 2)
      yield* Fiber.join(write)
      expect(seen.unsafePoll()).toBeNull()
      // Cut off, the leader steps down (check-quorum): the second state says so.
      for (const other of nodes.values()) if (other.id !== node.id) cut.add(other.id)
      yield* TestClock.adjust(tickMs * 40)
      const states = Chunk.toReadonlyArray(yield* Fiber.join(seen))
      expect(states.map((s) => s.role)).toEqual(["leader", "follower"])
      expect(states[0]!.leader).toBe(node.id)
      expect(states[1]!.leader).not.toBe(node.id)
    }))

  it.scoped("a commit index rides the next append when one follows within the flush delay, and an empty append brings it when none does, before the next tick (issue 12)", () =>
    Effect.gen(function*() {
      const { nodes, leader, events } = yield* cluster(3, { carryCommit: true })
      const node = yield* leader
      yield* TestClock.adjust(tickMs * 3)
      const followers = [...nodes.values()].filter((n) => n.id !== node.id)
      const count = (kind: string) => events.filter((event) => event.startsWith(`${kind} ${node.id} `)).length
      const followerCommits = Effect.forEach(followers, (f) => Effect.map(f.status, (s) => s.commitIndex))
      /** Proposes and lets every fiber run until it is applied, without moving the clock. */
      const commitNow = (amount: number) =>
        Effect.gen(function*() {
          const fiber = yield* Effect.fork(node.propose(Uint8Array.of(amount)))
          for (let i = 0; i < 1000 && (yield* Fiber.poll(fiber))._tag === "None"; i++) yield* Effect.yieldNow()
          return (yield* Fiber.join(fiber)).index
        })
      const [empties, beats] = [count("empty"), count("beat")]
      // Two writes back to back: the second one's appends carry the first one's commit.
      const first = yield* commitNow(1)
      expect(yield* followerCommits).toEqual(followers.map(() => first - 1))
      const second = yield* commitNow(2)
      expect(events.filter((event) => event === `commit-sent ${node.id} ${first}`).length).toBe(followers.length)
      expect(yield* followerCommits).toEqual(followers.map(() => first))
      expect([count("empty") - empties, count("beat") - beats]).toEqual([0, 0])
      // Nothing follows the second: once the delay (half a tick here) has passed, one empty append
      // per follower brings its commit, before the next tick's heartbeats.
      yield* TestClock.adjust(tickMs / 2)
      expect([count("empty") - empties, count("beat") - beats]).toEqual([followers.length, 0])
      expect(yield* followerCommits).toEqual(followers.map(() => second))
      // Nothing more is owed: the next tick sends its heartbeats and no empty append.
      yield* TestClock.adjust(tickMs)
      expect(count("empty") - empties).toBe(followers.length)
      expect(count("beat") - beats).toBe(followers.length)
    }))

  it.scoped("a follower serves linearizable, session and local reads from its own copy; bounded ones fail once the leader is silent", () =>
    Effect.gen(function*() {
      const { nodes, cut, leader } = yield* cluster(3)
      const node = yield* leader
      const write = yield* Effect.fork(node.propose(Uint8Array.of(5)))
      yield* TestClock.adjust(tickMs * 3)
      const applied = yield* Fiber.join(write)
      const follower = [...nodes.values()].find((n) => n.id !== node.id)!
      const read = (consistency: RaftActor.ReadConsistency) =>
        Effect.gen(function*() {
          const fiber = yield* Effect.fork(Effect.either(follower.read((sm) => sm.total, consistency)))
          yield* TestClock.adjust(tickMs * 3)
          const result = yield* Fiber.join(fiber)
          return result._tag === "Right" ? result.right : result.left._tag
        })
      expect(yield* read({ level: "linearizable" })).toBe(5)
      expect(yield* read({ level: "session", index: applied.index })).toBe(5)
      expect(yield* read({ level: "bounded", maxLagMs: tickMs * 5 })).toBe(5)
      // readIndex: the leader's read index (asked, not applied): at least the write's index, on
      // the follower and on the leader alike.
      const index = yield* Effect.fork(follower.readIndex)
      yield* TestClock.adjust(tickMs * 3)
      expect(yield* Fiber.join(index)).toBeGreaterThanOrEqual(applied.index)
      const onLeader = yield* Effect.fork(node.readIndex)
      yield* TestClock.adjust(tickMs * 3)
      expect(yield* Fiber.join(onLeader)).toBeGreaterThanOrEqual(applied.index)
      // The leader goes silent: a bounded read past its bound is refused, a local one still reads.
      cut.add(node.id)
      yield* TestClock.adjust(tickMs * 8)
      expect(yield* read({ level: "bounded", maxLagMs: tickMs * 5 })).toBe("RaftReplicaStale")
      expect(yield* follower.read((sm) => sm.total, { level: "local" })).toBe(5)
      // The other two elect a leader of their own: its read index still covers the write.
      const later = yield* Effect.fork(Effect.either(follower.readIndex))
      yield* TestClock.adjust(tickMs * 300)
      const answer = yield* Fiber.join(later)
      expect(answer._tag === "Right" ? answer.right : answer.left._tag).toBeGreaterThanOrEqual(applied.index)
    }))

  it.scoped("a write that cannot commit fails with RaftRequestTimeout instead of hanging", () =>
    Effect.gen(function*() {
      const { nodes, cut, leader } = yield* cluster(3)
      const node = yield* leader
      for (const other of nodes.values()) if (other.id !== node.id) cut.add(other.id)
      const fiber = yield* Effect.fork(Effect.either(node.propose(Uint8Array.of(9))))
      yield* TestClock.adjust(999)
      expect(fiber.unsafePoll()).toBeNull()
      yield* TestClock.adjust(1)
      const result = yield* Fiber.join(fiber)
      expect(result._tag).toBe("Left")
      if (result._tag === "Left") expect(result.left._tag).toBe("RaftRequestTimeout")
    }))

  it.effect("requests still waiting when their node stops are answered at once: a write with OutcomeUnknown (it may be in the log), a read with NotLeader", () =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const { nodes, cut, leader } = yield* Scope.extend(cluster(3), scope)
      const node = yield* leader
      for (const other of nodes.values()) if (other.id !== node.id) cut.add(other.id)
      const write = yield* Effect.fork(Effect.either(node.propose(Uint8Array.of(9))))
      const read = yield* Effect.fork(Effect.either(node.read((counter) => counter.total)))
      yield* TestClock.adjust(tickMs * 5)
      expect(write.unsafePoll()).toBeNull()
      expect(read.unsafePoll()).toBeNull()
      yield* Scope.close(scope, Exit.void)
      const written = yield* Fiber.join(write)
      expect(written._tag).toBe("Left")
      if (written._tag === "Left") expect(written.left).toMatchObject({ _tag: "OutcomeUnknown", detail: `node ${node.id} has stopped` })
      const readResult = yield* Fiber.join(read)
      expect(readResult._tag).toBe("Left")
      if (readResult._tag === "Left") expect(readResult.left).toMatchObject({ _tag: "RaftNotLeader", detail: `node ${node.id} has stopped` })
    }))
})
