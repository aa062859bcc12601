// `npm run bench -- versus-dqlite` end to end, CI-sized: real dqlite-demo and tqlite processes,
// dqload built from ../shared/tools/dqload into its cache dir on first use (~5–8 s cold on 2 cores;
// .ci/run installs Go, go-dqlite and dqlite-demo), one second a row. It proves the wiring — both
// clusters answer the same client, the rows interleave, the table, plot and JSON agree — and that
// every process and temp dir is gone afterwards, also after Ctrl-C (exit 130, the rows so far).
// Then `long-query` with a 1 s query: every piece measured and each of issue 12's three targets
// judged. The numbers themselves are not judged here: this is a smoke test, not a benchmark.
import { type ChildProcess, execFileSync, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, describe, expect, it } from "vitest"

const root = path.resolve(import.meta.dirname, "../..")
const scratch = fs.mkdtempSync(path.join(os.tmpdir(), "tqlite-versus-smoke-"))
afterAll(() => fs.rmSync(scratch, { recursive: true, force: true }))

interface Run {
  readonly child: ChildProcess
  readonly done: Promise<{ code: number | null; stdout: string; stderr: string }>
  readonly stderrSoFar: () => string
}

function bench(args: ReadonlyArray<string>): Run {
  const child = spawn(process.execPath, ["--import", "tsx", path.join(root, "bench/main.ts"), ...args], { cwd: root, stdio: ["ignore", "pipe", "pipe"] })
  let stdout = ""
  let stderr = ""
  child.stdout!.on("data", (chunk: Buffer) => (stdout += chunk.toString()))
  child.stderr!.on("data", (chunk: Buffer) => (stderr += chunk.toString()))
  const done = new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) =>
    child.once("close", (code) => resolve({ code, stdout, stderr }))
  )
  return { child, done, stderrSoFar: () => stderr }
}

const withoutStacks = (text: string) => text.split("\n").filter((line) => !/^\s+at /.test(line)).join("\n")

/** The run's temp dir (it logs "data in DIR") and the processes still naming it. */
function leftovers(stderr: string): { dir: string; exists: boolean; processes: Array<string> } {
  const dir = /data in (\S+)\)/.exec(stderr)?.[1]
  expect(dir, `no "data in DIR" in: ${stderr}`).toBeDefined()
  const processes = execFileSync("ps", ["-eo", "pid,args"], { encoding: "utf8" }).split("\n").filter((line) => line.includes(dir!))
  return { dir: dir!, exists: fs.existsSync(dir!), processes }
}

describe("versus-dqlite and long-query (smoke)", () => {
  it("runs both clusters under dqload, interleaved, and writes the table, plot and JSON", async () => {
    const plot = path.join(scratch, "full.svg")
    const json = path.join(scratch, "full.json")
    const { code, stdout, stderr } = await bench(["versus-dqlite", "--seconds", "1", "--warmup", "1", "--rows", "kvwrite:1,kvreadwrite:2", "--plot", plot, "--json", json]).done
    expect(code, withoutStacks(stderr)).toBe(0)
    const results = JSON.parse(fs.readFileSync(json, "utf8")) as {
      interrupted: boolean
      rows: Array<{ workload: string; workers: number; first: string; ratio: number; dqlite: { result: { ok: number; ok_per_s: number } }; tqlite: { result: { ok: number; ok_per_s: number; errors: number } } }>
    }
    expect(results.interrupted).toBe(false)
    expect(results.rows.map((r) => `${r.workload}:${r.workers} ${r.first}`)).toEqual(["kvwrite:1 dqlite", "kvreadwrite:2 tqlite"])
    for (const row of results.rows) {
      expect(row.dqlite.result.ok, JSON.stringify(row)).toBeGreaterThan(0)
      expect(row.tqlite.result.ok, JSON.stringify(row)).toBeGreaterThan(0)
      // tqlite queues concurrent writers instead of answering SQLITE_BUSY.
      expect(row.tqlite.result.errors, JSON.stringify(row)).toBe(0)
      expect(row.ratio).toBeCloseTo(row.tqlite.result.ok_per_s / row.dqlite.result.ok_per_s, 6)
      expect(stdout).toContain(`| ${row.workload} | ${row.workers} | ${Math.round(row.dqlite.result.ok_per_s).toLocaleString("en-US")} (`)
    }
    // Both clusters warmed up before the first row, unmeasured.
    expect(stderr).toMatch(/warm-up dqlite \(kvreadwrite ×8, 1 s, not measured\): \d+ ok\/s/)
    expect(stderr).toMatch(/warm-up tqlite \(kvreadwrite ×8, 1 s, not measured\): \d+ ok\/s/)
    // The CPU table: each system's servers' CPU per ok op, measured from /proc.
    expect(stdout).toMatch(/\| kvwrite \| 1 \| [\d,]+ \([\d,]+\) \| [\d,]+ \([\d,]+\) \| [\d.]+ \|/)
    expect(stdout).toMatch(/machine load \(1\/5\/15 min\) before [\d.]+ [\d.]+ [\d.]+, after/)
    expect(fs.readFileSync(plot, "utf8").match(/<polyline class="series"/g)).toHaveLength(4)
    const left = leftovers(stderr)
    expect(left.exists).toBe(false)
    expect(left.processes).toEqual([])
  }, 240_000)

  it("on Ctrl-C prints the rows so far, stops every process, removes its temp dir and exits 130", async () => {
    const json = path.join(scratch, "interrupted.json")
    const run = bench(["versus-dqlite", "--seconds", "1", "--warmup", "0", "--rows", "kvwrite:1,kvwrite:1,kvwrite:1", "--plot", path.join(scratch, "interrupted.svg"), "--json", json])
    // Interrupt in the second row, after the first one is complete.
    const deadline = Date.now() + 180_000
    while (!/kvwrite ×1 tqlite: /.test(run.stderrSoFar()) && Date.now() < deadline && run.child.exitCode === null) {
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
    expect(withoutStacks(run.stderrSoFar())).toMatch(/kvwrite ×1 tqlite: /)
    run.child.kill("SIGINT")
    const { code, stdout, stderr } = await run.done
    expect(code, withoutStacks(stderr)).toBe(130)
    expect(stdout).toContain("INTERRUPTED, rows so far")
    const results = JSON.parse(fs.readFileSync(json, "utf8")) as { interrupted: boolean; rows: Array<unknown> }
    expect(results.interrupted).toBe(true)
    expect(results.rows).toHaveLength(1)
    const left = leftovers(stderr)
    expect(left.exists).toBe(false)
    expect(left.processes).toEqual([])
  }, 240_000)

  it("long-query: measures the baseline, the query with its probes and the load, and judges all three targets", async () => {
    const json = path.join(scratch, "long-query.json")
    const { code, stdout, stderr } = await bench(["long-query", "--query-seconds", "1", "--seconds", "1", "--json", json]).done
    expect(code, withoutStacks(stderr)).toBe(0)
    const results = JSON.parse(fs.readFileSync(json, "utf8")) as {
      calibratedRows: number
      results: Array<{ system: string; baseline: { ok: number }; query: { seconds: number }; probeLatenciesMs: Array<number>; probeFailuresAfterMs: Array<number>; verdicts: Array<{ target: string; pass: boolean }> }>
    }
    expect(results.calibratedRows).toBeGreaterThan(0)
    expect(results.results.map((r) => r.system)).toEqual(["tqlite"])
    const [m] = results.results
    expect(m!.baseline.ok).toBeGreaterThan(0)
    expect(m!.query.seconds).toBeGreaterThan(0)
    // At least one probe was sent and timed, answered or not.
    expect(m!.probeLatenciesMs.length + m!.probeFailuresAfterMs.length).toBeGreaterThan(0)
    // Pass or fail is the machine's business here; that each target was judged and printed is ours.
    expect(m!.verdicts.map((v) => v.target)).toEqual(["no leader change", "SELECT 1 < 50 ms", "kvwrite p99 ≤ 2× baseline"])
    for (const v of m!.verdicts) expect(stdout).toContain(`${v.pass ? "PASS" : "FAIL"}  ${v.target}:`)
    const left = leftovers(stderr)
    expect(left.exists).toBe(false)
    expect(left.processes).toEqual([])
  }, 240_000)
})
