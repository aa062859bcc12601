// `npm run bench -- versus-dqlite [--seconds 10] [--rows kvwrite:1,kvwrite:8,kvwrite:64,kvreadwrite:1,kvreadwrite:64]
//                                 [--dqload PATH] [--plot FILE.svg] [--json FILE] [--op-timeout 10]
//                                 [--warmup 5]`
//
// Both systems driven by the same independent client: dqload (../shared/tools/dqload, go-dqlite's
// real driver, in its own process; built into a cache dir unless --dqload is given) against 3
// `dqlite-demo` processes (dqlite 1.11, Debian's go-dqlite) and 3 `tqlite start` processes (the
// bundled CLI, rebuilt when stale), all on loopback with fsync on and fresh temp data dirs. The
// rows run interleaved — for each row both systems, the one going first alternating — each on a
// fresh database so tables start empty. Before the first row each cluster serves --warmup seconds
// of kvreadwrite ×8 on a scratch database, unmeasured: a fresh Node process runs its first
// seconds in V8's unoptimised tiers and compilers (a 10 s kvwrite ×1 row on a fresh node cost
// ~1.6× the CPU per write of the next), which a long-running server never sees again; dqlite is
// C and needs none, and gets the same run so both start from the same state. Prints the ratio table and the machine's load, and writes
// an SVG plot and a JSON file of all results. Ctrl-C prints the rows so far, stops every
// process, removes the temp dir and exits 130.
import fs from "node:fs"
import os from "node:os"
import path from "node:path"
import { cpuMicros, onInterrupt, stopTracked } from "./children.ts"
import { type Cluster, ensureBundle, startDqlite, startTqlite } from "./clusters.ts"
import { type DqloadResult, ensureDqload, type RunningDqload, startDqload } from "./dqload.ts"
import { option } from "./load.ts"
import {
  cpuPerOk,
  defaultRows,
  formatCpuTable,
  formatTable,
  type LoadAverages,
  loadLine,
  type Outcome,
  parseRows,
  ratio,
  renderSvg,
  type RowResult,
  RowsInvalid,
  type System
} from "./versusReport.ts"

export class UsageError extends Error {
  override readonly name = "UsageError"
}

/** A whole number of seconds ≥ min (dqload's --duration is whole seconds). */
export function wholeSeconds(args: ReadonlyArray<string>, name: string, fallback: number, min = 1): number {
  const text = option(args, name)
  if (text === undefined) return fallback
  const value = Number(text)
  if (!Number.isInteger(value) || value < min) throw new UsageError(`--${name} wants a whole number ≥ ${min}, not "${text}"`)
  return value
}

const stamp = () => new Date().toISOString().replace(/[:.]/g, "-")

export async function main(args: ReadonlyArray<string>): Promise<void> {
  try {
    await versus(args)
  } catch (error) {
    if (!(error instanceof UsageError) && !(error instanceof RowsInvalid)) throw error
    process.stderr.write(`versus-dqlite: ${(error as Error).message}\n`)
    process.exitCode = 2
  }
}

async function versus(args: ReadonlyArray<string>): Promise<void> {
  const seconds = wholeSeconds(args, "seconds", 10)
  const opTimeoutSeconds = wholeSeconds(args, "op-timeout", 10)
  const warmupSeconds = wholeSeconds(args, "warmup", 5, 0)
  const specs = parseRows(option(args, "rows") ?? defaultRows)
  const plotFile = option(args, "plot") ?? path.join(os.tmpdir(), `tqlite-versus-dqlite-${stamp()}.svg`)
  const jsonFile = option(args, "json") ?? plotFile.replace(/\.svg$/, "") + ".json"
  const log = (line: string) => process.stderr.write(`${line}\n`)

  await ensureBundle(log)
  const dqload = await ensureDqload(option(args, "dqload"), log)
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tqlite-versus-"))
  const rows: Array<RowResult> = []
  const loadBefore = os.loadavg()
  const startedAt = new Date().toISOString()
  let running: RunningDqload | null = null
  // Set on Ctrl-C: the row in progress is partial and is not recorded; the loop then waits for
  // the handler, which exits 130 once it has cleaned up and reported.
  let interruption: Promise<void> | null = null

  const report = (partial: boolean) => {
    const load: LoadAverages = { before: loadBefore, after: os.loadavg(), cpus: os.cpus().length }
    const title = `dqload (go-dqlite driver): 3 dqlite-demo vs 3 tqlite processes, ${seconds} s per row`
    process.stdout.write(`\n${title}${partial ? " — INTERRUPTED, rows so far" : ""}\n\n${formatTable(rows)}\n\n${formatCpuTable(rows, seconds)}\n\n${loadLine(load)}\n`)
    fs.writeFileSync(plotFile, renderSvg(rows, title))
    const json = {
      benchmark: "versus-dqlite", startedAt, finishedAt: new Date().toISOString(), interrupted: partial, secondsPerRow: seconds, opTimeoutSeconds, warmupSeconds,
      machine: { cpus: load.cpus, loadavgBefore: load.before, loadavgAfter: load.after, node: process.version, platform: `${os.platform()} ${os.release()}` },
      dqload,
      rows: rows.map((row) => ({
        ...row.spec, first: row.first, dqlite: row.dqlite, tqlite: row.tqlite, ratio: ratio(row),
        cpuMicrosPerOk: { dqlite: cpuPerOk(row, "dqlite", seconds), tqlite: cpuPerOk(row, "tqlite", seconds) }
      }))
    }
    fs.writeFileSync(jsonFile, JSON.stringify(json, null, 2) + "\n")
    process.stdout.write(`plot: ${plotFile}\nresults: ${jsonFile}\n`)
  }
  const cleanUp = async () => {
    running?.stop()
    await stopTracked(3_000)
    fs.rmSync(dir, { recursive: true, force: true })
  }
  const removeHandler = onInterrupt(() =>
    interruption = (async () => {
      await cleanUp()
      report(true)
    })()
  )

  try {
    log(`starting 3 dqlite-demo and 3 tqlite processes (data in ${dir}) …`)
    const clusters: Record<System, Cluster> = {
      dqlite: await startDqlite(subdir(dir, "dqlite")),
      tqlite: await startTqlite(subdir(dir, "tqlite"))
    }
    log(`dqlite ${clusters.dqlite.servers.join(",")}; tqlite ${clusters.tqlite.servers.join(",")}`)
    for (const system of warmupSeconds > 0 ? (["dqlite", "tqlite"] as const) : []) {
      running = startDqload(dqload, {
        servers: clusters[system].servers, database: "warmup", workload: "kvreadwrite", workers: 8, seconds: warmupSeconds, opTimeoutSeconds
      })
      const warmed = await outcomeOf(running.result)
      running = null
      if (interruption !== null) return await interruption
      log(`  warm-up ${system} (kvreadwrite ×8, ${warmupSeconds} s, not measured): ${describe(warmed)}`)
    }
    for (const [i, spec] of specs.entries()) {
      const order: ReadonlyArray<System> = i % 2 === 0 ? ["dqlite", "tqlite"] : ["tqlite", "dqlite"]
      const outcomes: Partial<Record<System, Outcome>> = {}
      const cpu: Partial<Record<System, ReadonlyArray<number>>> = {}
      for (const system of order) {
        const pids = clusters[system].pids
        const cpuBefore = pids.map(cpuMicros)
        running = startDqload(dqload, {
          servers: clusters[system].servers, database: `row${i}_${spec.workload}_${spec.workers}`, workload: spec.workload,
          workers: spec.workers, seconds, opTimeoutSeconds
        })
        outcomes[system] = await outcomeOf(running.result)
        cpu[system] = pids.map((pid, n) => cpuMicros(pid) - cpuBefore[n]!)
        running = null
        if (interruption !== null) return await interruption
        log(`  ${spec.workload} ×${spec.workers} ${system}: ${describe(outcomes[system])}`)
      }
      rows.push({ spec, first: order[0]!, dqlite: outcomes.dqlite!, tqlite: outcomes.tqlite!, cpuMicros: { dqlite: cpu.dqlite!, tqlite: cpu.tqlite! } })
    }
  } finally {
    removeHandler()
    await cleanUp()
  }
  report(false)
}

function subdir(dir: string, name: string): string {
  fs.mkdirSync(path.join(dir, name))
  return path.join(dir, name)
}

const outcomeOf = (result: Promise<DqloadResult>): Promise<Outcome> =>
  result.then((r) => ({ result: r }), (error: unknown) => ({ error: error instanceof Error ? error.message : String(error) }))

const describe = (outcome: Outcome | undefined) =>
  outcome === undefined ? "?" : "result" in outcome ? `${outcome.result.ok_per_s.toFixed(0)} ok/s` : `failed: ${outcome.error}`
