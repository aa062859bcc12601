// npm run sim -- --seeds N [--start S] | --seed S [--trace] [--mutation NAME] [--full]
// --full runs the whole actor stack of every node (src/actors) instead of the bare cores.
// --sqlite runs the full stack with the SQLite state machine and a random SQL workload;
// --paced-snapshots (with --sqlite): snapshots copied a page per simulated ms, entries applied
// meanwhile (a follower's copy-on-write); --disk-faults (with --sqlite) makes most faults full disks (the disk-full mutations);
// --no-disk-faults (with --sqlite) the mix without full disks; --stream-reads (with --sqlite)
// reads as the gateway streams them; --overflow-inserts and --isolate-leader (with --sqlite) as
// the SQLite seed options of those names. --carry-commit on|off sets RaftConfig.carryCommit
// (default: the config's own).
// With --full or --sqlite, more than --chunk seeds (default 50) run as child processes of
// --chunk seeds each, --jobs of them at a time (default 1): one process's native memory (SQLite
// page caches, freed blobs) grows with the seeds it ran, a fresh process starts clean.
// Runs seeds of the deterministic simulator and prints, last:
//   sim: N seeds, E elections, C entries committed, F faults injected, V violations
import { spawn } from "node:child_process"
import { parseArgs } from "node:util"
import type { Mutation } from "./fast/runSeed.ts"
import { runSeed } from "./fast/runSeed.ts"
import type { FullMutation } from "./full/runFullSeed.ts"
import { runFullSeed } from "./full/runFullSeed.ts"
import type { SqliteMutation } from "./full/runSqliteSeed.ts"
import { runSqliteSeed, sqliteMutations } from "./full/runSqliteSeed.ts"

const { values } = parseArgs({
  options: {
    seeds: { type: "string" },
    start: { type: "string" },
    seed: { type: "string" },
    trace: { type: "boolean", default: false },
    mutation: { type: "string" },
    ticks: { type: "string" },
    "heal-ticks": { type: "string" },
    full: { type: "boolean", default: false },
    sqlite: { type: "boolean", default: false },
    "disk-faults": { type: "boolean", default: false },
    "paced-snapshots": { type: "boolean", default: false },
    "no-disk-faults": { type: "boolean", default: false },
    "stream-reads": { type: "boolean", default: false },
    "overflow-inserts": { type: "boolean", default: false },
    "isolate-leader": { type: "boolean", default: false },
    "carry-commit": { type: "string" },
    chunk: { type: "string", default: "50" },
    jobs: { type: "string", default: "1" }
  }
})

const single = values.seed !== undefined
const start = Number(values.seed ?? values.start ?? 1)
const count = single ? 1 : Number(values.seeds ?? 100)
const mutation = values.mutation
const mutationsKnown: ReadonlyArray<string> = values.sqlite
  ? sqliteMutations
  : values.full
  ? ["lease-too-long", "follower-reads-local", "session-reads-at-once", "bounded-ignores-lag", "deferred-votes-early"]
  : ["commit-old-term", "double-vote", "forget-vote", "follower-reads-local"]
if (mutation !== undefined && !mutationsKnown.includes(mutation)) {
  process.stderr.write(`unknown mutation '${mutation}'; known here: ${mutationsKnown.join(", ")}\n`)
  process.exit(2)
}
if (!Number.isSafeInteger(start) || !Number.isSafeInteger(count) || count <= 0) {
  process.stderr.write("usage: npm run sim -- --seeds N [--start S] | --seed S [--trace] [--mutation NAME]\n")
  process.exit(2)
}

const carryArg = values["carry-commit"]
if (carryArg !== undefined && carryArg !== "on" && carryArg !== "off") {
  process.stderr.write("--carry-commit takes on or off\n")
  process.exit(2)
}
if (values["disk-faults"] && values["no-disk-faults"]) {
  process.stderr.write("--disk-faults and --no-disk-faults exclude each other\n")
  process.exit(2)
}
const carry = carryArg === undefined ? {} : { carryCommit: carryArg === "on" }

const chunk = Number(values.chunk)
const jobs = Number(values.jobs)
if (!Number.isSafeInteger(chunk) || chunk <= 0 || !Number.isSafeInteger(jobs) || jobs <= 0) {
  process.stderr.write("--chunk and --jobs take positive integers\n")
  process.exit(2)
}
if (!single && (values.full || values.sqlite) && count > chunk) {
  await runInChildren()
  process.exit(process.exitCode ?? 0)
}

/** Runs the seeds as child processes of `chunk` seeds each and adds up their summaries. */
async function runInChildren(): Promise<void> {
  const started = Date.now()
  // Every option but those that say which seeds run where, with their values.
  const placement = new Set(["--seeds", "--start", "--chunk", "--jobs"])
  const args = process.argv.slice(2)
  const passOn = args.filter((arg, i) => !placement.has(arg) && !placement.has(args[i - 1] ?? ""))
  const starts: Array<number> = []
  for (let s = start; s < start + count; s += chunk) starts.push(s)
  const totals = { seeds: 0, elections: 0, committed: 0, faults: 0, violations: 0, failing: 0, undecided: 0 }
  const runChild = (from: number) =>
    new Promise<void>((resolve, reject) => {
      const seeds = Math.min(chunk, start + count - from)
      const child = spawn(process.execPath, [...process.execArgv, process.argv[1]!, ...passOn, "--start", String(from), "--seeds", String(seeds)], { stdio: ["ignore", "pipe", "inherit"] })
      let out = ""
      child.stdout.on("data", (data: Buffer) => (out += data.toString()))
      child.on("error", reject)
      child.on("close", (code) => {
        const summary = /sim: (\d+) seeds, (\d+) elections, (\d+) entries committed, (\d+) faults injected, (\d+) violations/.exec(out)
        const detail = /\((?:[\d.]+) s, (\d+) failing seeds, (\d+) histories/.exec(out)
        if (summary === null || detail === null) return reject(new Error(`seeds ${from}..${from + seeds - 1} ended (code ${code}) without a summary:\n${out.slice(-2000)}`))
        for (const line of out.split("\n")) if (line.startsWith("seed ") || line.startsWith("  replay:")) process.stdout.write(`${line}\n`)
        totals.seeds += Number(summary[1])
        totals.elections += Number(summary[2])
        totals.committed += Number(summary[3])
        totals.faults += Number(summary[4])
        totals.violations += Number(summary[5])
        totals.failing += Number(detail[1])
        totals.undecided += Number(detail[2])
        process.stderr.write(`seeds ${from}..${from + seeds - 1}: ${summary[5]} violations (${((Date.now() - started) / 1000).toFixed(0)} s)\n`)
        resolve()
      })
    })
  const queue = [...starts]
  await Promise.all(Array.from({ length: Math.min(jobs, queue.length) }, async () => {
    for (let next = queue.shift(); next !== undefined; next = queue.shift()) await runChild(next)
  }))
  const seconds = ((Date.now() - started) / 1000).toFixed(1)
  process.stdout.write(`(${seconds} s, ${totals.failing} failing seeds, ${totals.undecided} histories too hard for the linearizability budget)\n`)
  process.stdout.write(`sim: ${totals.seeds} seeds, ${totals.elections} elections, ${totals.committed} entries committed, ${totals.faults} faults injected, ${totals.violations} violations\n`)
  process.exitCode = totals.violations > 0 ? 1 : 0
}

const started = Date.now()
let elections = 0
let committed = 0
let faults = 0
let violations = 0
let failedSeeds = 0
let undecided = 0
for (let seed = start; seed < start + count; seed++) {
  const common = {
    seed,
    ...carry,
    ...(values.ticks !== undefined ? { faultTicks: Number(values.ticks) } : {}),
    ...(values.trace ? { trace: (line: string) => void process.stdout.write(`${line}\n`) } : {})
  }
  const result = values.sqlite
    ? runSqliteSeed({
      ...common,
      ...(mutation !== undefined ? { mutation: mutation as SqliteMutation } : {}),
      ...(values["heal-ticks"] !== undefined ? { healTicks: Number(values["heal-ticks"]) } : {}),
      ...(values["disk-faults"] ? { faultMix: "disk" as const } : {}),
      ...(values["no-disk-faults"] ? { faultMix: "no-disk" as const } : {}),
      ...(values["stream-reads"] ? { streamReads: true } : {}),
      ...(values["paced-snapshots"] ? { pacedSnapshots: true } : {}),
      ...(values["overflow-inserts"] ? { overflowInserts: true } : {}),
      ...(values["isolate-leader"] ? { isolateLeader: true } : {})
    })
    : values.full
    ? runFullSeed({ ...common, ...(mutation !== undefined ? { mutation: mutation as FullMutation } : {}) })
    : runSeed({ ...common, ...(mutation !== undefined ? { mutation: mutation as Mutation } : {}) })
  elections += result.elections
  committed += result.committed
  faults += result.faults
  violations += result.violations.length
  if (result.linearizabilityUndecided) undecided++
  if (result.violations.length > 0) {
    failedSeeds++
    for (const v of result.violations) process.stdout.write(`seed ${seed}: ${v.invariant}: ${v.detail}\n`)
    process.stdout.write(`  replay: npm run sim -- --seed ${seed} --trace${mutation !== undefined ? ` --mutation ${mutation}` : ""}\n`)
  }
  if (single) process.stdout.write(`trace hash ${result.traceHash}\n`)
}
const seconds = ((Date.now() - started) / 1000).toFixed(1)
process.stdout.write(`(${seconds} s, ${failedSeeds} failing seeds, ${undecided} histories too hard for the linearizability budget)\n`)
process.stdout.write(`sim: ${count} seeds, ${elections} elections, ${committed} entries committed, ${faults} faults injected, ${violations} violations\n`)
process.exitCode = violations > 0 ? 1 : 0
