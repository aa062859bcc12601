// Crash at every point: for each mutating disk call of a workload (open, appends, truncations,
// compactions, installed snapshots, segment rolls and removals), a fresh simulated disk crashes
// at exactly that call — losing what was not synced, keeping random prefixes, tearing writes,
// or writing sectors out of order — and the log is reopened. The recovered log must be exactly
// the state after the calls that returned, or that plus a prefix of the steps of the call in
// flight: nothing acknowledged lost, nothing invented, nothing out of order. Then a second crash
// hits the recovery itself, and a third an append after it.
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import type { PersistBatch, Recovered } from "../../src/storage/LogStore.ts"
import { Prng } from "../sim/Prng.ts"
import { makeSimDisk } from "../sim/SimDisk.ts"
import type { CrashMode, SimDisk } from "../sim/SimDisk.ts"
import { allowedAfter, allowedStates, command, diffRecovered, generateWorkload, matchAllowed, openLog, reload } from "./workload.ts"

/** Runs the calls until the disk crashes; returns how many returned (-1: the open did not). */
const runCalls = (sim: SimDisk, calls: ReadonlyArray<ReadonlyArray<PersistBatch>>) =>
  Effect.gen(function* () {
    let acked = -1
    yield* Effect.exit(Effect.scoped(Effect.gen(function* () {
      const store = yield* openLog(sim.layer)
      acked = 0
      for (const call of calls) {
        yield* store.persist(call)
        acked++
      }
    })))
    return acked
  })

const describeState = (r: Recovered) =>
  `hs=${JSON.stringify(r.hardState)} base=${r.base.index}/${r.base.term} last=${r.entries.at(-1)?.index ?? r.base.index}`

const checkAllowed = (label: string, recovered: Recovered, allowed: ReadonlyArray<Recovered>): number => {
  const at = matchAllowed(recovered, allowed)
  if (at === -1) {
    const closest = allowed.map((s) => diffRecovered(recovered, s)).join("\n  ")
    expect.fail(`${label}: recovered ${describeState(recovered)} is not an allowed state:\n  ${closest}`)
  }
  return at
}

/** One crash point: crash at op `n`, recover (with a crash inside recovery at a random op),
 * then crash a follow-up append at a random op. */
const crashPoint = (seed: number, calls: ReadonlyArray<ReadonlyArray<PersistBatch>>, n: number, mode: CrashMode) =>
  Effect.gen(function* () {
    const label = `seed ${seed} mode ${mode} op ${n}`
    const sim = makeSimDisk({ seed: seed * 7919 + n })
    const prng = new Prng(seed * 104729 + n)
    sim.driver.crashAtOp(n, mode)
    const acked = yield* runCalls(sim, calls)
    expect(sim.driver.isCrashed(), `${label}: the crash fired`).toBe(true)
    sim.driver.restart()
    const allowed = acked < 0 ? allowedStates(calls, 0).slice(0, 1) : allowedStates(calls, acked)

    // A crash during recovery (it may cut a torn tail, rewrite a checkpoint, remove segments).
    sim.driver.crashAtOp(sim.driver.ops() + prng.int(0, 10), mode)
    const first = yield* Effect.either(reload(sim.layer))
    if (first._tag === "Left") {
      expect(sim.driver.isCrashed(), `${label}: recovery failed without a crash: ${first.left.message}`).toBe(true)
      sim.driver.restart()
    }
    sim.driver.crashAtOp(null)
    const recovered = yield* reload(sim.layer)
    checkAllowed(label, recovered, allowed)

    // The log goes on from there, and survives a crash in its next append.
    const last = recovered.entries.at(-1)?.index ?? recovered.base.index
    const term = Math.max(recovered.hardState.term, 1)
    const next: ReadonlyArray<PersistBatch> = [{
      hardState: { term, vote: recovered.hardState.term === term ? recovered.hardState.vote : 1, commit: recovered.hardState.commit },
      entries: [command(last + 1, term, 500), command(last + 2, term, 3000), command(last + 3, term, 10)]
    }]
    sim.driver.crashAtOp(sim.driver.ops() + prng.int(0, 14), mode)
    const again = yield* runCalls(sim, [next])
    if (sim.driver.isCrashed()) sim.driver.restart()
    sim.driver.crashAtOp(null)
    const final = yield* reload(sim.layer)
    const allowedFinal = again === 1 ? allowedAfter(recovered, next).slice(-1) : allowedAfter(recovered, next)
    checkAllowed(`${label}, after the follow-up append`, final, allowedFinal)
  })

describe("crash at every point", () => {
  const seedsByMode = { lose: [1, 2], prefix: [3, 4], sectors: [5, 6] } as const
  for (const mode of ["lose", "prefix", "sectors"] as const) {
    it.effect(`every op of a random workload, crash mode "${mode}"`, () =>
      Effect.gen(function* () {
        for (const seed of seedsByMode[mode]) {
          const calls = generateWorkload({ seed, calls: 40, payloadBytesMax: 600 })
          const dry = makeSimDisk({ seed })
          expect(yield* runCalls(dry, calls)).toBe(calls.length)
          const totalOps = dry.driver.ops()
          expect(totalOps).toBeGreaterThan(80)
          for (let n = 0; n < totalOps; n++) yield* crashPoint(seed, calls, n, mode)
        }
      }), 120_000)
  }

  it.effect("acknowledged entries survive a whole series of crashes at random points", () =>
    Effect.gen(function* () {
      const sim = makeSimDisk({ seed: 99 })
      const prng = new Prng(99)
      let durable: Recovered | null = null
      for (let round = 0; round < 60; round++) {
        const calls = generateWorkload({ seed: 1000 + round, calls: 1 })
        sim.driver.crashAtOp(sim.driver.ops() + prng.int(0, 25), prng.pick(["lose", "prefix", "sectors"] as const))
        // each round starts from what the disk holds, appending past it
        sim.driver.crashAtOp(null)
        const start = yield* reload(sim.layer)
        if (durable !== null) checkAllowed(`round ${round} start`, start, [durable])
        const last = start.entries.at(-1)?.index ?? start.base.index
        const term = Math.max(start.hardState.term, 1)
        const entries = calls[0]![0]!.entries.map((_, i) => command(last + 1 + i, term, prng.int(0, 2000)))
        const call: ReadonlyArray<PersistBatch> = [{ entries }]
        sim.driver.crashAtOp(sim.driver.ops() + prng.int(0, 12), prng.pick(["lose", "prefix", "sectors"] as const))
        const acked = yield* runCalls(sim, [call])
        if (sim.driver.isCrashed()) sim.driver.restart()
        sim.driver.crashAtOp(null)
        const after = yield* reload(sim.layer)
        const allowed = allowedAfter(start, call)
        checkAllowed(`round ${round}`, after, acked === 1 ? allowed.slice(-1) : allowed)
        durable = after
      }
    }))
})
