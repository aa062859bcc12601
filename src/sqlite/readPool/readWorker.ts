// A reader worker thread: one read-only connection to one leading database, serving reads one at
// a time with pinning.ts's rules. Started by ReadPool.ts (WorkerReadPool); see README.md "Reads
// in worker threads".
import * as fs from "node:fs"
import * as os from "node:os"
import { parentPort, workerData } from "node:worker_threads"
import { Connection } from "../connection.ts"
import { openDatabase } from "../openDatabase.ts"
import type { ReaderBugs, ReadRequest, ReadResult, StreamBatchBounds, StreamStep } from "./pinning.ts"
import { ReadCursor, pinBlocking, serveBlocking } from "./pinning.ts"
import { ReadVersions } from "./versions.ts"

/** What the pool hands a worker at start. */
export interface ReadWorkerData {
  readonly databasePath: string
  readonly pageSize: number
  readonly statementCacheMax: number
  readonly busyTimeoutMs: number
  readonly versions: SharedArrayBuffer
  /** One Int32 cell: 1 while this worker counts as an open connection in `versions`. */
  readonly openFlag: SharedArrayBuffer
  /** This thread's CPU niceness (0: the default). */
  readonly niceness: number
  readonly bugs?: ReaderBugs
}

export type ToWorker =
  | { readonly _tag: "Read"; readonly id: number; readonly request: ReadRequest }
  /** A streamed read: pin, start, answer the first batch (or Done for a statement without rows,
   * or a failure before the first row), then one batch per More, until done or Cancel. */
  | { readonly _tag: "Stream"; readonly id: number; readonly request: ReadRequest; readonly bounds: StreamBatchBounds }
  | { readonly _tag: "More"; readonly id: number }
  | { readonly _tag: "Cancel"; readonly id: number }
  | { readonly _tag: "Close" }

export type FromWorker =
  | { readonly _tag: "Ready" }
  | { readonly _tag: "OpenFailed"; readonly message: string }
  | { readonly _tag: "Done"; readonly id: number; readonly result: ReadResult }
  /** A batch of a streamed read; the first carries the columns. After `done` or a failure the
   * worker's connection is free again. */
  | {
    readonly _tag: "Batch"
    readonly id: number
    readonly step: StreamStep
    readonly head?: { readonly columns: ReadonlyArray<string>; readonly declaredTypes: ReadonlyArray<string> }
  }

const port = parentPort
if (port === null) throw new Error("readWorker.ts runs as a worker thread")
const data = workerData as ReadWorkerData

/** Lowers this thread's CPU priority to `niceness` (ReadPool.ts `readerThreadNiceness`; Linux:
 * setpriority on the thread's own id, read from /proc/thread-self; raising a niceness needs no
 * privilege). Elsewhere, or if refused, the thread keeps the default: a priority is an
 * optimisation, never a reason not to serve. */
function lowerPriority(niceness: number): void {
  if (niceness <= 0) return
  try {
    const tid = Number(fs.readlinkSync("/proc/thread-self").split("/").pop())
    if (Number.isSafeInteger(tid) && tid > 0 && tid !== process.pid) os.setPriority(tid, niceness)
  } catch {
    // Not Linux, or not allowed.
  }
}
lowerPriority(data.niceness)
const versions = new ReadVersions(data.versions)
const openFlag = new Int32Array(data.openFlag)

/** Counted closed once, whoever sees it first (this thread, or the pool on the thread's exit). */
function countClosed(): void {
  if (Atomics.compareExchange(openFlag, 0, 1, 0) === 1) versions.connectionClosed()
}

let connection: Connection | null = null
try {
  const db = openDatabase(data.databasePath, { pageSize: data.pageSize, readonly: true, busyTimeoutMs: data.busyTimeoutMs })
  connection = new Connection(db, data.statementCacheMax)
  port.postMessage({ _tag: "Ready" } satisfies FromWorker)
} catch (cause) {
  countClosed()
  port.postMessage({ _tag: "OpenFailed", message: cause instanceof Error ? cause.message : String(cause) } satisfies FromWorker)
  port.close()
}

/** The streamed read in progress: between two batches the connection stays in its read
 * transaction and the statement waits, unstepped, for More. */
let streaming: { readonly id: number; readonly cursor: ReadCursor; readonly bounds: StreamBatchBounds } | null = null

function endStreaming(): void {
  streaming?.cursor.cancel()
  streaming = null
}

port.on("message", (message: ToWorker) => {
  if (message._tag === "Close" || connection === null) {
    endStreaming()
    connection?.close()
    connection = null
    countClosed()
    port.close()
    return
  }
  switch (message._tag) {
    case "Read": {
      endStreaming()
      const result = serveBlocking(connection, versions, message.request, data.bugs)
      port.postMessage({ _tag: "Done", id: message.id, result } satisfies FromWorker, result.ok ? transferables(result.outcome.rows.rows) : [])
      return
    }
    case "Stream": {
      endStreaming()
      const failure = pinBlocking(connection, versions, message.request, data.bugs)
      if (failure !== null) {
        port.postMessage({ _tag: "Done", id: message.id, result: { ok: false, failure } } satisfies FromWorker)
        return
      }
      const started = ReadCursor.start(connection, versions, message.request, Date.now)
      if (started._tag === "Whole") {
        const result = started.result
        port.postMessage({ _tag: "Done", id: message.id, result } satisfies FromWorker, result.ok ? transferables(result.outcome.rows.rows) : [])
        return
      }
      streaming = { id: message.id, cursor: started.cursor, bounds: message.bounds }
      sendBatch({ columns: started.cursor.columns, declaredTypes: started.cursor.declaredTypes })
      return
    }
    case "More":
      if (streaming?.id === message.id) sendBatch(undefined)
      return
    case "Cancel":
      if (streaming?.id === message.id) endStreaming()
      return
  }
})

function sendBatch(head: { readonly columns: ReadonlyArray<string>; readonly declaredTypes: ReadonlyArray<string> } | undefined): void {
  const current = streaming!
  const step = current.cursor.nextBatch(current.bounds)
  if (current.cursor.isEnded) streaming = null
  const batch: FromWorker = head === undefined ? { _tag: "Batch", id: current.id, step } : { _tag: "Batch", id: current.id, step, head }
  port!.postMessage(batch, step.ok ? transferables(step.rows) : [])
}

/** Blob buffers that belong to one value alone move instead of being copied (a pooled small
 * Buffer shares its ArrayBuffer with others: that one is copied). */
function transferables(rows: ReadonlyArray<ReadonlyArray<unknown>>): Array<ArrayBuffer> {
  const out: Array<ArrayBuffer> = []
  const seen = new Set<ArrayBufferLike>()
  for (const row of rows) {
    for (const value of row) {
      if (!(value instanceof Uint8Array)) continue
      const buffer = value.buffer
      if (buffer instanceof ArrayBuffer && value.byteOffset === 0 && value.byteLength === buffer.byteLength && !seen.has(buffer)) {
        seen.add(buffer)
        out.push(buffer)
      }
    }
  }
  return out
}
