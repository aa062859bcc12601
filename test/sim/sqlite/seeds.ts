// The SQLite simulator's seeds in CI: 200 seeds, each a short schedule (100 ticks of faults, 60
// ticks of healed service; `npm run sim -- --sqlite` runs the full 300 + 200), split over four
// test files so vitest runs them on every core. One test per seed (a seed runs synchronously;
// between seeds the worker's event loop answers vitest), then one that checks the shard did real work
// under faults, so a shard cannot pass by doing nothing.
import { expect, it } from "vitest"
import { runSqliteSeed } from "../full/runSqliteSeed.ts"

export const ciSchedule = { faultTicks: 100, healTicks: 60 } as const

export function sqliteSeedShard(first: number, last: number): void {
  let operations = 0
  let faults = 0
  let ran = 0
  for (let seed = first; seed <= last; seed++) {
    it(`seed ${seed}`, async () => {
      // Let the worker's event loop answer vitest's RPC before the next synchronous seed.
      await new Promise<void>((resolve) => setTimeout(resolve, 1))
      const result = runSqliteSeed({ seed, ...ciSchedule })
      operations += result.operations
      faults += result.faults
      ran++
      expect(result.violations.map((v) => `${v.invariant}: ${v.detail.slice(0, 300)}`)).toEqual([])
    }, 120_000)
  }
  it(`seeds ${first}–${last} did real work under faults`, () => {
    const seeds = last - first + 1
    expect(ran).toBe(seeds)
    expect(operations).toBeGreaterThan(seeds * 30)
    expect(faults).toBeGreaterThan(seeds)
  })
}
