// Leaders' checkpoints off the event loop (issue 17). `wal_checkpoint(TRUNCATE)` copies every
// frame of the WAL into the main file: for the 20 MiB WAL a large transaction leaves, 35–67 ms
// on an idle dev VM and 100–400 ms under load, on the node's one JavaScript thread (heartbeats,
// peer links and every client wait behind it). Here it runs in a worker thread, on a connection
// of its own opened for the checkpoint and closed after it; the main thread goes on.
//
// The rules that make another connection's checkpoint the same as the writer's own
// (LeaderDatabase.checkpointOffLoop keeps them):
// - It runs only when the writer's checkpoint would: every frame Raft-committed, no transaction
//   open, the writer waiting for it (the writer core's checkpoint in flight), so TRUNCATE's
//   writer lock never meets the writer, whose busy timeout is 0.
// - `synchronous=OFF` on that connection, as the writer's checkpoint ran: the main file is
//   fdatasynced on the thread pool before the machine records it (SqliteMachine.checkpointed).
// - The worker's connection is never the last one open on the database: closing the last
//   read-write connection checkpoints the whole WAL (uncommitted frames too) and deletes it. So
//   nothing closes a LeaderDatabase's connections while its checkpoint runs: `close` first
//   waits for it (`waitIdle`, synchronously, on a flag the worker clears: a step-down that
//   arrives in the middle of one, rare, waits for at most one checkpoint).
// One worker per process, started at the first checkpoint (one thread and one SQLite connection
// at a time, not one per database: it is idle nearly always), requests served one at a time;
// each database has at most one outstanding (its writer waits for it), so the queue is bounded
// by the number of databases led.
import { createRequire } from "node:module"
import { pathToFileURL } from "node:url"
import { Worker } from "node:worker_threads"
import { Effect } from "effect"
import { assert } from "../assert.ts"

export interface WorkerCheckpointResult {
  /** 1 when a reader kept the checkpoint from completing (the WAL stays). */
  readonly busy: number
  readonly walFrames: number
  readonly checkpointedFrames: number
  /** How long the checkpoint itself took in the worker. */
  readonly durationMs: number
}

/** A checkpoint in the worker that SQLite refused (SQLITE_FULL: the main file cannot grow), or
 * the worker died. `code`: SQLite's error code name when it was SQLite's. */
export class CheckpointFailed extends Error {
  readonly _tag = "CheckpointFailed"
  constructor(readonly code: string | null, message: string) {
    super(message)
  }
}

/** A checkpoint being run: `idle` is 1 until the worker is done with the database (its
 * connection closed), then 0 (Atomics.notify). */
export interface CheckpointTicket {
  readonly idle: Int32Array
  readonly result: Effect.Effect<WorkerCheckpointResult, CheckpointFailed>
}

interface Reply {
  readonly id: number
  readonly ok: boolean
  readonly busy?: number
  readonly log?: number
  readonly checkpointed?: number
  readonly durationMs?: number
  readonly code?: string | null
  readonly message?: string
}

// CommonJS inside the worker (an eval'd script): better-sqlite3 is required by the path the
// parent resolved, so it works from sources, from tsc's output and from the bundle alike.
const workerSource = `
const { parentPort, workerData } = require("node:worker_threads")
const Database = require(workerData.sqlitePath)
parentPort.on("message", (m) => {
  let db = null
  let reply
  try {
    db = new Database(m.databasePath, { fileMustExist: true, timeout: m.busyTimeoutMs })
    db.pragma("synchronous=OFF")
    db.pragma("cache_size=16")
    const started = performance.now()
    const row = db.pragma("wal_checkpoint(" + m.mode + ")")[0]
    reply = row === undefined
      ? { id: m.id, ok: true, busy: 1, log: -1, checkpointed: -1, durationMs: performance.now() - started }
      : { id: m.id, ok: true, busy: row.busy, log: row.log, checkpointed: row.checkpointed, durationMs: performance.now() - started }
  } catch (error) {
    reply = { id: m.id, ok: false, code: typeof error.code === "string" ? error.code : null, message: String(error && error.message || error) }
  } finally {
    try { if (db !== null) db.close() } catch {}
    Atomics.store(m.idle, 0, 0)
    Atomics.notify(m.idle, 0)
  }
  parentPort.postMessage(reply)
})
`

/** This module's URL: import.meta's in ESM (tsx, tsc's output); in the CommonJS bundle
 * (dist/tqlite.cjs) import.meta is empty and __filename names the bundle. */
function moduleUrl(): string {
  const url = (import.meta as { readonly url?: string }).url
  return typeof url === "string" ? url : pathToFileURL(__filename).href
}

export class CheckpointWorker {
  private worker: Worker | null = null
  private nextId = 1
  private readonly waiting = new Map<number, (reply: Reply) => void>()
  /** Checkpoints run so far (tests). */
  runs = 0

  /** Starts a checkpoint of `databasePath` in `mode` ("TRUNCATE" or "PASSIVE"). */
  start(databasePath: string, mode: "TRUNCATE" | "PASSIVE", busyTimeoutMs: number): CheckpointTicket {
    const worker = this.ensureWorker()
    const id = this.nextId++
    const idle = new Int32Array(new SharedArrayBuffer(4))
    idle[0] = 1
    const answered = new Promise<Reply>((resolve) => this.waiting.set(id, resolve))
    // Referenced while a checkpoint runs (a process must not exit under it), not while idle.
    if (this.waiting.size === 1) worker.ref()
    worker.postMessage({ id, databasePath, mode, busyTimeoutMs, idle })
    this.runs++
    const result = Effect.flatMap(Effect.promise(() => answered), (reply) =>
      reply.ok
        ? Effect.succeed({ busy: reply.busy ?? 1, walFrames: reply.log ?? -1, checkpointedFrames: reply.checkpointed ?? -1, durationMs: reply.durationMs ?? 0 })
        : Effect.fail(new CheckpointFailed(reply.code ?? null, reply.message ?? "the checkpoint failed")))
    return { idle, result }
  }

  /** Stops the thread (a checkpoint running in it is waited for by its database's close). */
  close(): void {
    const worker = this.worker
    this.worker = null
    if (worker !== null) void worker.terminate()
  }

  private ensureWorker(): Worker {
    if (this.worker !== null) return this.worker
    const sqlitePath = createRequire(moduleUrl()).resolve("better-sqlite3")
    const worker = new Worker(workerSource, { eval: true, workerData: { sqlitePath } })
    worker.unref()
    worker.on("message", (reply: Reply) => {
      const resolve = this.waiting.get(reply.id)
      assert(resolve !== undefined, `a checkpoint reply (${reply.id}) answers a request`)
      this.waiting.delete(reply.id)
      if (this.waiting.size === 0) worker.unref()
      resolve(reply)
    })
    // A worker that dies answers everything outstanding with a failure; the next start makes a
    // new one. (Its flags stay set: the database's close then waits out its bound and dies
    // loudly rather than close connections beside an unknown state.)
    const fail = (why: string) => {
      if (this.worker === worker) this.worker = null
      for (const [id, resolve] of this.waiting) resolve({ id, ok: false, code: null, message: `the checkpoint worker ${why}` })
      this.waiting.clear()
    }
    worker.on("error", (error) => fail(`failed: ${String(error)}`))
    worker.on("exit", (code) => fail(`exited (${code})`))
    this.worker = worker
    return worker
  }
}

/** Blocks this thread until `ticket`'s checkpoint no longer touches its database, at most
 * `timeoutMs`; false when it still does. */
export function waitIdle(idle: Int32Array, timeoutMs: number): boolean {
  const started = performance.now()
  while (Atomics.load(idle, 0) !== 0) {
    const leftMs = timeoutMs - (performance.now() - started)
    if (leftMs <= 0) return false
    Atomics.wait(idle, 0, 1, leftMs)
  }
  return true
}
