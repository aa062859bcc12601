// SqliteMachine snapshots as streams: taking one of a tens-of-MB database leaves the event loop
// running (chunks, with the loop released between them) and installs byte-identical files on
// another machine; an install that fails at any chunk leaves the old files, and one cut after
// some renames is finished from the boot snapshot at the next start.
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { monitorEventLoopDelay } from "node:perf_hooks"
import Database from "better-sqlite3"
import { describe, expect, it } from "@effect/vitest"
import { Context, Effect, Layer } from "effect"
import type { SnapshotSource } from "../../src/actors/snapshotData.ts"
import { yieldEventLoop } from "../../src/actors/snapshotData.ts"
import type { SnapshotMeta } from "../../src/raft/types.ts"
import { SqliteMachine } from "../../src/sqlite/SqliteMachine.ts"
import { Disk } from "../../src/storage/Disk.ts"
import { Snapshots, writeSnapshotFrom } from "../../src/storage/Snapshots.ts"

const meta: SnapshotMeta = { index: 100, term: 3, config: { members: [{ id: 1, address: "a:1", role: "voter" }] } }

function tempDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), "tqlite-snapstream-"))
}

/** A database file of about `megabytes` MB under `<dataDir>/databases/<name>.db`. */
function makeDatabase(dataDir: string, name: string, megabytes: number, seed: number): void {
  fs.mkdirSync(path.join(dataDir, "databases"), { recursive: true })
  const db = new Database(path.join(dataDir, "databases", `${name}.db`))
  db.pragma("page_size=4096")
  db.pragma("journal_mode=DELETE")
  db.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, seed INTEGER, v BLOB)")
  const insert = db.prepare("INSERT INTO t(seed, v) VALUES (?, randomblob(65536))")
  db.transaction(() => {
    for (let i = 0; i < megabytes * 16; i++) insert.run(seed)
  })()
  db.close()
}

const open = (dataDir: string, boot: { readonly meta: SnapshotMeta; readonly load: Effect.Effect<SnapshotSource> } | null = null, betweenChunks?: Effect.Effect<void>) =>
  SqliteMachine.open({ dataDir, nodeId: 1, pageSize: 4096, fsync: "sync", bootSnapshot: boot, ...(betweenChunks !== undefined ? { betweenChunks } : {}) })

const store = (dir: string) =>
  Effect.map(Layer.build(Snapshots.layer({ dir }).pipe(Layer.provide(Disk.layerNode))), (context) => Context.get(context, Snapshots)).pipe(Effect.orDie)

const fileOf = (dataDir: string, name: string) => fs.readFileSync(path.join(dataDir, "databases", `${name}.db`))

describe("SqliteMachine snapshots as streams", () => {
  it.scopedLive("taking a 64 MB snapshot leaves the event loop running; it installs byte-identical elsewhere", () =>
    Effect.gen(function*() {
      const a = tempDir()
      const b = tempDir()
      yield* Effect.addFinalizer(() => Effect.sync(() => [a, b].forEach((dir) => fs.rmSync(dir, { recursive: true, force: true }))))
      makeDatabase(a, "big", 64, 1)
      makeDatabase(a, "small", 1, 2)
      // The default between two chunks (releasing the event loop once), counted.
      let released = 0
      const machine = yield* open(a, null, Effect.zipRight(Effect.sync(() => void released++), yieldEventLoop))
      const snapshots = yield* store(path.join(a, "snapshots"))
      // How long the event loop is held, and how often it turns, while the snapshot is taken.
      const delay = monitorEventLoopDelay({ resolution: 1 })
      let turns = 0
      const ticker = setInterval(() => turns++, 1)
      delay.enable()
      const started = performance.now()
      yield* Effect.orDie(writeSnapshotFrom(snapshots, meta, machine.snapshot))
      const tookMs = performance.now() - started
      delay.disable()
      clearInterval(ticker)
      const maxDelayMs = delay.max / 1e6
      console.log(`snapshot of ${(fileOf(a, "big").byteLength / 1e6).toFixed(1)} MB: ${tookMs.toFixed(0)} ms, event loop max delay ${maxDelayMs.toFixed(1)} ms, ${turns} timer turns`)
      // The loop was released after every 1 MiB chunk (never the whole file in one piece, as the
      // old encoder did), and timers ran throughout: at least once per 4 MiB copied.
      expect(released).toBeGreaterThanOrEqual(Math.floor(fileOf(a, "big").byteLength / (1024 * 1024)))
      expect(turns).toBeGreaterThanOrEqual(16)
      machine.close()

      const source = yield* Effect.orDie(snapshots.source(meta))
      const target = yield* open(b)
      yield* target.restore(meta, source)
      expect(Buffer.compare(fileOf(a, "big"), fileOf(b, "big"))).toBe(0)
      expect(Buffer.compare(fileOf(a, "small"), fileOf(b, "small"))).toBe(0)
      expect(target.appliedIndex).toBe(meta.index)
      target.close()
      const db = new Database(path.join(b, "databases", "big.db"), { readonly: true })
      expect(db.pragma("integrity_check", { simple: true })).toBe("ok")
      db.close()
    }), 120_000)

  it.scopedLive("an install that fails at any chunk leaves the old files; one cut after some renames is finished at the next start", () =>
    Effect.gen(function*() {
      const a = tempDir()
      const b = tempDir()
      yield* Effect.addFinalizer(() => Effect.sync(() => [a, b].forEach((dir) => fs.rmSync(dir, { recursive: true, force: true }))))
      makeDatabase(a, "one", 2, 1)
      makeDatabase(a, "two", 2, 2)
      const machine = yield* open(a)
      const snapshots = yield* store(path.join(a, "snapshots"))
      yield* Effect.orDie(writeSnapshotFrom(snapshots, meta, machine.snapshot))
      machine.close()
      const source = yield* Effect.orDie(snapshots.source(meta))
      makeDatabase(b, "one", 1, 3)
      makeDatabase(b, "two", 1, 4)
      const old = { one: fileOf(b, "one"), two: fileOf(b, "two") }
      // A source that dies at its k-th read: a crash (or a failed read) at that point of the install.
      const chunks = Math.ceil(source.sizeBytes / (1024 * 1024)) + 2
      for (let k = 0; k < chunks; k++) {
        let reads = 0
        const failing: SnapshotSource = { ...source, read: (offset, length) => (reads++ === k ? Effect.dieMessage(`injected failure at read ${k}`) : source.read(offset, length)) }
        const target = yield* open(b)
        const exit = yield* Effect.exit(target.restore(meta, failing))
        target.close()
        if (exit._tag === "Success") break
        // Reopened as after a crash: the old state, no temp file left.
        const reopened = yield* open(b)
        reopened.close()
        expect(Buffer.compare(fileOf(b, "one"), old.one)).toBe(0)
        expect(Buffer.compare(fileOf(b, "two"), old.two)).toBe(0)
        expect(fs.readdirSync(path.join(b, "databases")).filter((name) => name.endsWith(".tmp"))).toEqual([])
      }
      // Cut after the first rename, before the record: "one" is new, "two" old, the record old.
      fs.copyFileSync(path.join(a, "databases", "one.db"), path.join(b, "databases", "one.db"))
      const booted = yield* open(b, { meta, load: Effect.succeed(source) })
      expect(booted.stats.restores).toBe(1)
      expect(booted.appliedIndex).toBe(meta.index)
      booted.close()
      expect(Buffer.compare(fileOf(b, "one"), fileOf(a, "one"))).toBe(0)
      expect(Buffer.compare(fileOf(b, "two"), fileOf(a, "two"))).toBe(0)
    }), 120_000)
})
