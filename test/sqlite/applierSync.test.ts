// The Applier's optional `sync` hook (added for SqliteMachine): one call per mailbox batch that
// applied or restored something, none for a batch that did not, and before the applied index is
// published.
import type { SnapshotSource } from "../../src/actors/snapshotData.ts"
import { snapshotOfBytes } from "../../src/actors/snapshotData.ts"
import { describe, expect, it } from "@effect/vitest"
import { Deferred, Duration, Effect, Exit } from "effect"
import * as Applier from "../../src/actors/Applier.ts"
import type { StateMachine } from "../../src/actors/Applier.ts"
import type { RaftRequestError } from "../../src/actors/raftErrors.ts"
import type { Entry } from "../../src/raft/types.ts"

const emptySource: SnapshotSource = { meta: { index: 10, term: 1, config: { members: [] } }, sizeBytes: 0, crc32c: 0, read: () => Effect.succeed(new Uint8Array(0)) }

class Recording implements StateMachine<number> {
  readonly events: Array<string> = []
  readonly apply = (entry: Entry) => Effect.sync(() => {
    this.events.push(`apply ${entry.index}`)
    return entry.index
  })
  readonly snapshot = snapshotOfBytes(Effect.sync(() => new Uint8Array()))
  readonly restore = () => Effect.sync(() => void this.events.push("restore"))
  appliedSeen: Array<number> = []
  applied: Effect.Effect<number> | null = null
  readonly sync = Effect.gen(this, function*() {
    this.events.push("sync")
    if (this.applied !== null) this.appliedSeen.push(yield* this.applied)
  })
}

const barrier = (index: number): Entry => ({ kind: "barrier", term: 1, index })

/** An applier of `sm` with small bounds and no snapshot store. */
const applierOf = <SM extends StateMachine<number>>(sm: SM) =>
  Applier.make<number, SM>({
    name: "applier",
    stateMachine: sm,
    mailboxCapacity: 16,
    batchMax: 16,
    saveSnapshot: () => Effect.void,
    onSnapshotSaved: () => Effect.void,
    appliedIndex: 0
  })

describe("Applier sync hook", () => {
  it.scopedLive("syncs once per batch that applied entries, before publishing the applied index", () =>
    Effect.gen(function*() {
      const sm = new Recording()
      const applier = yield* applierOf(sm)
      sm.applied = applier.applied
      yield* applier.actor.send({ _tag: "Apply", entries: [barrier(1), barrier(2), barrier(3)], waiters: new Map() })
      yield* Effect.sleep(1)
      yield* applier.actor.send({ _tag: "Apply", entries: [barrier(2), barrier(3)], waiters: new Map() })
      yield* Effect.sleep(1)
      yield* applier.actor.send({ _tag: "Restore", meta: { index: 10, term: 1, config: { members: [] } }, source: emptySource })
      yield* Effect.sleep(1)
      expect(sm.events).toEqual(["apply 1", "apply 2", "apply 3", "sync", "restore", "sync"])
      expect(sm.appliedSeen).toEqual([0, 3])
      expect(yield* applier.applied).toBe(10)
    }))
})

/** With the plain hooks: `applyNow` for most entries (`apply` for those it leaves, and for the
 * retry of one that died of a full disk), `syncNow` unless a sync is due. */
class Plain implements StateMachine<number> {
  readonly events: Array<string> = []
  /** Entries `applyNow` leaves to `apply`. */
  readonly later = new Set<number>()
  /** An entry whose first `applyNow` throws ENOSPC. */
  failOnce = 0
  /** What `syncNow` answers (false: `sync` must run). */
  syncDoneNow = true
  appliedSeen: Array<number> = []
  applied: (() => number) | null = null
  readonly apply = (entry: Entry) => Effect.sync(() => {
    this.events.push(`apply ${entry.index}`)
    return entry.index
  })
  readonly applyNow = (entry: Entry): number | typeof Applier.applyLater => {
    if (this.later.has(entry.index)) return Applier.applyLater
    if (this.failOnce === entry.index) {
      this.failOnce = 0
      this.events.push(`applyNow ${entry.index} ENOSPC`)
      throw Object.assign(new Error("no space"), { code: "ENOSPC" })
    }
    this.events.push(`applyNow ${entry.index}`)
    return entry.index
  }
  readonly snapshot = snapshotOfBytes(Effect.sync(() => new Uint8Array()))
  readonly restore = () => Effect.sync(() => void this.events.push("restore"))
  readonly syncNow = () => {
    this.events.push(this.syncDoneNow ? "syncNow" : "syncNow: due")
    if (this.syncDoneNow) this.appliedSeen.push(this.applied!())
    return this.syncDoneNow
  }
  readonly sync = Effect.sync(() => {
    this.events.push("sync")
    this.appliedSeen.push(this.applied!())
  })
}

describe("Applier plain path", () => {
  it.scopedLive("applies with applyNow and syncs with syncNow, falls back to apply, sync and the full-disk retry in order, and publishes before answering", () =>
    Effect.gen(function*() {
      const sm = new Plain()
      const applier = yield* applierOf(sm)
      sm.applied = applier.appliedNow
      const answered: Array<string> = []
      const answer = (index: number) => (exit: Exit.Exit<Applier.Applied<number>, unknown>) => {
        answered.push(`${index}: ${Exit.isSuccess(exit) ? exit.value.result : "failed"}, published ${applier.appliedNow()}`)
      }
      // One batch: 1 and 2 plain, 3 left to `apply`, 4 plain after it, 5 dies of ENOSPC once.
      sm.later.add(3)
      sm.failOnce = 5
      const waiters = new Map([[2, answer(2)], [5, answer(5)]])
      yield* applier.actor.send({ _tag: "Apply", entries: [barrier(1), barrier(2), barrier(3), barrier(4), barrier(5)], waiters })
      // A read waiting for 6 is answered once 6 is applied, in the next batch, whose sync is due.
      const read = yield* Deferred.make<unknown, RaftRequestError>()
      yield* applier.actor.send({ _tag: "Read", index: 6, run: () => `read at ${applier.appliedNow()}`, reply: read })
      yield* Effect.sleep(Duration.millis(400))
      expect(answered).toEqual(["2: 2, published 5", "5: 5, published 5"])
      sm.syncDoneNow = false
      yield* applier.actor.send({ _tag: "Apply", entries: [barrier(6)], waiters: new Map() })
      // Runs in the batch, before the sync and the publication: a state at or after its index.
      expect(yield* Deferred.await(read)).toBe("read at 5")
      yield* Effect.sleep(Duration.millis(10))
      expect(sm.events).toEqual([
        "applyNow 1", "applyNow 2", "apply 3", "applyNow 4", "applyNow 5 ENOSPC", "apply 5", "syncNow",
        "applyNow 6", "syncNow: due", "sync"
      ])
      // The applied index is published after each batch's sync, never before.
      expect(sm.appliedSeen).toEqual([0, 5])
      expect(applier.appliedNow()).toBe(6)
    }))
})
