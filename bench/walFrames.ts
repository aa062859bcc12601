// Measures the page machinery (not a test): run with `node --import tsx bench/walFrames.ts`.
// 1. capture overhead per transaction: N single-row 1-KiB inserts with and without a capture
//    (and with capture + encode) after each commit;
// 2. the WAL checksum's throughput;
// 3. apply throughput in pages/s for page sets of 1, 10, 100 and 1000 pages, without fdatasync
//    and with one fdatasync per page set.
// Options: --inserts N (default 10000), --rounds R (default 5; median and best are reported).

import fs from "node:fs"
import os from "node:os"
import path from "node:path"
import { performance } from "node:perf_hooks"
import { Effect } from "effect"
import { openDatabase } from "../src/sqlite/openDatabase.ts"
import { PageApplier } from "../src/sqlite/PageApplier.ts"
import type { PageSet } from "../src/sqlite/pageSet.ts"
import { encodePageSet } from "../src/sqlite/pageSet.ts"
import { WalCapture } from "../src/sqlite/WalCapture.ts"
import { initialWalChecksum, walChecksum } from "../src/sqlite/walFormat.ts"

const pageSize = 4096

function option(name: string, fallback: number): number {
  const at = process.argv.indexOf(`--${name}`)
  const value = at >= 0 ? Number(process.argv[at + 1]) : fallback
  if (!Number.isFinite(value) || value <= 0) throw new Error(`--${name} wants a positive number`)
  return value
}

const inserts = option("inserts", 10_000)
const rounds = option("rounds", 5)
const root = fs.mkdtempSync(path.join(os.tmpdir(), "tqlite-bench-"))

type Mode = "no capture" | "capture" | "capture + encode"

function insertRun(mode: Mode, round: number): { microsPerTransaction: number; pagesPerTransaction: number } {
  const databasePath = path.join(root, `capture-${mode.replace(/\W+/g, "-")}-${round}.db`)
  const db = openDatabase(databasePath, { pageSize })
  db.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, payload BLOB)")
  const capture = new WalCapture({ databasePath, pageSize })
  capture.capture()
  const insert = db.prepare("INSERT INTO t(payload) VALUES (?)")
  const payload = Buffer.alloc(1024, 7)
  let pages = 0
  const started = performance.now()
  for (let i = 0; i < inserts; i++) {
    insert.run(payload)
    if (mode === "no capture") continue
    for (const transaction of capture.capture()) {
      pages += transaction.pages.length
      if (mode === "capture + encode") encodePageSet("main", transaction)
    }
  }
  const elapsedMs = performance.now() - started
  capture.close()
  db.close()
  return { microsPerTransaction: (elapsedMs * 1000) / inserts, pagesPerTransaction: pages / inserts }
}

function checksumThroughput(): number {
  const data = new Uint8Array(64 * 1024 * 1024)
  for (let i = 0; i < data.length; i += 4096) data[i] = i & 0xff
  let best = Number.POSITIVE_INFINITY
  for (let round = 0; round < rounds; round++) {
    const started = performance.now()
    let sum = initialWalChecksum
    for (let at = 0; at < data.length; at += pageSize) sum = walChecksum(data.subarray(at, at + pageSize), false, sum)
    best = Math.min(best, performance.now() - started)
    if (sum.checksum1 === 0.5) console.log("unreachable")
  }
  return data.length / 1024 / 1024 / (best / 1000)
}

async function applyRun(pagesPerSet: number, sync: boolean, round: number): Promise<number> {
  const databasePath = path.join(root, `apply-${pagesPerSet}-${sync}-${round}.db`)
  const dbSizePages = 20_000
  fs.writeFileSync(databasePath, new Uint8Array(dbSizePages * pageSize))
  const applier = PageApplier.open({ databasePath, pageSize })
  const data = new Uint8Array(pageSize).fill(3)
  // Random pages, like a workload touching rows all over a table (sorted within a set).
  let seed = 42
  const nextPgno = (): number => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0
    return 1 + Math.floor((seed / 2 ** 32) * dbSizePages) // high bits: the low ones cycle fast
  }
  const totalPages = sync ? Math.min(20_000, Math.max(2_000, pagesPerSet * 200)) : 200_000
  const sets: Array<PageSet> = []
  for (let done = 0; done < totalPages; done += pagesPerSet) {
    const pgnos = new Set<number>()
    while (pgnos.size < pagesPerSet) pgnos.add(nextPgno())
    const pages = [...pgnos].sort((a, b) => a - b).map((pgno) => ({ pgno, data }))
    sets.push({ pageSize, dbSizePages, pages })
  }
  const started = performance.now()
  for (const set of sets) {
    applier.apply(set)
    if (sync) await Effect.runPromise(applier.sync)
  }
  if (!sync) await Effect.runPromise(applier.sync)
  const elapsedMs = performance.now() - started
  applier.close()
  fs.rmSync(databasePath)
  return (sets.length * pagesPerSet) / (elapsedMs / 1000)
}

function median(values: ReadonlyArray<number>): number {
  const sorted = [...values].sort((a, b) => a - b)
  const middle = sorted.length >> 1
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2
}

const format = (value: number): string => Math.round(value).toLocaleString("en")

try {
  console.log(`node ${process.version}, ${os.cpus()[0]?.model ?? "cpu?"} × ${os.cpus().length}, load ${os.loadavg()[0]!.toFixed(1)}, tmp ${os.tmpdir()}`)
  console.log(`${rounds} rounds, modes interleaved; median (best)\n`)
  console.log(`capture overhead: ${inserts} autocommit inserts of a 1-KiB blob`)
  const modes: Array<Mode> = ["no capture", "capture", "capture + encode"]
  const micros = new Map<Mode, Array<number>>(modes.map((mode) => [mode, []]))
  let pagesPerTransaction = 0
  for (let round = 0; round < rounds; round++) {
    for (const mode of modes) {
      const result = insertRun(mode, round)
      micros.get(mode)!.push(result.microsPerTransaction)
      if (mode !== "no capture") pagesPerTransaction = result.pagesPerTransaction
    }
  }
  const baseline = median(micros.get("no capture")!)
  for (const mode of modes) {
    const values = micros.get(mode)!
    const extra = mode === "no capture" ? "" : `  (+${(median(values) - baseline).toFixed(1)} µs)`
    console.log(`  ${mode.padEnd(17)} ${median(values).toFixed(1).padStart(6)} µs/txn (${Math.min(...values).toFixed(1)})${extra}`)
  }
  console.log(`  ${pagesPerTransaction.toFixed(2)} pages per transaction`)
  console.log(`\nWAL checksum: ${checksumThroughput().toFixed(0)} MiB/s (4-KiB pages, native order, best round)`)
  console.log(`\napply (random pages of a 20,000-page file, ${pageSize}-byte pages), pages/s`)
  for (const pagesPerSet of [1, 10, 100, 1000]) {
    const noSync: Array<number> = []
    const withSync: Array<number> = []
    for (let round = 0; round < rounds; round++) {
      noSync.push(await applyRun(pagesPerSet, false, round))
      withSync.push(await applyRun(pagesPerSet, true, round))
    }
    console.log(
      `  ${String(pagesPerSet).padStart(4)} pages/set: ${format(median(noSync)).padStart(9)} (${format(Math.max(...noSync))}) without fdatasync, ` +
        `${format(median(withSync)).padStart(7)} (${format(Math.max(...withSync))}) with one fdatasync per set`
    )
  }
} finally {
  fs.rmSync(root, { recursive: true, force: true })
}
