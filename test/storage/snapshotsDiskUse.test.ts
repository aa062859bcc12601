// The snapshot store's disk-use rule (issue 17: a node's data dir ≤ 2× its databases plus the
// log's retention). A 2 GiB run found a leader holding two snapshots beside its database after a
// join (the one sent to the joiner was kept past `retain` for the transfer, and stayed until the
// next snapshot's commit), 3× the database; a snapshot taken then would have been a fourth copy.
// The rule: a snapshot kept for a transfer goes when that transfer ends; none is written beside
// two held; a start keeps only the newest `retain`.
import fs from "node:fs"
import { Context, Effect, Layer } from "effect"
import { describe, expect, it } from "vitest"
import { tempDirs } from "../tempDirs.ts"
import { Disk, nodeDisk } from "../../src/storage/Disk.ts"
import { Snapshots, snapshotFileName, writeSnapshotFrom } from "../../src/storage/Snapshots.ts"
import type { SnapshotsService } from "../../src/storage/Snapshots.ts"
import type { SnapshotMeta } from "../../src/raft/types.ts"

const newDir = tempDirs("tqlite-snapdisk-")

const config = { members: [{ id: 1, address: "a:1", role: "voter" as const }] }
const at = (index: number): SnapshotMeta => ({ index, term: 1, config })
const open = (dir: string) => Effect.map(Layer.build(Snapshots.layer({ dir, retain: 1 }).pipe(Layer.provide(Layer.succeed(Disk, nodeDisk)))), (context) => Context.get(context, Snapshots))
const take = (snapshots: SnapshotsService, index: number) => writeSnapshotFrom(snapshots, at(index), (sink) => sink.write(new Uint8Array(2000).fill(index)))
const snapshotFiles = (dir: string) => fs.readdirSync(dir).filter((name) => name.endsWith(".snap") || name.endsWith(".tmp")).sort()

/** Polls (real time, bounded) until `done`: the store prunes in the background. */
const eventually = (done: () => boolean) =>
  Effect.gen(function*() {
    for (let i = 0; i < 200 && !done(); i++) yield* Effect.sleep("10 millis")
  })

describe("snapshot store disk use", () => {
  it("a snapshot kept for a transfer goes when the transfer ends, with no snapshot taken after", async () => {
    const dir = newDir()
    const files = await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
      const snapshots = yield* open(dir)
      yield* take(snapshots, 10)
      const source = yield* snapshots.source(at(10))
      const release = source.pin!()
      yield* take(snapshots, 20)
      const whileSending = snapshotFiles(dir)
      release()
      yield* eventually(() => snapshotFiles(dir).length === 1)
      return { whileSending, after: snapshotFiles(dir) }
    })))
    expect(files.whileSending).toEqual([snapshotFileName(10, 1), snapshotFileName(20, 1)])
    expect(files.after).toEqual([snapshotFileName(20, 1)])
  })

  it("no snapshot is written beside two held (one pinned): SnapshotSkipped until the transfer ends", async () => {
    const dir = newDir()
    const outcome = await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
      const snapshots = yield* open(dir)
      yield* take(snapshots, 10)
      const release = (yield* snapshots.source(at(10))).pin!()
      yield* take(snapshots, 20)
      const refused = yield* Effect.either(take(snapshots, 30))
      const during = snapshotFiles(dir)
      release()
      yield* eventually(() => snapshotFiles(dir).length === 1)
      yield* take(snapshots, 30)
      return { refused, during, after: snapshotFiles(dir) }
    })))
    expect(outcome.refused._tag).toBe("Left")
    if (outcome.refused._tag === "Left") expect((outcome.refused.left as { _tag: string })._tag).toBe("SnapshotSkipped")
    // Nothing of the refused one was written.
    expect(outcome.during).toEqual([snapshotFileName(10, 1), snapshotFileName(20, 1)])
    expect(outcome.after).toEqual([snapshotFileName(30, 1)])
  })

  it("a start keeps only the newest `retain` snapshots (an older one a stopped transfer held goes once the node serves)", async () => {
    const dir = newDir()
    // What a node stopped during a transfer leaves: the pinned snapshot beside the newest.
    await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
      const snapshots = yield* open(dir)
      yield* take(snapshots, 10)
      ;(yield* snapshots.source(at(10))).pin!()
      yield* take(snapshots, 20)
    })))
    expect(snapshotFiles(dir)).toEqual([snapshotFileName(10, 1), snapshotFileName(20, 1)])
    const seen = await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
      const snapshots = yield* open(dir)
      const listed = yield* snapshots.list
      const latest = yield* snapshots.latest
      yield* snapshots.removeLeftovers
      return { listed, latest: latest?.index, files: fs.readdirSync(dir).sort() }
    })))
    expect(seen.listed).toEqual([{ index: 20, term: 1 }])
    expect(seen.latest).toBe(20)
    expect(seen.files).toEqual([snapshotFileName(20, 1)])
  })
})
