// `npm run bench -- write-trace [--seconds 5] [--workload kvwrite] [--workers 1] [--dqload PATH]`:
// the latency breakdown of one request. Three `tqlite start` processes with TQLITE_TRACE set
// (src/runtime/trace.ts: each stamps its stages with CLOCK_MONOTONIC, shared by the processes),
// dqload with one worker, then the stamps of the three nodes merged by time. For each write (a
// leader's `writer.submit`), the window from the gateway's read of the request to its answer
// written; in it, the first stamp of each stage on the leader (L) and on the quicker follower
// (F). Prints the p10, median and p90 of each stage's offset from the request's arrival, in order.
import fs from "node:fs"
import os from "node:os"
import path from "node:path"
import { cpuMicros, stopTracked } from "./children.ts"
import { startTqlite } from "./clusters.ts"
import { ensureDqload, startDqload } from "./dqload.ts"
import { option } from "./load.ts"

interface Stamp {
  readonly name: string
  readonly ns: number
  /** The log index the stage concerns, or -1. */
  readonly index: number
  readonly pid: number
}

export async function main(args: ReadonlyArray<string>): Promise<void> {
  const seconds = Number(option(args, "seconds") ?? 5)
  const workers = Number(option(args, "workers") ?? 1)
  const workload = option(args, "workload") === "kvreadwrite" ? "kvreadwrite" : "kvwrite"
  const log = (line: string) => process.stderr.write(`${line}\n`)
  const dqload = await ensureDqload(option(args, "dqload"), log)
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tqlite-write-trace-"))
  const traceDir = path.join(dir, "trace")
  process.env["TQLITE_TRACE"] = traceDir
  let cpuLine = (_leader: number | undefined) => ""
  try {
    const cluster = await startTqlite(dir)
    delete process.env["TQLITE_TRACE"]
    try {
      const pids = cluster.pids
      const cpuBefore = pids.map(cpuMicros)
      const run = startDqload(dqload, { servers: cluster.servers, database: "trace", workload, workers, seconds, opTimeoutSeconds: 10 })
      const result = await run.result
      const cpu = pids.map((pid, i) => cpuMicros(pid) - cpuBefore[i]!)
      log(`dqload ${workload} ×${workers}: ${result.ok_per_s.toFixed(0)} ok/s, p50 ${result.p50_ms} ms, p99 ${result.p99_ms} ms, ${result.errors} errors`)
      // Per node: (utime + stime) over the run ÷ dqload's ok count (dqload's warm-up included).
      const ok = Math.max(1, result.ok_per_s * seconds)
      cpuLine = (leader) => `CPU µs per ok op (utime+stime over the dqload run, /proc; load average ${os.loadavg()[0]!.toFixed(1)}): ${pids.map((pid, i) => `${pid === leader ? "leader" : "follower"} ${(cpu[i]! / ok).toFixed(0)}`).join(", ")}\n`
    } finally {
      await cluster.stop()
    }
    const stamps = readStamps(traceDir)
    process.stdout.write(report(stamps))
    process.stdout.write(cpuLine(stamps.find((s) => s.name === "writer.submit")?.pid))
  } finally {
    await stopTracked(3_000)
    if (args.includes("--keep")) log(`kept ${dir}`)
    else fs.rmSync(dir, { recursive: true, force: true })
  }
}

function readStamps(dir: string): Array<Stamp> {
  const stamps: Array<Stamp> = []
  for (const file of fs.readdirSync(dir)) {
    const { pid, stamps: raw } = JSON.parse(fs.readFileSync(path.join(dir, file), "utf8")) as { pid: number; stamps: Array<[string, number, number]> }
    for (const [name, ns, index] of raw) stamps.push({ name, ns, index, pid })
  }
  return stamps.sort((a, b) => a.ns - b.ns)
}

export function report(stamps: ReadonlyArray<Stamp>): string {
  const leader = stamps.find((s) => s.name === "writer.submit")?.pid
  if (leader === undefined) return "no writes traced\n"
  const offsets = new Map<string, Array<number>>()
  /** Per write: each stage's offset, for per-write gaps between stages. */
  const perWrite: Array<Map<string, number>> = []
  let windows = 0
  // A window: the leader's gw.read before a writer.submit, up to the next gw.written.
  let lastRead = -1
  for (let i = 0; i < stamps.length; i++) {
    const s = stamps[i]!
    if (s.pid === leader && s.name === "gw.read") lastRead = i
    if (s.pid !== leader || s.name !== "writer.submit" || lastRead < 0) continue
    const start = stamps[lastRead]!.ns
    const seen = new Set<string>()
    const offsetsOfWrite = new Map<string, number>()
    perWrite.push(offsetsOfWrite)
    // A follower's stamps count from its receipt of this write's entries (a slower follower may
    // still be acknowledging the previous write); "F" is the first to receive them, "F2" the other.
    // Stamps that name a log index count only once they reach this write's entry.
    const receivedBy: Array<number> = []
    let entry = -1
    let end = i
    for (let j = lastRead; j < stamps.length; j++) {
      const t = stamps[j]!
      if (entry < 0 && t.pid === leader && t.name === "raft.out.append") entry = t.index
      if (t.index >= 0 && (entry < 0 || t.index < entry)) continue
      if (t.pid !== leader && t.name === "peer.recv.append" && !receivedBy.includes(t.pid)) receivedBy.push(t.pid)
      const rank = receivedBy.indexOf(t.pid)
      if (t.pid !== leader && rank < 0) continue
      const key = `${t.pid === leader ? "L" : rank === 0 ? "F" : "F2"} ${t.name}`
      if (!seen.has(key)) {
        seen.add(key)
        const list = offsets.get(key) ?? []
        list.push((t.ns - start) / 1e6)
        offsetsOfWrite.set(key, (t.ns - start) / 1e6)
        offsets.set(key, list)
      }
      if (t.pid === leader && t.name === "gw.written") {
        end = j
        break
      }
    }
    windows++
    lastRead = -1
    i = end
  }
  const rows = [...offsets.entries()].filter(([, list]) => list.length >= windows * 0.5).map(([key, list]) => {
    const sorted = [...list].sort((a, b) => a - b)
    return { key, count: list.length, p10: sorted[Math.floor(sorted.length * 0.1)]!, p50: sorted[Math.floor(sorted.length * 0.5)]!, p90: sorted[Math.floor(sorted.length * 0.9)]! }
  }).sort((a, b) => a.p50 - b.p50)
  const lines = [
    `${windows} writes traced; offsets from the leader's read of the request (ms); "gap" is the median over writes of`,
    "the time from the previous row's stage to this one in the same write (load-independent stages show small gaps)",
    "| stage | p10 | p50 | p90 | gap p50 | seen |",
    "|---|--:|--:|--:|--:|--:|"
  ]
  let previous: string | null = null
  for (const row of rows) {
    const gaps: Array<number> = []
    for (const write of perWrite) {
      const here = write.get(row.key)
      const before = previous === null ? 0 : write.get(previous)
      if (here !== undefined && before !== undefined) gaps.push(here - before)
    }
    gaps.sort((a, b) => a - b)
    const gap = gaps.length === 0 ? NaN : gaps[Math.floor(gaps.length * 0.5)]!
    lines.push(`| ${row.key} | ${row.p10.toFixed(3)} | ${row.p50.toFixed(3)} | ${row.p90.toFixed(3)} | ${gap.toFixed(3)} | ${row.count} |`)
    previous = row.key
  }
  return lines.join("\n") + "\n" + fsyncReport(stamps, leader)
}

/** fdatasyncs per entry a writer waited for (the leader's `apply.answer`), per node: the log's
 * (`log.synced`, one per persist) and the state machine's (`machine.synced`, pages plus
 * applied-state: two each). They share one device, so every one delays the others. */
function fsyncReport(stamps: ReadonlyArray<Stamp>, leader: number): string {
  const entries = stamps.filter((s) => s.pid === leader && s.name === "apply.answer").length
  if (entries === 0) return ""
  const pids = [...new Set(stamps.map((s) => s.pid))].sort((a, b) => (a === leader ? -1 : b === leader ? 1 : a - b))
  const parts = pids.map((pid) => {
    const log = stamps.filter((s) => s.pid === pid && s.name === "log.synced").length
    const machine = stamps.filter((s) => s.pid === pid && s.name === "machine.synced").length
    return `${pid === leader ? "leader" : "follower"} ${((log + 2 * machine) / entries).toFixed(2)} (log ${(log / entries).toFixed(2)}, pages+applied-state ${((2 * machine) / entries).toFixed(2)})`
  })
  return `fdatasyncs per written entry (${entries} entries): ${parts.join("; ")}\n`
}
