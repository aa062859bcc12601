// Where a leading database's reads run: a bounded pool of worker threads, each with one read-only
// connection (WorkerReadPool, the node's default), or the same pinning rules on the main thread
// (InThreadReadPool: the simulator and unit tests, which need one deterministic thread). Both
// serve a read only from a snapshot Raft has committed (pinning.ts); see README.md "Reads in
// worker threads".
//
// Why node:worker_threads and not @effect/platform's Worker: a reader must be terminated from
// outside while stuck in one native SQLite step (better-sqlite3 has no sqlite3_interrupt), must
// share a SharedArrayBuffer with the writer (the seqlock) and must block on Atomics.wait; the
// platform Worker's request/response schema layer hides the thread and adds a serialization hop.
// The Effect surface is this module's ReadPool service.
import type { Scope } from "effect"
import { Cause, Context, Deferred, Effect, Exit, FiberId, Option } from "effect"
import fs from "node:fs"
import os from "node:os"
import path from "node:path"
import { createRequire } from "node:module"
import { fileURLToPath, pathToFileURL } from "node:url"
import { Worker } from "node:worker_threads"
import { Connection } from "../connection.ts"
import type { StatementOutcome } from "../connection.ts"
import { openDatabase } from "../openDatabase.ts"
import { streamBatchBytesDefault, streamBatchRowsMaxDefault } from "../limits.ts"
import type { RowBatch, RowStream, SqlFailure, SqlValue } from "../Sql.ts"
import { SqlBusy, SqlError, SqlNotLeader, rowStreamOf } from "../Sql.ts"
import type { ReaderBugs, ReadFailure, ReadRequest, ReadResult, StreamBatchBounds, StreamStep } from "./pinning.ts"
import { ReadCursor, endRead, epochFailure, execute, readiness, timeLimitFailure, tryPin } from "./pinning.ts"
import type { FromWorker, ReadWorkerData, ToWorker } from "./readWorker.ts"
import type { ReadVersions } from "./versions.ts"
import type { ReadHorizon } from "./horizon.ts"
import { ReadsInProgress } from "./horizon.ts"

export interface ReadPoolLimits {
  /** Reader connections (worker threads) per leading database. */
  readonly readWorkersMax: number
  /** Reads waiting for a free reader, per database; one more is refused with SqlBusy. */
  readonly readQueueMax: number
  /** Every read's time limit, waiting included; past it the client gets SQLITE_INTERRUPT. */
  readonly queryTimeoutMs: number
  readonly statementCacheMax: number
  /** A streamed read's batch ends at about this many bytes (estimated) … */
  readonly streamBatchBytes?: number
  /** … or this many rows, whichever comes first. */
  readonly streamBatchRowsMax?: number
  /** The niceness reader threads run at (`readerThreadNiceness`); absent: the process's own. */
  readonly readerNiceness?: number
}

export { streamBatchBytesDefault, streamBatchRowsMaxDefault }

function streamBounds(limits: ReadPoolLimits): StreamBatchBounds {
  return { bytesMax: limits.streamBatchBytes ?? streamBatchBytesDefault, rowsMax: limits.streamBatchRowsMax ?? streamBatchRowsMaxDefault }
}

export interface ReadersOptions {
  readonly databasePath: string
  readonly pageSize: number
  readonly versions: ReadVersions
}

/** The readers of one leading database. */
export interface DatabaseReaders {
  /** Runs a read that was dispatched in `epoch` (the versions' epoch right after the leadership
   * check). */
  readonly read: (sql: string, params: ReadonlyArray<SqlValue>, epoch: number) => Effect.Effect<StatementOutcome, SqlFailure>
  /** `read`, streamed: the rows a batch at a time (StreamBatchBounds), the reader and its pinned
   * snapshot held until the last batch, a failure, or the scope's close; the time limit counts
   * for the whole stream, the taker's pauses included. */
  readonly stream: (sql: string, params: ReadonlyArray<SqlValue>, epoch: number) => Effect.Effect<RowStream, SqlFailure, Scope.Scope>
  /** The writer moved committedVersion or the epoch (in-thread waiters wake; workers are woken
   * by Atomics.notify). */
  readonly changed: () => void
  /** Synchronously closes every reader connection; the epoch is already bumped, so running
   * reads stop at their next row. Throws when a reader stuck in one native SQLite step keeps its
   * connection open past the wait (README.md: a known limit). */
  readonly close: () => void
  readonly stats: () => ReadersStats
  /** Which reads may still hold a snapshot (horizon.ts): the writer's checkpoints back off
   * until the reads that held one back have ended. */
  readonly horizon: () => ReadHorizon
}

export interface ReadersStats {
  readonly workers: number
  /** Readers started and free. */
  readonly idle: number
  readonly busy: number
  readonly queued: number
  readonly stuck: number
  readonly terminated: number
  readonly served: number
  /** Streamed reads open now. */
  readonly streams: number
  /** Batches streamed reads produced so far. */
  readonly streamBatches: number
  /** Estimated bytes of streamed rows on this thread now: batches a reader handed over that the
   * taker has not released (it releases one by asking for the next, or by ending the stream). */
  readonly streamBytesHeld: number
  /** The most `streamBytesHeld` ever was. */
  readonly streamBytesHeldMax: number
}

/** The streamed-read counters of one database's readers. */
class StreamMeter {
  open = 0
  batches = 0
  held = 0
  heldMax = 0

  hold(bytes: number): void {
    this.held += bytes
    if (this.held > this.heldMax) this.heldMax = this.held
  }

  release(bytes: number): void {
    this.held -= bytes
  }

  stats() {
    return { streams: this.open, streamBatches: this.batches, streamBytesHeld: this.held, streamBytesHeldMax: this.heldMax }
  }
}

export interface ReadPoolService {
  readonly kind: "workers" | "in-thread"
  readonly forDatabase: (options: ReadersOptions) => DatabaseReaders
}

export class ReadPool extends Context.Tag("tqlite/ReadPool")<ReadPool, ReadPoolService>() {}

/** How long past its deadline a worker stuck in a native step gets before it is terminated. */
export const stuckGraceMs = 200
/** How long closing waits for the workers to close their connections. */
export const closeWaitMs = 5_000

function toFailure(failure: ReadFailure): SqlFailure {
  return failure._tag === "SqlBusy" ? new SqlBusy({ message: failure.message }) : new SqlError({ code: failure.code, message: failure.message })
}

// ---- worker threads -------------------------------------------------------------------------

/** This module's URL: import.meta's in ESM (tsx, tsc's output); in the CommonJS bundle
 * (dist/tqlite.cjs) import.meta is empty and __filename names the bundle. */
function moduleUrl(): string {
  const url = (import.meta as { readonly url?: string }).url
  return typeof url === "string" ? url : pathToFileURL(__filename).href
}

/** The worker entry: beside this module as .ts (tsx) or .js (tsc output), or beside the bundle
 * (dist/tqlite.mjs) as tqlite-read-worker.mjs. */
export function readWorkerUrl(): URL {
  const here = moduleUrl()
  if (here.endsWith(".ts")) return new URL("./readWorker.ts", here)
  const sibling = new URL("./readWorker.js", here)
  if (fs.existsSync(fileURLToPath(sibling))) return sibling
  return new URL("./tqlite-read-worker.mjs", here)
}

/** How to start the worker: the entry itself (tsc's output, or the bundle's), or, from
 * TypeScript sources (tests, `node --import tsx`), the entry bundled once per process into a
 * temporary .mjs with esbuild: Node 20 does not apply the parent's `--import tsx` hooks inside a
 * worker, and registering tsx in each worker costs seconds of compilation. */
function workerEntry(url: URL): URL {
  if (!url.pathname.endsWith(".ts")) return url
  devBundle ??= bundleForDevelopment(url)
  return devBundle
}

let devBundle: URL | undefined

function bundleForDevelopment(url: URL): URL {
  const require = createRequire(moduleUrl())
  const esbuild = require("esbuild") as typeof import("esbuild")
  const result = esbuild.buildSync({
    entryPoints: [fileURLToPath(url)],
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node20",
    write: false,
    external: ["better-sqlite3"],
    logLevel: "silent"
  })
  // The native addon stays where it is installed: imported by its absolute path.
  const betterSqlite = require.resolve("better-sqlite3")
  const text = result.outputFiles[0]!.text.replaceAll(/from\s*"better-sqlite3"/g, `from ${JSON.stringify(pathToFileURL(betterSqlite).href)}`)
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tqlite-read-worker-"))
  const file = path.join(dir, "readWorker.mjs")
  fs.writeFileSync(file, text)
  process.once("exit", () => fs.rmSync(dir, { recursive: true, force: true }))
  return pathToFileURL(file)
}

interface PendingRead {
  readonly request: ReadRequest
  readonly id: number
  readonly done: (exit: Exit.Exit<StatementOutcome, SqlFailure>) => void
  finished: boolean
  slot: WorkerSlot | null
  /** When the worker was last asked to step (dispatch, or a streamed read's More). */
  dispatchedAt: number
  timer: ReturnType<typeof setTimeout> | null
  /** Set for a streamed read. */
  readonly stream: WorkerStream | null
}

/** A streamed read's state on the main thread. The worker steps one batch per request; the pool
 * asks for the next as soon as it hands one out, so at most one batch waits here (`buffered`),
 * one is with the taker (`inHand`) and one is being stepped. */
interface WorkerStream {
  /** Answers the start: the first batch and the columns, or a whole result, or a failure. */
  readonly start: (exit: Exit.Exit<RowStream, SqlFailure>) => void
  readonly listen: (resume: (exit: Exit.Exit<RowStream, SqlFailure>) => void) => void
  answered: boolean
  /** The worker is stepping a batch for this stream (asked, not answered). */
  stepping: boolean
  buffered: { readonly batch: RowBatch; readonly bytes: number } | null
  inHandBytes: number
  /** The taker waits in `next`. */
  waiter: ((exit: Exit.Exit<RowBatch, SqlFailure>) => void) | null
  /** The stream failed (time limit, close, a lost thread) or ended: `next` answers this. */
  failure: SqlFailure | null
  /** The last batch was received. */
  complete: boolean
  /** Its scope closed. */
  ended: boolean
}

interface WorkerSlot {
  readonly worker: Worker
  readonly openFlag: Int32Array
  state: "starting" | "idle" | "busy" | "stuck" | "closing"
  running: PendingRead | null
}

/** A niceness for reader threads (`ReadPoolLimits.readerNiceness`), not the default. A query runs
 * in a reader thread so that it cannot hold the main thread (Raft's heartbeats, the writer, the
 * gateway); when cores are short it still takes their CPU. At niceness 10 the kernel gives a busy
 * reader about a tenth of the share of a ready thread at 0, which met the long-query target on a
 * quiet 2-core machine (docs/performance.md). It is off by default because a starved reader is
 * also slow to stop: four copies of test/sqlite/readPool.test.ts at once, one in 4 (and 2 in 4)
 * failed to close a database within `closeWaitMs` after terminating a niced reader, which in a
 * node is a failed step-down; none did at the default priority. A thread cannot be made less
 * nice again without privileges, so the stop cannot undo it. */
export const readerThreadNiceness = 10

export function workerReadPool(limits: ReadPoolLimits, bugs?: ReaderBugs): ReadPoolService {
  const entry = workerEntry(readWorkerUrl())
  return { kind: "workers", forDatabase: (options) => new WorkerReaders(options, limits, entry, bugs) }
}

class WorkerReaders implements DatabaseReaders {
  private readonly slots = new Set<WorkerSlot>()
  private readonly queue: Array<PendingRead> = []
  private nextId = 1
  private closed = false
  private served = 0
  private terminated = 0
  private readonly meter = new StreamMeter()
  /** By slot: from dispatch until the slot is free again, or its thread gone (a stuck one keeps
   * its snapshot until it exits). */
  private readonly reading = new ReadsInProgress()

  constructor(
    private readonly options: ReadersOptions,
    private readonly limits: ReadPoolLimits,
    private readonly entry: URL,
    private readonly bugs: ReaderBugs | undefined
  ) {
    // One reader starts with the leadership, so the first read does not wait for a thread.
    this.spawn()
  }

  readonly read = (sql: string, params: ReadonlyArray<SqlValue>, epoch: number): Effect.Effect<StatementOutcome, SqlFailure> =>
    Effect.async<StatementOutcome, SqlFailure>((resume) => {
      if (this.closed) return resume(Effect.fail(new SqlNotLeader({ leader: null, message: "the database is no longer led here" })))
      if (this.queue.length >= this.limits.readQueueMax) {
        return resume(Effect.fail(new SqlBusy({ message: `${this.queue.length} reads already wait for a reader (readQueueMax)` })))
      }
      const timeLimitMs = this.limits.queryTimeoutMs
      const pending: PendingRead = {
        request: { sql, params, epoch, deadlineAt: Date.now() + timeLimitMs, timeLimitMs },
        id: this.nextId++,
        done: (exit) => resume(exit),
        finished: false,
        slot: null,
        dispatchedAt: 0,
        timer: null,
        stream: null
      }
      pending.timer = setTimeout(() => this.overdue(pending), timeLimitMs + stuckGraceMs)
      pending.timer.unref()
      this.queue.push(pending)
      this.pump()
      return Effect.sync(() => {
        // The client went away: a queued read is dropped, a running one finishes unseen.
        const at = this.queue.indexOf(pending)
        if (at >= 0) this.queue.splice(at, 1)
        this.finish(pending, Exit.fail(new SqlBusy({ message: "interrupted" })), false)
      })
    })

  readonly stream = (sql: string, params: ReadonlyArray<SqlValue>, epoch: number): Effect.Effect<RowStream, SqlFailure, Scope.Scope> =>
    Effect.uninterruptible(Effect.flatMap(
      Effect.sync((): PendingRead | SqlFailure => {
        if (this.closed) return new SqlNotLeader({ leader: null, message: "the database is no longer led here" })
        if (this.queue.length >= this.limits.readQueueMax) return new SqlBusy({ message: `${this.queue.length} reads already wait for a reader (readQueueMax)` })
        const timeLimitMs = this.limits.queryTimeoutMs
        let answer: ((exit: Exit.Exit<RowStream, SqlFailure>) => void) | null = null
        const stream: WorkerStream = {
          start: (exit) => answer?.(exit),
          answered: false,
          stepping: false,
          buffered: null,
          inHandBytes: 0,
          waiter: null,
          failure: null,
          complete: false,
          ended: false,
          listen: (resume) => {
            answer = resume
          }
        }
        // Counted open here, closed by endStream (the scope's finalizer, added right after).
        this.meter.open++
        return {
          request: { sql, params, epoch, deadlineAt: Date.now() + timeLimitMs, timeLimitMs },
          id: this.nextId++,
          // A statement without rows (or a failure before the first row): answered whole.
          done: (exit) => stream.start(Exit.map(exit, (outcome) => rowStreamOf(outcome.rows))),
          finished: false,
          slot: null,
          dispatchedAt: 0,
          timer: null,
          stream
        }
      }),
      (pending) => (!("request" in pending) ? Effect.fail(pending) : this.runStream(pending))
    )).pipe(Effect.flatten)

  /** Registers the stream's end with the scope before anything is queued (uninterruptibly: it
   * was counted open), then queues it and waits for its first batch. Whatever ends the scope —
   * the last batch taken, the client gone, INTERRUPT, a failure, an interruption while queued —
   * ends the read. */
  private runStream(pending: PendingRead): Effect.Effect<Effect.Effect<RowStream, SqlFailure>, never, Scope.Scope> {
    const stream = pending.stream!
    return Effect.as(
      Effect.addFinalizer(() => Effect.sync(() => this.endStream(pending))),
      Effect.async<RowStream, SqlFailure>((resume) => {
        stream.listen(resume)
        pending.timer = setTimeout(() => this.overdue(pending), pending.request.timeLimitMs + stuckGraceMs)
        pending.timer.unref()
        this.queue.push(pending)
        this.pump()
      })
    )
  }

  /** The taker's `next` of a streamed read. */
  private nextBatch(pending: PendingRead): Effect.Effect<RowBatch, SqlFailure> {
    const stream = pending.stream!
    return Effect.async<RowBatch, SqlFailure>((resume) => {
      // The batch the taker had is done with.
      this.meter.release(stream.inHandBytes)
      stream.inHandBytes = 0
      if (stream.failure !== null) return resume(Effect.fail(stream.failure))
      const buffered = stream.buffered
      if (buffered !== null) {
        stream.buffered = null
        this.handOver(pending, buffered.bytes)
        return resume(Effect.succeed(buffered.batch))
      }
      if (stream.complete) return resume(Effect.fail(new SqlError({ code: 21, message: "the streamed read has no more batches" })))
      stream.waiter = (exit) => resume(exit)
      return Effect.sync(() => {
        stream.waiter = null
      })
    })
  }

  /** A batch goes to the taker: counted as in its hand, and the worker asked for the next one
   * (one batch ahead, never more). */
  private handOver(pending: PendingRead, bytes: number): void {
    const stream = pending.stream!
    stream.inHandBytes = bytes
    const slot = pending.slot
    if (stream.complete || stream.stepping || pending.finished || slot === null || slot.running !== pending) return
    stream.stepping = true
    pending.dispatchedAt = performance.now()
    slot.worker.postMessage({ _tag: "More", id: pending.id } satisfies ToWorker)
  }

  /** A batch (or the stream's failure) from the worker. */
  private onBatch(slot: WorkerSlot, pending: PendingRead, message: FromWorker & { _tag: "Batch" }): void {
    const stream = pending.stream!
    stream.stepping = false
    this.meter.batches++
    const step: StreamStep = message.step
    if (!step.ok) {
      this.freeSlot(slot)
      this.finish(pending, Exit.fail(toFailure(step.failure)), true)
      return
    }
    if (stream.ended) return
    const batch: RowBatch = { rows: step.rows, done: step.done }
    this.meter.hold(step.bytes)
    if (step.done) {
      // The worker ended the read (statement reset, snapshot released): its connection is free;
      // the stream stays open for the taker.
      stream.complete = true
      this.served++
      this.freeSlot(slot)
      pending.finished = true
      this.clearTimer(pending)
    }
    if (message.head !== undefined && !stream.answered) {
      stream.answered = true
      stream.inHandBytes = step.bytes
      const rows: RowStream = {
        columns: message.head.columns,
        declaredTypes: message.head.declaredTypes,
        first: batch,
        next: Effect.suspend(() => this.nextBatch(pending))
      }
      this.handOver(pending, step.bytes)
      stream.start(Exit.succeed(rows))
      return
    }
    const waiter = stream.waiter
    if (waiter !== null) {
      stream.waiter = null
      this.handOver(pending, step.bytes)
      waiter(Exit.succeed(batch))
      return
    }
    stream.buffered = { batch, bytes: step.bytes }
  }

  private freeSlot(slot: WorkerSlot): void {
    if (slot.state === "busy") slot.state = "idle"
    slot.running = null
    this.reading.end(slot)
  }

  private clearTimer(pending: PendingRead): void {
    if (pending.timer !== null) clearTimeout(pending.timer)
    pending.timer = null
  }

  /** How a streamed read ends on the pool's side (`finish` of a stream): before its first batch
   * the start hears the answer (a whole result, or a failure); after it, a failure goes to the
   * waiting taker and every later `next`. The caller has dealt with the worker. */
  private finishStream(pending: PendingRead, exit: Exit.Exit<StatementOutcome, SqlFailure>): void {
    const stream = pending.stream!
    pending.finished = true
    this.clearTimer(pending)
    if (!stream.answered) {
      stream.answered = true
      stream.complete = true
      pending.done(exit)
      return
    }
    if (Exit.isSuccess(exit) || stream.failure !== null) return
    const failure = Option.getOrElse(Cause.failureOption(exit.cause), () => new SqlError({ code: 1, message: "the streamed read failed" }))
    stream.failure = failure
    if (stream.buffered !== null) this.meter.release(stream.buffered.bytes)
    stream.buffered = null
    const waiter = stream.waiter
    stream.waiter = null
    waiter?.(Exit.fail(failure))
  }

  /** The stream's scope closed: a worker still on it stops stepping and ends its read
   * transaction (Cancel); its connection is free at once, since a worker handles Cancel before
   * anything sent after it. */
  private endStream(pending: PendingRead): void {
    const stream = pending.stream!
    if (stream.ended) return
    stream.ended = true
    this.meter.open--
    const slot = pending.slot
    if (!pending.finished && slot !== null && slot.running === pending) {
      slot.worker.postMessage({ _tag: "Cancel", id: pending.id } satisfies ToWorker)
      this.freeSlot(slot)
    }
    const at = this.queue.indexOf(pending)
    if (at >= 0) this.queue.splice(at, 1)
    pending.finished = true
    this.clearTimer(pending)
    this.meter.release(stream.inHandBytes + (stream.buffered?.bytes ?? 0))
    stream.inHandBytes = 0
    stream.buffered = null
    stream.failure ??= new SqlError({ code: 21, message: "the streamed read has ended" })
    const waiter = stream.waiter
    stream.waiter = null
    waiter?.(Exit.fail(stream.failure))
    this.pump()
  }

  readonly changed = (): void => {}

  readonly horizon = (): ReadHorizon => this.reading.horizon()

  readonly stats = (): ReadersStats => {
    let busy = 0
    let stuck = 0
    let idle = 0
    for (const slot of this.slots) {
      if (slot.state === "busy") busy++
      if (slot.state === "stuck") stuck++
      if (slot.state === "idle") idle++
    }
    return { workers: this.slots.size - stuck, idle, busy, queued: this.queue.length, stuck, terminated: this.terminated, served: this.served, ...this.meter.stats() }
  }

  readonly close = (): void => {
    if (this.closed) return
    this.closed = true
    const notLeader = new SqlNotLeader({ leader: null, message: "the database's connections were closed (leadership change or a discarded transaction)" })
    for (const pending of this.queue.splice(0)) this.finish(pending, Exit.fail(notLeader), true)
    for (const slot of this.slots) {
      if (slot.running !== null) this.finish(slot.running, Exit.fail(toFailure(epochFailure)), true)
      if (slot.state !== "stuck") {
        slot.state = "closing"
        slot.worker.postMessage({ _tag: "Close" } satisfies ToWorker)
      }
    }
    const allClosed = this.options.versions.waitConnectionsClosed(closeWaitMs)
    for (const slot of this.slots) void slot.worker.terminate()
    if (!allClosed) {
      throw new Error(`${this.options.versions.openConnections()} reader connection(s) of ${this.options.databasePath} still open ${closeWaitMs} ms after closing: a query is stuck in one SQLite step`)
    }
  }

  private pump(): void {
    if (this.closed) return
    // A terminated or crashed reader is replaced at once: one is always ready.
    if (![...this.slots].some((slot) => slot.state !== "stuck") && this.slots.size < 2 * this.limits.readWorkersMax) this.spawn()
    while (this.queue.length > 0 && !this.closed) {
      const idle = [...this.slots].find((slot) => slot.state === "idle")
      if (idle === undefined) {
        let live = 0
        let stuck = 0
        for (const slot of this.slots) slot.state === "stuck" ? stuck++ : live++
        // Terminated workers stuck in native code still hold a thread and a connection: at
        // most as many again as the pool's size, then reads wait (and time out with SqlBusy).
        if (live < this.limits.readWorkersMax && live + stuck < 2 * this.limits.readWorkersMax) this.spawn()
        return
      }
      const pending = this.queue.shift()!
      if (Date.now() >= pending.request.deadlineAt) {
        // Its whole time limit went by in the queue.
        this.finish(pending, Exit.fail(new SqlBusy({ message: `no reader was free within the read's time limit (${pending.request.timeLimitMs} ms)` })), true)
        continue
      }
      pending.dispatchedAt = performance.now()
      idle.state = "busy"
      idle.running = pending
      pending.slot = idle
      this.reading.begin(idle)
      if (pending.stream === null) {
        idle.worker.postMessage({ _tag: "Read", id: pending.id, request: pending.request } satisfies ToWorker)
      } else {
        pending.stream.stepping = true
        idle.worker.postMessage({ _tag: "Stream", id: pending.id, request: pending.request, bounds: streamBounds(this.limits) } satisfies ToWorker)
      }
    }
  }

  private spawn(): void {
    const openFlag = new Int32Array(new SharedArrayBuffer(4))
    openFlag[0] = 1
    // Counted open before the thread starts: closing waits for a worker still starting up.
    this.options.versions.connectionOpened()
    const workerData: ReadWorkerData = {
      databasePath: this.options.databasePath,
      pageSize: this.options.pageSize,
      statementCacheMax: this.limits.statementCacheMax,
      busyTimeoutMs: 1_000,
      versions: this.options.versions.buffer,
      openFlag: openFlag.buffer as SharedArrayBuffer,
      niceness: this.limits.readerNiceness ?? 0,
      ...(this.bugs !== undefined ? { bugs: this.bugs } : {})
    }
    const worker = new Worker(this.entry, { workerData })
    worker.unref()
    const slot: WorkerSlot = { worker, openFlag, state: "starting", running: null }
    this.slots.add(slot)
    worker.on("message", (message: FromWorker) => this.onMessage(slot, message))
    worker.on("error", (error) => this.onGone(slot, `the reader thread failed: ${error.message}`))
    worker.on("exit", (code) => this.onGone(slot, `the reader thread exited (${code})`))
  }

  private onMessage(slot: WorkerSlot, message: FromWorker): void {
    switch (message._tag) {
      case "Ready":
        if (slot.state === "starting") slot.state = "idle"
        break
      case "OpenFailed": {
        // Every waiting read fails rather than spawning worker after worker on a broken file.
        const error = new SqlError({ code: 14, message: `a reader cannot open the database: ${message.message}` })
        for (const pending of this.queue.splice(0)) this.finish(pending, Exit.fail(error), true)
        return
      }
      case "Done": {
        const pending = slot.running
        this.freeSlot(slot)
        if (pending !== null && pending.id === message.id) {
          this.served++
          this.finish(pending, fromResult(message.result), true)
        }
        break
      }
      case "Batch": {
        // A batch of a stream already cancelled (its slot moved on) is dropped.
        const pending = slot.running
        if (pending !== null && pending.id === message.id && pending.stream !== null) this.onBatch(slot, pending, message)
        break
      }
    }
    this.pump()
  }

  /** The thread is gone (its connection closed with it): count it closed, fail its read, and
   * let pump start a replacement. */
  private onGone(slot: WorkerSlot, why: string): void {
    if (Atomics.compareExchange(slot.openFlag, 0, 1, 0) === 1) this.options.versions.connectionClosed()
    this.reading.end(slot)
    if (!this.slots.delete(slot)) return
    const pending = slot.running
    slot.running = null
    if (pending !== null) this.finish(pending, Exit.fail(new SqlError({ code: 10, message: why })), true)
    this.pump()
  }

  /** Past the deadline and its grace: a queued read never found a reader; a running one is stuck
   * in a native SQLite step (the worker checks the deadline between rows): the thread is
   * terminated and the client answered at once. */
  private overdue(pending: PendingRead): void {
    if (pending.finished) return
    const slot = pending.slot
    if (slot === null) {
      const at = this.queue.indexOf(pending)
      if (at >= 0) this.queue.splice(at, 1)
      this.finish(pending, Exit.fail(new SqlBusy({ message: `no reader was free within the read's time limit (${pending.request.timeLimitMs} ms)` })), true)
      return
    }
    const stream = pending.stream
    if (stream !== null && !stream.stepping) {
      // A streamed read paused between batches (its taker, the client, is not reading): the
      // worker is waiting for More, not stuck. It ends the read on Cancel; the taker hears the
      // time limit.
      slot.worker.postMessage({ _tag: "Cancel", id: pending.id } satisfies ToWorker)
      this.freeSlot(slot)
      this.finish(pending, Exit.fail(toFailure(timeLimitFailure(pending.request.timeLimitMs))), true)
      this.pump()
      return
    }
    const runningMs = performance.now() - pending.dispatchedAt
    if (runningMs < stuckGraceMs) {
      // Dispatched late in its time limit: the worker checks the deadline itself; give it the
      // grace from dispatch before calling it stuck.
      pending.timer = setTimeout(() => this.overdue(pending), stuckGraceMs - runningMs)
      pending.timer.unref()
      return
    }
    slot.state = "stuck"
    slot.running = null
    this.terminated++
    // terminate() takes effect when the native step returns to JavaScript; until then the
    // thread keeps its core and its connection (counted as stuck).
    void slot.worker.terminate()
    this.finish(pending, Exit.fail(toFailure(timeLimitFailure(pending.request.timeLimitMs))), true)
    this.pump()
  }

  private finish(pending: PendingRead, exit: Exit.Exit<StatementOutcome, SqlFailure>, answer: boolean): void {
    if (pending.stream !== null) {
      if (!pending.stream.ended) this.finishStream(pending, exit)
      return
    }
    if (pending.finished) return
    pending.finished = true
    if (pending.timer !== null) clearTimeout(pending.timer)
    if (answer) pending.done(exit)
  }
}

function fromResult(result: ReadResult): Exit.Exit<StatementOutcome, SqlFailure> {
  return result.ok ? Exit.succeed(result.outcome) : Exit.fail(toFailure(result.failure))
}

// ---- in the main thread ---------------------------------------------------------------------

export function inThreadReadPool(limits: ReadPoolLimits, bugs?: ReaderBugs): ReadPoolService {
  return { kind: "in-thread", forDatabase: (options) => new InThreadReaders(options, limits, bugs) }
}

class InThreadReaders implements DatabaseReaders {
  private readonly idle: Array<Connection> = []
  private readonly all = new Set<Connection>()
  private readonly permits: Effect.Semaphore
  private inFlight = 0
  private closed = false
  private served = 0
  private readonly meter = new StreamMeter()
  /** Streamed reads in progress: closing ends them before their connections close. */
  private readonly cursors = new Set<ReadCursor>()
  /** By connection: from its acquisition by a read until it is back among the idle ones. */
  private readonly reading = new ReadsInProgress()
  private wake = Deferred.unsafeMake<void>(fakeFiberId)

  constructor(
    private readonly options: ReadersOptions,
    private readonly limits: ReadPoolLimits,
    private readonly bugs: ReaderBugs | undefined
  ) {
    this.permits = Effect.unsafeMakeSemaphore(limits.readWorkersMax)
  }

  readonly read = (sql: string, params: ReadonlyArray<SqlValue>, epoch: number): Effect.Effect<StatementOutcome, SqlFailure> => {
    const self = this
    const timeLimitMs = this.limits.queryTimeoutMs
    const serve = (connection: Connection): Effect.Effect<StatementOutcome, SqlFailure> =>
      Effect.gen(function*() {
        const request: ReadRequest = { sql, params, epoch, deadlineAt: Date.now() + timeLimitMs, timeLimitMs }
        yield* self.pinReady(connection, request)
        const result = execute(connection, self.options.versions, request, Date.now)
        self.served++
        if (!result.ok) return yield* Effect.fail(toFailure(result.failure))
        return result.outcome
      })
    const acquire = Effect.sync(() => this.acquire())
    const release = (connection: Connection) => Effect.sync(() => this.release(connection))
    return Effect.suspend(() => {
      if (this.closed) return Effect.fail(new SqlNotLeader({ leader: null, message: "the database is no longer led here" }))
      if (this.inFlight >= this.limits.readWorkersMax + this.limits.readQueueMax) {
        return Effect.fail(new SqlBusy({ message: `${this.inFlight} reads already wait for a reader (readQueueMax)` }))
      }
      this.inFlight++
      return this.permits.withPermits(1)(Effect.acquireUseRelease(acquire, serve, release)).pipe(
        Effect.timeoutFail({ duration: timeLimitMs, onTimeout: () => new SqlBusy({ message: `the read was not served within its time limit (${timeLimitMs} ms)` }) }),
        Effect.ensuring(Effect.sync(() => void this.inFlight--))
      )
    })
  }

  /** Streamed in the calling fiber: each `next` steps one batch on this thread (the simulator's
   * pool; no prefetch). The reader, its permit and its snapshot are held until the scope
   * closes. The time limit is checked at every row; a taker that stops asking holds the
   * snapshot until its scope closes (no timer here: simulated runs bound their clients). */
  readonly stream = (sql: string, params: ReadonlyArray<SqlValue>, epoch: number): Effect.Effect<RowStream, SqlFailure, Scope.Scope> => {
    const self = this
    const timeLimitMs = this.limits.queryTimeoutMs
    const bounds = streamBounds(this.limits)
    return Effect.gen(function*() {
      if (self.closed) return yield* new SqlNotLeader({ leader: null, message: "the database is no longer led here" })
      if (self.inFlight >= self.limits.readWorkersMax + self.limits.readQueueMax) {
        return yield* new SqlBusy({ message: `${self.inFlight} reads already wait for a reader (readQueueMax)` })
      }
      self.inFlight++
      self.meter.open++
      let held = 0
      yield* Effect.addFinalizer(() => Effect.sync(() => {
        self.inFlight--
        self.meter.open--
        self.meter.release(held)
        held = 0
      }))
      // The wait for a permit stays interruptible (by the time limit): acquireRelease's acquire
      // is not otherwise; an interrupted take takes nothing.
      yield* Effect.acquireRelease(Effect.interruptible(self.permits.take(1)), () => self.permits.release(1)).pipe(
        Effect.timeoutFail({ duration: timeLimitMs, onTimeout: () => new SqlBusy({ message: `no reader was free within the read's time limit (${timeLimitMs} ms)` }) })
      )
      const connection = yield* Effect.acquireRelease(Effect.sync(() => self.acquire()), (c) => Effect.sync(() => self.release(c)))
      const request: ReadRequest = { sql, params, epoch, deadlineAt: Date.now() + timeLimitMs, timeLimitMs }
      yield* Effect.timeoutFail(self.pinReady(connection, request), {
        duration: Math.max(0, request.deadlineAt - Date.now()),
        onTimeout: () => new SqlBusy({ message: `the write this read must see was not committed within the read's time limit (${timeLimitMs} ms)` })
      })
      const started = ReadCursor.start(connection, self.options.versions, request, Date.now)
      if (started._tag === "Whole") {
        self.served++
        if (!started.result.ok) return yield* Effect.fail(toFailure(started.result.failure))
        return rowStreamOf(started.result.outcome.rows)
      }
      const cursor = started.cursor
      self.cursors.add(cursor)
      // Before the connection goes back (finalizers run in reverse order).
      yield* Effect.addFinalizer(() => Effect.sync(() => {
        self.cursors.delete(cursor)
        cursor.cancel()
      }))
      const step = (): Effect.Effect<RowBatch, SqlFailure> =>
        Effect.suspend(() => {
          self.meter.release(held)
          held = 0
          if (self.closed) {
            cursor.cancel()
            return Effect.fail(toFailure(epochFailure))
          }
          const batch = cursor.nextBatch(bounds)
          self.meter.batches++
          if (!batch.ok) return Effect.fail(toFailure(batch.failure))
          held = batch.bytes
          self.meter.hold(held)
          if (batch.done) self.served++
          return Effect.succeed({ rows: batch.rows, done: batch.done })
        })
      const first = yield* step()
      return { columns: cursor.columns, declaredTypes: cursor.declaredTypes, first, next: step() }
    })
  }

  /** Pins `connection` on a snapshot Raft has committed, waiting (as Effects) for the writer
   * (a whole read and a streamed one alike). */
  private pinReady(connection: Connection, request: ReadRequest): Effect.Effect<void, SqlFailure> {
    const self = this
    return Effect.gen(function*() {
      for (;;) {
        if (self.closed) return yield* Effect.fail(toFailure(epochFailure))
        if (Date.now() >= request.deadlineAt) return yield* Effect.fail(toFailure(timeLimitFailure(request.timeLimitMs)))
        const pin = tryPin(connection, self.options.versions, request.epoch)
        if (pin._tag === "Void") return yield* Effect.fail(toFailure(epochFailure))
        // On the main thread a local COMMIT never runs between the two loads; kept for form.
        if (pin._tag === "Retry") {
          yield* Effect.sleep(1)
          continue
        }
        for (;;) {
          const wake = self.wake
          const state = readiness(self.options.versions, pin.version, request.epoch, self.bugs)
          if (state === "void") {
            endRead(connection)
            return yield* Effect.fail(toFailure(epochFailure))
          }
          if (state === "ready") return
          yield* Deferred.await(wake)
        }
      }
    })
  }

  readonly changed = (): void => {
    const wake = this.wake
    this.wake = Deferred.unsafeMake<void>(fakeFiberId)
    Deferred.unsafeDone(wake, Exit.void)
  }

  readonly stats = (): ReadersStats => ({ workers: this.all.size, idle: this.idle.length, busy: this.all.size - this.idle.length, queued: Math.max(0, this.inFlight - this.all.size + this.idle.length), stuck: 0, terminated: 0, served: this.served, ...this.meter.stats() })

  readonly close = (): void => {
    if (this.closed) return
    this.closed = true
    for (const cursor of this.cursors) cursor.cancel()
    this.cursors.clear()
    for (const connection of this.all) connection.close()
    this.all.clear()
    this.idle.length = 0
    this.changed()
  }

  readonly horizon = (): ReadHorizon => this.reading.horizon()

  private acquire(): Connection {
    const connection = this.idle.pop() ?? this.open()
    this.reading.begin(connection)
    return connection
  }

  private release(connection: Connection): void {
    this.reading.end(connection)
    if (!connection.db.open) return
    endRead(connection)
    this.idle.push(connection)
  }

  private open(): Connection {
    const db = openDatabase(this.options.databasePath, { pageSize: this.options.pageSize, readonly: true, busyTimeoutMs: 0 })
    const connection = new Connection(db, this.limits.statementCacheMax)
    this.all.add(connection)
    return connection
  }
}

const fakeFiberId = FiberId.none
