// `npm run bench -- embed-reads`, CI-sized: both modes run on a real 3-node embedded cluster
// (half a second each, 2 readers per node, a writer on the leader), every node's readers get
// answers in both, nothing fails, and the temp dir goes. The numbers are not judged here: this
// is a smoke test, not a benchmark (the README and docs/embedding.md hold measured ones).
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Effect } from "effect"
import { describe, expect, it } from "vitest"
import { run, runProcesses } from "../../bench/embedReads.ts"

describe("bench embed-reads", () => {
  it("leader-only and local modes each serve every node's readers without errors", async () => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), "tqlite-embed-reads-smoke-"))
    try {
      const results = await Effect.runPromise(run({ seconds: 0.5, readers: 2, leaderReaders: 2, writers: 1, rows: 50, root }))
      expect(results.map((r) => r.mode)).toEqual(["leader only", "each node locally"])
      for (const result of results) {
        expect(result.errors).toBe(0)
        expect(result.perNode).toHaveLength(3)
        for (const perSecond of result.perNode) expect(perSecond).toBeGreaterThan(0)
        expect(result.writes).toBeGreaterThan(0)
        expect(result.p99Ms).toBeGreaterThanOrEqual(result.p50Ms)
      }
    } finally {
      fs.rmSync(root, { recursive: true, force: true })
    }
  }, 120_000)
})

describe("bench embed-reads --processes", () => {
  it("three node processes (one service instance each) answer both modes without errors", async () => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), "tqlite-embed-reads-processes-smoke-"))
    try {
      const results = await runProcesses({ seconds: 0.5, readers: 2, leaderReaders: 2, writers: 0, rows: 50, root })
      expect(results.map((r) => r.mode)).toEqual(["leader only", "each node locally"])
      for (const result of results) {
        expect(result.errors).toBe(0)
        for (const perSecond of result.perNode) expect(perSecond).toBeGreaterThan(0)
        // Every process's CPU over the mode, the leader's included.
        expect(result.cpuMs).toHaveLength(3)
        for (const ms of result.cpuMs ?? []) expect(ms).toBeGreaterThan(0)
      }
    } finally {
      fs.rmSync(root, { recursive: true, force: true })
    }
  }, 240_000)
})
