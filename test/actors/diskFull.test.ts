// A full disk under the Raft actor stack (issue 13): Raft actors on segment logs over simulated
// disks that can be switched "full" (ENOSPC on every call that needs space), under TestClock.
// A leader that cannot persist refuses writes with StorageFull and hands leadership over; a
// follower that cannot persist stops acknowledging; both resume by themselves once space is back,
// with every acknowledged write in every log. And `failed` ends when any one actor gives up.
import { noSnapshotIo } from "../../src/actors/snapshotData.ts"
import { readAllBytes, snapshotOfBytes, type SnapshotSource } from "../../src/actors/snapshotData.ts"
import { describe, expect, it } from "@effect/vitest"
import { Cause, Effect, Fiber, TestClock } from "effect"
import type { StateMachine } from "../../src/actors/Applier.ts"
import * as DiskFullWatch from "../../src/actors/DiskFullWatch.ts"
import type { RaftNode } from "../../src/actors/RaftActor.ts"
import * as RaftActor from "../../src/actors/RaftActor.ts"
import { defaultRaftConfig } from "../../src/raft/config.ts"
import { bootstrap } from "../../src/raft/core.ts"
import type { Entry, Membership, NodeId } from "../../src/raft/types.ts"
import { ActorFailed, describeActorFailed } from "../../src/runtime/errors.ts"
import { DiskError, DiskFull } from "../../src/storage/errors.ts"
import type { LogStoreService } from "../../src/storage/LogStore.ts"
import { persistInGroupsResumable } from "../../src/storage/LogStore.ts"
import { SegmentLog } from "../../src/storage/SegmentLog.ts"
import type { SimDisk } from "../sim/SimDisk.ts"
import { makeSimDisk } from "../sim/SimDisk.ts"

/** Remembers every command applied, in order. */
class Journal implements StateMachine<number> {
  readonly applied: Array<number> = []
  apply = (entry: Entry): Effect.Effect<number> =>
    Effect.sync(() => {
      if (entry.kind === "command") this.applied.push(entry.data[0] ?? 0)
      return this.applied.length
    })
  readonly snapshot = snapshotOfBytes(Effect.sync(() => Uint8Array.from(this.applied)))
  readonly restore = (_: unknown, source: SnapshotSource) => Effect.map(Effect.orDie(readAllBytes(source)), (data) => void this.applied.splice(0, this.applied.length, ...data))
}

const tickMs = 10

interface Member {
  readonly node: RaftNode<number, Journal>
  readonly disk: SimDisk
  readonly log: LogStoreService
  readonly journal: Journal
  readonly watch: DiskFullWatch.DiskFullWatch
}

const cluster = (
  n: number,
  options: {
    readonly persistFails?: (id: NodeId) => boolean
    readonly saveSnapshot?: () => Effect.Effect<void, unknown>
    readonly snapshotEveryEntries?: number
  } = {}
) =>
  Effect.gen(function*() {
    const ids = Array.from({ length: n }, (_, i) => i + 1)
    const config: Membership = { members: ids.map((id) => ({ id, address: `n${id}`, role: "voter" as const })) }
    const members = new Map<NodeId, Member>()
    for (const id of ids) {
      const disk = makeSimDisk({ seed: id })
      const log = yield* Effect.provide(SegmentLog.open({ dir: "/data/log", clusterId: "c1" }), disk.layer)
      const boot = bootstrap(config)
      yield* log.persist([{ hardState: boot.hardState, entries: boot.entries }])
      const persist = persistInGroupsResumable(log)
      const journal = new Journal()
      const watch = DiskFullWatch.make()
      const node = yield* RaftActor.make<number, Journal>({
        config: { ...defaultRaftConfig(id), seed: id * 31 },
        recovered: yield* log.load,
        stateMachine: journal,
        io: {
          persist: (batches) =>
            options.persistFails?.(id) === true ? Effect.fail(new DiskError({ op: "write", path: "/data/log", code: "EIO", cause: null })) : persist(batches),
          recover: log.recover,
          saveSnapshot: options.saveSnapshot ?? (() => Effect.void),
          adoptSnapshot: noSnapshotIo.adoptSnapshot,
          snapshotSource: noSnapshotIo.snapshotSource,
          send: (envelope) => Effect.suspend(() => members.get(envelope.message.to)?.node.deliver(envelope) ?? Effect.void)
        },
        tickMs,
        snapshotEveryEntries: options.snapshotEveryEntries ?? 10_000,
        mailboxCapacity: 256,
        batchMax: 64,
        requestTimeoutMs: 2000,
        diskFull: watch
      })
      members.set(id, { node, disk, log, journal, watch })
    }
    const leader = Effect.gen(function*() {
      for (let i = 0; i < 500; i++) {
        for (const member of members.values()) {
          const status = yield* member.node.status
          if (status.role === "leader") return member
        }
        yield* TestClock.adjust(tickMs)
      }
      return yield* Effect.dieMessage("no leader elected")
    })
    return { members, leader }
  })

/** Proposes `value` on `member` and lets the clock run until it is answered. */
const propose = (member: Member, value: number) =>
  Effect.gen(function*() {
    const fiber = yield* Effect.fork(Effect.either(member.node.propose(Uint8Array.of(value))))
    for (let i = 0; i < 300 && fiber.unsafePoll() === null; i++) yield* TestClock.adjust(tickMs)
    return yield* Fiber.join(fiber)
  })

const commandsIn = (log: LogStoreService) =>
  Effect.map(log.load, (recovered) => recovered.entries.filter((e) => e.kind === "command").map((e) => (e.kind === "command" ? e.data[0] : -1)))

describe("disk full under the Raft actor", () => {
  it.scoped("a leader whose disk fills refuses writes with StorageFull, hands leadership over, and catches up once space is back", () =>
    Effect.gen(function*() {
      const { members, leader } = yield* cluster(3)
      const first = yield* leader
      expect((yield* propose(first, 1))._tag).toBe("Right")

      first.disk.driver.setFull(true)
      // The write that meets the full disk: the followers may commit it without the leader's own
      // copy, but the leader applies only what it persisted, so its answer waits (until the
      // request timeout). The log writer knows at once.
      yield* Effect.fork(first.node.propose(Uint8Array.of(2)))
      for (let i = 0; i < 50 && !first.watch.isFull("log"); i++) yield* TestClock.adjust(tickMs)
      expect(first.watch.isFull("log")).toBe(true)
      const refused = yield* Effect.either(first.node.propose(Uint8Array.of(3)))
      expect(refused._tag === "Left" && refused.left._tag).toBe("StorageFull")

      // It steps down to a caught-up voter; the cluster goes on writing without it.
      let second = first
      for (let i = 0; i < 300 && second === first; i++) {
        yield* TestClock.adjust(tickMs)
        const current = yield* leader
        if (current !== first) second = current
      }
      expect(second).not.toBe(first)
      expect((yield* first.node.status).role).not.toBe("leader")
      for (const value of [4, 5, 6]) expect((yield* propose(second, value))._tag).toBe("Right")
      const condition = yield* first.node.condition
      expect(condition.diskFull.map((e) => e.part)).toEqual(["log"])
      expect(condition.stopped).toEqual([])

      // Space is back: without a restart, the old leader persists the backlog and catches up.
      first.disk.driver.setFull(false)
      for (let i = 0; i < 100 && first.watch.isFull("log"); i++) yield* TestClock.adjust(tickMs * 5)
      expect(first.watch.isFull("log")).toBe(false)
      expect((yield* propose(second, 7))._tag).toBe("Right")
      yield* TestClock.adjust(tickMs * 20)
      const expected = yield* commandsIn(second.log)
      // 2 was committed by the followers or dropped by the new leader; 3 was refused.
      expect(expected.filter((v) => v !== 2)).toEqual([1, 4, 5, 6, 7])
      for (const member of members.values()) {
        expect(yield* commandsIn(member.log)).toEqual(expected)
        expect(member.journal.applied).toEqual(expected)
      }
      expect((yield* first.node.condition).diskFull).toEqual([])
    }))

  it.scoped("a follower whose disk fills stops acknowledging (its match index stays), then resumes by itself", () =>
    Effect.gen(function*() {
      const { members, leader } = yield* cluster(3)
      const boss = yield* leader
      expect((yield* propose(boss, 1))._tag).toBe("Right")
      const [full, healthy] = [...members.values()].filter((m) => m !== boss)
      full!.disk.driver.setFull(true)
      for (const value of [2, 3, 4]) expect((yield* propose(boss, value))._tag).toBe("Right")
      yield* TestClock.adjust(tickMs * 20)
      expect(full!.watch.isFull("log")).toBe(true)
      const bossStatus = yield* boss.node.status
      const matchOf = (id: NodeId) => bossStatus.peers.find((p) => p.id === id)?.matchIndex ?? -1
      // Acknowledgements leave only after persistence: the leader never saw the full one get there.
      expect(matchOf(full!.node.id)).toBeLessThan(bossStatus.lastIndex)
      expect(matchOf(healthy!.node.id)).toBe(bossStatus.lastIndex)

      full!.disk.driver.setFull(false)
      for (let i = 0; i < 100 && full!.watch.isFull("log"); i++) yield* TestClock.adjust(tickMs * 5)
      yield* TestClock.adjust(tickMs * 20)
      const after = yield* boss.node.status
      expect(after.peers.find((p) => p.id === full!.node.id)?.matchIndex).toBe(after.lastIndex)
      expect(yield* commandsIn(full!.log)).toEqual([1, 2, 3, 4])
      expect(full!.journal.applied).toEqual([1, 2, 3, 4])
    }))

  it.scoped("the applier waits out a full disk under the state machine: the same entry is applied again, nothing is published before it succeeds", () =>
    Effect.gen(function*() {
      const { leader } = yield* cluster(1)
      const only = yield* leader
      const original = only.journal.apply
      let refusals = 3
      // Decided when the effect runs: the applier runs the same effect again to retry.
      only.journal.apply = (entry) =>
        Effect.suspend(() => {
          if (entry.kind !== "command" || refusals === 0) return original(entry)
          refusals--
          throw Object.assign(new Error("write /data/sqlite/databases/main.db: no space left on device"), { code: "ENOSPC", path: "/data/sqlite/databases/main.db" })
        })
      const appliedBefore = (yield* only.node.status).appliedIndex
      const write = yield* Effect.fork(Effect.either(only.node.propose(Uint8Array.of(42))))
      for (let i = 0; i < 5 && refusals > 0; i++) yield* TestClock.adjust(tickMs)
      expect(only.watch.isFull("state machine")).toBe(true)
      expect(write.unsafePoll()).toBeNull()
      expect(only.journal.applied).toEqual([])
      const during = yield* only.node.condition
      expect(during.diskFull[0]?.path).toBe("/data/sqlite/databases/main.db")
      for (let i = 0; i < 100 && write.unsafePoll() === null; i++) yield* TestClock.adjust(tickMs * 5)
      const result = yield* Fiber.join(write)
      expect(result).toMatchObject({ _tag: "Right", right: { result: 1 } })
      expect(only.journal.applied).toEqual([42])
      expect(only.watch.isFull("state machine")).toBe(false)
      expect((yield* only.node.status).appliedIndex).toBeGreaterThan(appliedBefore)
      expect((yield* only.node.condition).stopped).toEqual([])
    }))

  it.scoped("a snapshot that cannot be saved for a full disk is skipped and tried again later; nothing stops", () =>
    Effect.gen(function*() {
      let full = true
      let saved = 0
      let refused = 0
      const saveSnapshot = () =>
        Effect.suspend(() => {
          if (!full) return Effect.sync(() => void saved++)
          refused++
          return Effect.fail(new DiskFull({ op: "write", path: "/data/snapshots/snapshot-1.tmp", cause: null }))
        })
      const { leader } = yield* cluster(1, { saveSnapshot, snapshotEveryEntries: 3 })
      const only = yield* leader
      for (let v = 1; v <= 6; v++) expect((yield* propose(only, v))._tag).toBe("Right")
      yield* TestClock.adjust(tickMs * 5)
      expect(refused).toBeGreaterThan(0)
      expect(only.watch.isFull("snapshots")).toBe(true)
      // Skipped snapshots wait before the next try: not one attempt per applied batch.
      expect(refused).toBeLessThanOrEqual(2)
      full = false
      for (let v = 7; v <= 9; v++) expect((yield* propose(only, v))._tag).toBe("Right")
      for (let i = 0; i < 50 && saved === 0; i++) yield* TestClock.adjust(tickMs * 5)
      expect(saved).toBeGreaterThan(0)
      expect(only.watch.isFull("snapshots")).toBe(false)
      expect((yield* only.node.condition).stopped).toEqual([])
      expect(only.journal.applied).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9])
    }))

  it("describes an actor that gave up in one line", () => {
    const failure = new ActorFailed({ actor: "raft-1/log-writer", restarts: 0, cause: Cause.die(new DiskError({ op: "fdatasync", path: "/d/log-1.seg", code: "EIO", cause: null })) })
    expect(describeActorFailed(failure)).toBe("actor raft-1/log-writer gave up after 0 restarts (DiskError: fdatasync /d/log-1.seg: EIO)")
  })

  it.scoped("failed ends as soon as one actor gives up (the log writer on a disk error), and status stops claiming leadership", () =>
    Effect.gen(function*() {
      let broken = false
      const { leader } = yield* cluster(1, { persistFails: () => broken })
      const only = yield* leader
      const failed = yield* Effect.fork(Effect.either(only.node.failed))
      broken = true
      yield* Effect.fork(only.node.propose(Uint8Array.of(1)))
      for (let i = 0; i < 100 && failed.unsafePoll() === null; i++) yield* TestClock.adjust(tickMs)
      expect(failed.unsafePoll()).not.toBeNull()
      const result = yield* Fiber.join(failed)
      expect(result._tag).toBe("Left")
      if (result._tag === "Left") expect(result.left.actor).toMatch(/log-writer|raft-1$/)
      const status = yield* only.node.status
      expect(status.role).toBe("follower")
      expect(status.leader).toBeNull()
      expect((yield* only.node.condition).stopped.length).toBeGreaterThan(0)
    }))

  it.scoped("failed ends when the applier alone dies, though the Raft actor and the writer run on", () =>
    Effect.gen(function*() {
      const { leader } = yield* cluster(1)
      const only = yield* leader
      // A state machine defect that is not a full disk: the applier stops (restartsMax 0).
      only.journal.apply = () => Effect.die(new Error("state machine bug"))
      const failed = yield* Effect.fork(Effect.either(only.node.failed))
      yield* Effect.fork(only.node.propose(Uint8Array.of(1)))
      for (let i = 0; i < 100 && failed.unsafePoll() === null; i++) yield* TestClock.adjust(tickMs)
      expect(failed.unsafePoll()).not.toBeNull()
      const result = yield* Fiber.join(failed)
      expect(result._tag === "Left" && result.left.actor).toBe("raft-1/applier")
    }))
})
