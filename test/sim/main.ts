// npm run sim -- --seeds N [--start S] | --seed S [--trace] [--mutation NAME] [--full]
// --full runs the whole actor stack of every node (src/actors) instead of the bare cores.
// --sqlite runs the full stack with the SQLite state machine and a random SQL workload.
// Runs seeds of the deterministic simulator and prints, last:
//   sim: N seeds, E elections, C entries committed, F faults injected, V violations
import { parseArgs } from "node:util"
import type { Mutation } from "./fast/runSeed.ts"
import { runSeed } from "./fast/runSeed.ts"
import { runFullSeed } from "./full/runFullSeed.ts"
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
const mutation = values.mutation as Mutation | undefined
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
  const run = values.sqlite ? runSqliteSeed : values.full ? runFullSeed : runSeed
  if ((values.full || values.sqlite) && mutation !== undefined) {
    process.stderr.write("--mutation applies to the fast simulator only\n")
    process.exit(2)
  }
  const result = run({
    seed,
    ...(mutation !== undefined ? { mutation } : {}),
    ...(values.ticks !== undefined ? { faultTicks: Number(values.ticks) } : {}),
    ...(values["heal-ticks"] !== undefined ? { healTicks: Number(values["heal-ticks"]) } : {}),
    ...(values.trace ? { trace: (line: string) => process.stdout.write(`${line}\n`) } : {})
  })
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
