// A reader worker thread: one read-only connection to one leading database, serving reads one at
// a time with pinning.ts's rules. Started by ReadPool.ts (WorkerReadPool); see README.md "Reads
// in worker threads".
import { parentPort, workerData } from "node:worker_threads"
import { Connection } from "../connection.ts"
import { openDatabase } from "../openDatabase.ts"
import type { ReaderBugs, ReadRequest, ReadResult } from "./pinning.ts"
import { serveBlocking } from "./pinning.ts"
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
  readonly bugs?: ReaderBugs
}

export type ToWorker = { readonly _tag: "Read"; readonly id: number; readonly request: ReadRequest } | { readonly _tag: "Close" }

export type FromWorker =
  | { readonly _tag: "Ready" }
  | { readonly _tag: "OpenFailed"; readonly message: string }
  | { readonly _tag: "Done"; readonly id: number; readonly result: ReadResult }

const port = parentPort
if (port === null) throw new Error("readWorker.ts runs as a worker thread")
const data = workerData as ReadWorkerData
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

port.on("message", (message: ToWorker) => {
  if (message._tag === "Close" || connection === null) {
    connection?.close()
    connection = null
    countClosed()
    port.close()
    return
  }
  const result = serveBlocking(connection, versions, message.request, data.bugs)
  port.postMessage({ _tag: "Done", id: message.id, result } satisfies FromWorker, result.ok ? transferables(result) : [])
})

/** Blob buffers that belong to one value alone move instead of being copied (a pooled small
 * Buffer shares its ArrayBuffer with others: that one is copied). */
function transferables(result: ReadResult & { ok: true }): Array<ArrayBuffer> {
  const out: Array<ArrayBuffer> = []
  const seen = new Set<ArrayBufferLike>()
  for (const row of result.outcome.rows.rows) {
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
