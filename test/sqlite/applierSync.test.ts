// The Applier's optional `sync` hook (added for SqliteMachine): one call per mailbox batch that
// applied or restored something, none for a batch that did not, and before the applied index is
// published.
import type { SnapshotSource } from "../../src/actors/snapshotData.ts"
import { snapshotOfBytes } from "../../src/actors/snapshotData.ts"
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as Applier from "../../src/actors/Applier.ts"
import type { StateMachine } from "../../src/actors/Applier.ts"
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

describe("Applier sync hook", () => {
  it.scopedLive("syncs once per batch that applied entries, before publishing the applied index", () =>
    Effect.gen(function*() {
      const sm = new Recording()
      const applier = yield* Applier.make<number, Recording>({
        name: "applier",
        stateMachine: sm,
        mailboxCapacity: 16,
        batchMax: 16,
        saveSnapshot: () => Effect.void,
        onSnapshotSaved: () => Effect.void,
        appliedIndex: 0
      })
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
