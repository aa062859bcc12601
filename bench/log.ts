// The Raft log's throughput on the real disk (not a test): `npm run bench -- log [--rounds R]
// [--dir D]`.
//
// 1. Appends of 100 B, 4 KiB and 64 KiB entries, a group of entries per persist (one fdatasync
//    each), beside a raw loop that writes the same payload bytes per fdatasync with bare syscalls
//    (writeSync + fdatasyncSync) and with the calls the store's Disk uses (writeSync + fdatasync on
//    the thread pool). Same number of fsyncs (segments are made large enough not to roll; a roll
//    adds one fdatasync and a directory fsync per segment). The three take turns fsync by fsync;
//    the median round is reported.
// 2. 64 concurrent appenders, each waiting for its entry to be durable before sending the next:
//    a log writer that drains everything waiting into one persist (group commit), vs one persist
//    (one fdatasync) per entry. The appenders and the writer's queue are plain promises, so the
//    numbers are the store's, not an actor runtime's.
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { performance } from "node:perf_hooks"
import { Effect, Layer, Logger, LogLevel } from "effect"
import type { Entry } from "../src/raft/types.ts"
import { Disk } from "../src/storage/Disk.ts"
import type { DiskService } from "../src/storage/Disk.ts"
import type { LogStoreService, PersistBatch } from "../src/storage/LogStore.ts"
import { groupPersistBatches } from "../src/storage/LogStore.ts"
import { SegmentLog } from "../src/storage/SegmentLog.ts"

interface Options {
  readonly rounds: number
  readonly root: string
}

function parseOptions(args: ReadonlyArray<string>): Options {
  const value = (name: string): string | undefined => {
    const at = args.indexOf(`--${name}`)
    return at >= 0 ? args[at + 1] : undefined
  }
  const rounds = Number(value("rounds") ?? 5)
  if (!Number.isInteger(rounds) || rounds < 1) throw new Error("--rounds wants a positive integer")
  return { rounds, root: value("dir") ?? os.tmpdir() }
}

// --- counting fsyncs ---------------------------------------------------------------------------

const counters = { fdatasync: 0, fsyncDir: 0, syncMs: 0 }

const timedSync = <E>(sync: Effect.Effect<void, E>): Effect.Effect<void, E> =>
  Effect.suspend(() => {
    const start = performance.now()
    return Effect.ensuring(sync, Effect.sync(() => (counters.syncMs += performance.now() - start)))
  })

const countingDisk: Layer.Layer<Disk> = Layer.effect(
  Disk,
  Effect.map(Disk, (disk): DiskService => ({
    ...disk,
    open: (filePath, mode) =>
      Effect.map(disk.open(filePath, mode), (file) => ({
        ...file,
        sync: Effect.zipRight(Effect.sync(() => counters.fdatasync++), timedSync(file.sync))
      })),
    fsyncDir: (dir) => Effect.zipRight(Effect.sync(() => counters.fsyncDir++), timedSync(disk.fsyncDir(dir)))
  }))
).pipe(Layer.provide(Disk.layerNode))

const quiet = <A, E, R>(self: Effect.Effect<A, E, R>) => Logger.withMinimumLogLevel(self, LogLevel.Warning)

const withStore = <A, E>(dir: string, segmentBytesMax: number, use: (store: LogStoreService) => Effect.Effect<A, E>) =>
  Effect.runPromise(quiet(Effect.scoped(Effect.flatMap(
    SegmentLog.open({ dir, clusterId: "bench", segmentBytesMax }).pipe(Effect.provide(countingDisk)),
    use
  ))))

// --- part 1: store vs raw loop -----------------------------------------------------------------

interface Case {
  readonly label: string
  readonly entryBytes: number
  readonly entriesPerFsync: number
  readonly fsyncs: number
}

const cases: ReadonlyArray<Case> = [
  { label: "100 B", entryBytes: 100, entriesPerFsync: 64, fsyncs: 300 },
  { label: "4 KiB", entryBytes: 4096, entriesPerFsync: 64, fsyncs: 150 },
  { label: "64 KiB", entryBytes: 65536, entriesPerFsync: 16, fsyncs: 60 }
]

/** One round: the store, the raw sync loop and the raw thread-pool loop take turns fsync by
 * fsync, so all three see the same disk (its latency drifts, and other processes share it). */
interface RoundResult {
  readonly store: number
  readonly rawSync: number
  readonly rawPool: number
  readonly storeFsyncs: number
  /** Time of the store's persists outside fdatasync, and of the raw loop's writeSync calls. */
  readonly storeOutsideSyncMs: number
  readonly rawWriteMs: number
}

async function round(work: string, c: Case): Promise<RoundResult> {
  const payload = new Uint8Array(c.entryBytes).fill(7)
  const rawBuffer = new Uint8Array(c.entryBytes * c.entriesPerFsync).fill(7)
  const dir = path.join(work, `store-${c.entryBytes}`)
  const rawFiles = [path.join(work, "raw-sync.dat"), path.join(work, "raw-pool.dat")] as const
  const fds = rawFiles.map((file) => fs.openSync(file, "w"))
  const [syncFd, poolFd] = fds as [number, number]
  const fdatasync = (fd: number) =>
    Effect.async<void, Error>((resume) => fs.fdatasync(fd, (error) => resume(error ? Effect.fail(error) : Effect.void)))
  try {
    return await withStore(dir, 2 ** 31, (store) =>
      Effect.gen(function* () {
        const before = counters.fdatasync + counters.fsyncDir
        const syncMsBefore = counters.syncMs
        let rawWriteMs = 0
        let storeMs = 0
        let rawSyncMs = 0
        let rawPoolMs = 0
        let index = 0
        let position = 0
        for (let f = 0; f < c.fsyncs; f++) {
          const entries: Array<Entry> = []
          let t = performance.now()
          for (let i = 0; i < c.entriesPerFsync; i++) entries.push({ kind: "command", index: ++index, term: 1, data: payload })
          yield* store.persist([{ entries }])
          storeMs += performance.now() - t
          t = performance.now()
          fs.writeSync(syncFd, rawBuffer, 0, rawBuffer.byteLength, position)
          rawWriteMs += performance.now() - t
          fs.fdatasyncSync(syncFd)
          rawSyncMs += performance.now() - t
          t = performance.now()
          fs.writeSync(poolFd, rawBuffer, 0, rawBuffer.byteLength, position)
          yield* fdatasync(poolFd)
          rawPoolMs += performance.now() - t
          position += rawBuffer.byteLength
        }
        return {
          store: storeMs,
          rawSync: rawSyncMs,
          rawPool: rawPoolMs,
          storeFsyncs: counters.fdatasync + counters.fsyncDir - before,
          storeOutsideSyncMs: storeMs - (counters.syncMs - syncMsBefore),
          rawWriteMs
        }
      }))
  } finally {
    for (const fd of fds) fs.closeSync(fd)
    for (const file of rawFiles) fs.rmSync(file, { force: true })
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

const median = (values: ReadonlyArray<number>): number => {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}

async function storeVersusRaw(options: Options, work: string): Promise<void> {
  console.log(`\n1. appends, one fdatasync per group, store and raw loops taking turns; median of ${options.rounds} rounds`)
  const header = [
    "entry", "entries/fsync", "fsyncs", "store entries/s", "store MB/s", "raw sync entries/s", "raw pool entries/s",
    "store/raw sync", "store/raw pool", "store µs/persist outside fsync", "raw µs/write"
  ]
  const rows: Array<Array<string>> = []
  for (const c of cases) {
    const store: Array<number> = []
    const rawSync: Array<number> = []
    const rawPool: Array<number> = []
    let storeFsyncs = 0
    const outside: Array<number> = []
    const rawWrite: Array<number> = []
    for (let r = 0; r < options.rounds; r++) {
      const result = await round(work, c)
      storeFsyncs = result.storeFsyncs
      outside.push(result.storeOutsideSyncMs)
      rawWrite.push(result.rawWriteMs)
      store.push(result.store)
      rawSync.push(result.rawSync)
      rawPool.push(result.rawPool)
    }
    const entries = c.fsyncs * c.entriesPerFsync
    const perSecond = (ms: number) => (entries / ms) * 1000
    const mbPerSecond = (ms: number) => (entries * c.entryBytes) / 1e6 / (ms / 1000)
    const s = median(store)
    const rs = median(rawSync)
    const rp = median(rawPool)
    rows.push([
      c.label,
      String(c.entriesPerFsync),
      `${storeFsyncs} / ${c.fsyncs}`,
      perSecond(s).toFixed(0),
      mbPerSecond(s).toFixed(1),
      perSecond(rs).toFixed(0),
      perSecond(rp).toFixed(0),
      (s / rs).toFixed(2),
      (s / rp).toFixed(2),
      ((median(outside) * 1000) / c.fsyncs).toFixed(0),
      ((median(rawWrite) * 1000) / c.fsyncs).toFixed(0)
    ])
  }
  printTable(header, rows)
  console.log("fsyncs: store (fdatasync + directory fsync, counted) / raw loop. store/raw: time ratio, 1.00 = no overhead.")
  console.log("outside fsync: what the store adds (encode, checksum, write, Effect) beside the raw loop's bare write.")
}

// --- part 2: concurrent appenders --------------------------------------------------------------

/** A log writer over promises: appenders enqueue an entry and wait; the writer takes everything
 * waiting (group) or one entry at a time (perEntry), persists it, and releases the waiters. Plain
 * promises keep the harness's own cost (~1 µs per entry) out of what is measured. */
class LogWriter {
  private readonly waiting: Array<{ readonly data: Uint8Array; readonly done: () => void }> = []
  private wake: (() => void) | null = null
  private last = 0
  private stopped = false

  constructor(private readonly store: LogStoreService, private readonly mode: "group" | "perEntry") {}

  append(data: Uint8Array): Promise<void> {
    return new Promise((done) => {
      this.waiting.push({ data, done })
      this.wake?.()
    })
  }

  async run(): Promise<void> {
    while (!this.stopped) {
      if (this.waiting.length === 0) {
        await new Promise<void>((resolve) => (this.wake = resolve))
        this.wake = null
        continue
      }
      const taken = this.mode === "group" ? this.waiting.splice(0, this.waiting.length) : this.waiting.splice(0, 1)
      const entries: Array<Entry> = taken.map((append) => ({ kind: "command", index: ++this.last, term: 1, data: append.data }))
      const batches: ReadonlyArray<PersistBatch> = [{ entries }]
      for (const group of groupPersistBatches(batches)) await Effect.runPromise(this.store.persist(group))
      for (const append of taken) append.done()
    }
  }

  stop(): void {
    this.stopped = true
    this.wake?.()
  }
}

async function appenders(options: Options, work: string, appenderCount: number, entryBytes: number, durationMs: number) {
  const payload = new Uint8Array(entryBytes).fill(3)
  const run = (mode: "group" | "perEntry", dir: string) =>
    withStore(dir, 64 * 1024 * 1024, (store) =>
      Effect.promise(async () => {
        const fsyncsBefore = counters.fdatasync
        const writer = new LogWriter(store, mode)
        const running = writer.run()
        let completed = 0
        const start = performance.now()
        const deadline = start + durationMs
        const appender = async () => {
          while (performance.now() < deadline) {
            await writer.append(payload)
            completed++
          }
        }
        await Promise.all(Array.from({ length: appenderCount }, appender))
        const ms = performance.now() - start
        writer.stop()
        await running
        return { perSecond: (completed / ms) * 1000, fsyncs: counters.fdatasync - fsyncsBefore, completed }
      }))
  const group: Array<number> = []
  const perEntry: Array<number> = []
  let groupFsyncs = 0
  let groupCompleted = 0
  for (let round = 0; round < Math.min(options.rounds, 3); round++) {
    const g = await run("group", path.join(work, `group-${round}`))
    group.push(g.perSecond)
    groupFsyncs = g.fsyncs
    groupCompleted = g.completed
    perEntry.push((await run("perEntry", path.join(work, `single-${round}`))).perSecond)
    fs.rmSync(path.join(work, `group-${round}`), { recursive: true, force: true })
    fs.rmSync(path.join(work, `single-${round}`), { recursive: true, force: true })
  }
  const g = median(group)
  const p = median(perEntry)
  return [
    String(appenderCount),
    `${entryBytes} B`,
    g.toFixed(0),
    (groupCompleted / Math.max(groupFsyncs, 1)).toFixed(1),
    p.toFixed(0),
    (g / p).toFixed(1)
  ]
}

function printTable(header: ReadonlyArray<string>, rows: ReadonlyArray<ReadonlyArray<string>>): void {
  console.log(`| ${header.join(" | ")} |`)
  console.log(`|${header.map(() => "---").join("|")}|`)
  for (const row of rows) console.log(`| ${row.join(" | ")} |`)
}

export async function main(args: ReadonlyArray<string>): Promise<void> {
  const options = parseOptions(args)
  const work = fs.mkdtempSync(path.join(options.root, "tqlite-bench-log-"))
  try {
    console.log(`log bench in ${work} (node ${process.version}, ${os.cpus().length} cpus)`)
    await storeVersusRaw(options, work)
    console.log(`\n2. concurrent appenders, each waits for durability; ~2 s per run, median of ${Math.min(options.rounds, 3)}`)
    const rows = [
      await appenders(options, work, 64, 100, 2000),
      await appenders(options, work, 64, 4096, 2000)
    ]
    printTable(["appenders", "entry", "group commit entries/s", "entries/fsync", "fsync per entry entries/s", "ratio"], rows)
  } finally {
    fs.rmSync(work, { recursive: true, force: true })
  }
}
