// npm run sim -- --seeds N [--start S] | --seed S [--trace] [--mutation NAME] [--full]
// --full runs the whole actor stack of every node (src/actors) instead of the bare cores.
// --sqlite runs the full stack with the SQLite state machine and a random SQL workload.
// Runs seeds of the deterministic simulator and prints, last:
//   sim: N seeds, E elections, C entries committed, F faults injected, V violations
import { parseArgs } from "node:util"
import type { Mutation } from "./fast/runSeed.ts"
import { runSeed } from "./fast/runSeed.ts"
import { runFullSeed } from "./full/runFullSeed.ts"
import type { SqliteMutation } from "./full/runSqliteSeed.ts"
import { runSqliteSeed } from "./full/runSqliteSeed.ts"

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
    sqlite: { type: "boolean", default: false }
  }
})

const single = values.seed !== undefined
const start = Number(values.seed ?? values.start ?? 1)
const count = single ? 1 : Number(values.seeds ?? 100)
const mutation = values.mutation
const mutationsKnown: ReadonlyArray<string> = values.sqlite ? ["drop-follower-page", "ack-failed", "fail-acked"] : ["commit-old-term", "double-vote", "forget-vote"]
if (mutation !== undefined && !mutationsKnown.includes(mutation)) {
  process.stderr.write(`unknown mutation '${mutation}'; known here: ${mutationsKnown.join(", ")}\n`)
  process.exit(2)
}
if (!Number.isSafeInteger(start) || !Number.isSafeInteger(count) || count <= 0) {
  process.stderr.write("usage: npm run sim -- --seeds N [--start S] | --seed S [--trace] [--mutation NAME]\n")
  process.exit(2)
}

const started = Date.now()
let elections = 0
let committed = 0
let faults = 0
let violations = 0
let failedSeeds = 0
let undecided = 0
for (let seed = start; seed < start + count; seed++) {
  if (values.full && mutation !== undefined) {
    process.stderr.write("--mutation applies to the fast and the SQLite simulators\n")
    process.exit(2)
  }
  const common = {
    seed,
    ...(values.ticks !== undefined ? { faultTicks: Number(values.ticks) } : {}),
    ...(values.trace ? { trace: (line: string) => void process.stdout.write(`${line}\n`) } : {})
  }
  const result = values.sqlite
    ? runSqliteSeed({
      ...common,
      ...(mutation !== undefined ? { mutation: mutation as SqliteMutation } : {}),
      ...(values["heal-ticks"] !== undefined ? { healTicks: Number(values["heal-ticks"]) } : {})
    })
    : values.full
    ? runFullSeed(common)
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
