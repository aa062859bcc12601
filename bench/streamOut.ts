// `npm run bench -- stream-out --mb 200 [--cli dist/tqlite.mjs]`: what a large result costs the
// leader. One `tqlite start` process (the bundle named by --cli, so two builds can be compared),
// a table of --mb MB of ~1 KiB rows loaded in transactions of 24 MB; then, each with the process's
// peak RSS reset first (/proc/PID/clear_refs 5):
// - `SELECT n, s FROM t` read through the TypeScript client's row stream: time to the first row,
//   rows/s, the leader's peak RSS above its resting RSS;
// - DUMP of the database through the client (which holds the answer; the leader should not):
//   seconds, MB/s, the leader's peak RSS above rest.
// The client runs in this process, so its own memory does not count.
import { spawn } from "node:child_process"
import fs from "node:fs"
import os from "node:os"
import path from "node:path"
import { Effect, Stream } from "effect"
import { make as makeClient } from "../src/net/client/Client.ts"
import { freePortNow } from "../test/freePort.ts"
import { onInterrupt, stopAll, track } from "./children.ts"
import { option } from "./load.ts"

const root = path.resolve(import.meta.dirname, "..")
const mb = 1_000_000
const rowsPerTransaction = 24_000
const log = (line: string) => process.stderr.write(`${line}\n`)

function status(pid: number, field: "VmHWM" | "VmRSS"): number {
  const text = fs.readFileSync(`/proc/${pid}/status`, "utf8")
  return Number(new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(text)?.[1] ?? 0) / 1024
}

/** CPU time of the process (all its threads: the reader workers too), ms. */
function cpuMs(pid: number): number {
  const fields = fs.readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ")
  // utime and stime are fields 14 and 15 of stat; after "pid (comm) " they are 12th and 13th.
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100
}

/** Resets the peak (VmHWM) to the current RSS; returns that RSS in MiB. */
function resetPeak(pid: number): number {
  fs.writeFileSync(`/proc/${pid}/clear_refs`, "5")
  return status(pid, "VmRSS")
}

async function waitLeader(metrics: string): Promise<void> {
  const deadline = Date.now() + 60_000
  for (;;) {
    try {
      const response = await fetch(`http://${metrics}/health`, { signal: AbortSignal.timeout(2_000) })
      const health = (await response.json()) as { role?: string }
      if (health.role === "leader") return
    } catch {
      // not up yet
    }
    if (Date.now() > deadline) throw new Error("no leader within 60 s")
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
}

export async function main(args: ReadonlyArray<string>): Promise<void> {
  const totalMb = Number(option(args, "mb") ?? "200")
  const cliPath = path.resolve(root, option(args, "cli") ?? "dist/tqlite.mjs")
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tqlite-stream-out-"))
  const address = `127.0.0.1:${await freePortNow()}`
  const metrics = `127.0.0.1:${await freePortNow()}`
  const out = fs.openSync(path.join(dir, "node.log"), "a")
  const child = track(spawn(process.execPath, [cliPath, "start", "--address", address, "--data-dir", path.join(dir, "data"), "--metrics", metrics], { cwd: root, stdio: ["ignore", out, out] }))
  fs.closeSync(out)
  const stop = async () => {
    await stopAll([child], 5_000)
    fs.rmSync(dir, { recursive: true, force: true })
  }
  const removeHandler = onInterrupt(stop)
  try {
    log(`node at ${address}, metrics ${metrics}, dir ${dir}`)
    await waitLeader(metrics)
    log("leader")
    const pid = child.pid!
    const rows = Math.round((totalMb * mb) / 1_030)
    const report = await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
      const client = yield* makeClient({ servers: [address], database: "bench", requestTimeoutMs: 120_000, messageBytesMax: 2 * 1024 * 1024 * 1024 })
      yield* client.exec("CREATE TABLE t (n INTEGER PRIMARY KEY, s TEXT)")
      for (let from = 0; from < rows; from += rowsPerTransaction) {
        const to = Math.min(rows, from + rowsPerTransaction)
        yield* client.exec(`WITH RECURSIVE k(n) AS (SELECT ${from + 1} UNION ALL SELECT n + 1 FROM k WHERE n < ${to}) INSERT INTO t SELECT n, substr(hex(randomblob(500)), 1, 1000) FROM k`)
      }
      const size = (yield* client.query("SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()")).rows[0]![0] as number
      log(`loaded ${rows} rows, database ${(size / mb).toFixed(0)} MB`)
      yield* Effect.sleep("2 seconds")

      const restSelect = resetPeak(pid)
      const cpuBeforeSelect = cpuMs(pid)
      const started = performance.now()
      let firstMs = 0
      let count = 0
      yield* client.stream("SELECT n, s FROM t").pipe(Stream.runForEach(() => Effect.sync(() => {
        if (count === 0) firstMs = performance.now() - started
        count++
      })))
      const selectSeconds = (performance.now() - started) / 1000
      const selectPeak = status(pid, "VmHWM")
      const selectCpuMs = cpuMs(pid) - cpuBeforeSelect
      if (count !== rows) throw new Error(`SELECT returned ${count} rows of ${rows}`)

      yield* Effect.sleep("2 seconds")
      const restDump = resetPeak(pid)
      const cpuBeforeDump = cpuMs(pid)
      const dumpStarted = performance.now()
      const files = yield* client.dump(address, "bench")
      const dumpSeconds = (performance.now() - dumpStarted) / 1000
      const dumpPeak = status(pid, "VmHWM")
      const dumpCpuMs = cpuMs(pid) - cpuBeforeDump
      const dumped = files[0]?.data.byteLength ?? 0
      if (dumped !== size) throw new Error(`DUMP gave ${dumped} bytes of ${size}`)
      return { rows, size, restSelect, firstMs, selectSeconds, selectPeak, selectCpuMs, restDump, dumpSeconds, dumpPeak, dumpCpuMs }
    })))
    const r = report
    const load = fs.readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ")
    process.stdout.write([
      `stream-out: ${path.relative(root, cliPath)}, ${(r.size / mb).toFixed(0)} MB database, ${r.rows} rows (load average ${load})`,
      `| what | leader RSS at rest MiB | peak MiB | peak above rest MiB | time | rate | leader CPU (all threads) |`,
      `|---|---|---|---|---|---|---|`,
      `| SELECT n, s FROM t | ${r.restSelect.toFixed(0)} | ${r.selectPeak.toFixed(0)} | ${(r.selectPeak - r.restSelect).toFixed(0)} | first row ${r.firstMs.toFixed(0)} ms, all ${r.selectSeconds.toFixed(2)} s | ${(r.rows / r.selectSeconds).toFixed(0)} rows/s | ${r.selectCpuMs.toFixed(0)} ms (${((r.selectCpuMs * 1000) / r.rows).toFixed(1)} µs/row) |`,
      `| DUMP | ${r.restDump.toFixed(0)} | ${r.dumpPeak.toFixed(0)} | ${(r.dumpPeak - r.restDump).toFixed(0)} | ${r.dumpSeconds.toFixed(2)} s | ${(r.size / mb / r.dumpSeconds).toFixed(0)} MB/s | ${r.dumpCpuMs.toFixed(0)} ms (${(r.dumpCpuMs / (r.size / mb)).toFixed(1)} ms/MB) |`,
      ""
    ].join("\n"))
  } finally {
    removeHandler()
    await stop()
  }
}
