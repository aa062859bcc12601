// `npm run bench -- scale` end to end at a tiny size (8 MiB: two transactions of 4 × 1 MiB): real
// `tqlite start` processes (the bundled CLI: `npm run build` first, or the benchmark builds it),
// a snapshot every 20 entries so the stall phase sees snapshots, a joiner and a kill -9 restart.
// It proves the wiring: the JSON report has every field with a plausible value, the table is
// printed, and the temp dir is gone afterwards. The numbers themselves are not judged here.
// Also the refusals: a size out of range, and a disk without room for the run.
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, describe, expect, it } from "vitest"
import type { ScaleReport } from "../../bench/scale.ts"
import { parseGib, roomRefusal } from "../../bench/scale.ts"

const root = path.resolve(import.meta.dirname, "../..")
const scratch = fs.mkdtempSync(path.join(os.tmpdir(), "tqlite-scale-smoke-"))
afterAll(() => fs.rmSync(scratch, { recursive: true, force: true }))

function bench(args: ReadonlyArray<string>): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, ["--import", "tsx", path.join(root, "bench/main.ts"), ...args], { cwd: root, stdio: ["ignore", "pipe", "pipe"] })
  let stdout = ""
  let stderr = ""
  child.stdout!.on("data", (chunk: Buffer) => (stdout += chunk.toString()))
  child.stderr!.on("data", (chunk: Buffer) => (stderr += chunk.toString()))
  return new Promise((resolve) => child.once("close", (code) => resolve({ code, stdout, stderr })))
}

const positive = (value: unknown) => typeof value === "number" && Number.isFinite(value) && value > 0

describe("bench scale (smoke)", () => {
  it("reports every measure of a tiny database and cleans up", async () => {
    const json = path.join(scratch, "scale.json")
    const { code, stdout, stderr } = await bench([
      "scale", "--gib", "0.0078125", "--blobs-per-transaction", "4", "--snapshot-every", "20", "--stall-seconds", "20", "--dir", scratch, "--json", json
    ])
    expect(code, stderr.slice(-3000)).toBe(0)
    const report = JSON.parse(fs.readFileSync(json, "utf8")) as ScaleReport
    expect(report.gib).toBe(0.0078125)
    expect(report.transactions).toBe(2)
    expect(report.databaseBytes).toBe(8 * 1024 * 1024)
    expect(positive(report.load.seconds) && positive(report.load.mbPerSecond)).toBe(true)
    expect(report.leaderRestart.node).not.toBe(report.restart.node)
    expect(Object.keys(report.rssPeakMb).sort()).toEqual(["n1", "n2", "n3", "n4", `${report.restart.node}-restarted`, `${report.leaderRestart.node}-restarted-leader`].sort())
    for (const mb of Object.values(report.rssPeakMb)) expect(positive(mb)).toBe(true)
    expect(report.rssPeakMbMax).toBe(Math.max(...Object.values(report.rssPeakMb)))
    expect(report.stall.writes).toBeGreaterThan(0)
    expect(report.stall.afterLoadMaxMs).toBeGreaterThan(0)
    expect(report.stall.afterLoadP99Ms).toBeLessThanOrEqual(report.stall.afterLoadMaxMs)
    expect(Object.keys(report.stall.snapshotsAfterLoad).sort()).toEqual(["n1", "n2", "n3"])
    // The attribution read every node's trace stamps: its hold counts and memory peaks per node.
    expect(report.causes).not.toBeNull()
    expect(Object.keys(report.causes!.holds).sort()).toEqual(["n1", "n2", "n3"])
    for (const name of ["n1", "n2", "n3"]) expect(report.memoryPeaksMb[name]!["rss"]).toBeGreaterThan(0)
    expect(positive(report.join.seconds) && positive(report.join.mbPerSecond)).toBe(true)
    expect(positive(report.rawCopy.seconds) && positive(report.rawCopy.mbPerSecond)).toBe(true)
    expect(report.joinVsCopy).toBeCloseTo(report.join.mbPerSecond / report.rawCopy.mbPerSecond, 6)
    expect(report.restart.answersMs).toBeGreaterThan(0)
    expect(report.restart.caughtUpMs).toBeGreaterThanOrEqual(report.restart.answersMs)
    expect(report.leaderRestart.answersMs).toBeGreaterThan(0)
    expect(report.leaderRestart.caughtUpMs).toBeGreaterThanOrEqual(report.leaderRestart.answersMs)
    for (const name of ["n1", "n2", "n3", "n4"]) expect(report.diskBytes[name]).toBeGreaterThan(report.databaseBytes)
    // Each data dir by kind of file, at the end and before each kill: every node holds its
    // database file and a snapshot.
    expect(Object.keys(report.diskBreakdown).sort()).toEqual(["n1", "n2", "n3", "n4", `${report.restart.node}-killed`, `${report.leaderRestart.node}-killed-leader`].sort())
    for (const [name, breakdown] of Object.entries(report.diskBreakdown)) expect(`${name}: ${breakdown}`).toMatch(/db 1: \d+ MB/)
    for (const name of ["n1", "n2", "n3", "n4"]) expect(report.diskBreakdown[name]).toMatch(/snapshots 1: \d+ MB/)
    expect(report.machine.cpus).toBeGreaterThan(0)
    for (const row of ["load", "peak RSS per node", "longest small write after the load", "4th node join", "raw copy", "restart", "kill -9 of the leader"]) expect(stdout).toContain(row)
    // Nothing left behind: the run's temp dir is gone.
    expect(fs.readdirSync(scratch).filter((name) => name.startsWith("tqlite-scale-"))).toEqual([])
  }, 600_000)

  it("refuses a size out of range, and a disk without room for the run", async () => {
    expect(() => parseGib(undefined)).toThrow(/--gib/)
    expect(() => parseGib("0")).toThrow(/--gib/)
    expect(() => parseGib("lots")).toThrow(/--gib/)
    expect(parseGib("0.1")).toBe(0.1)
    // The room check on given free space (a real disk's size is the machine's business).
    const gib = 1024 ** 3
    expect(roomRefusal(64, 64 * gib, 100 * gib, "/data")).toMatch(/^refusing to run: 64 GiB needs about \d+(\.\d)? GiB free in \/data .* and 100\.0 GiB are$/)
    expect(roomRefusal(0.1, 0.1 * gib, 100 * gib, "/data")).toBeNull()
    // Through the process: a refused size exits non-zero, says why, and leaves nothing behind.
    const { code, stderr } = await bench(["scale", "--gib", "0", "--dir", scratch])
    expect(code).not.toBe(0)
    expect(stderr).toMatch(/--gib wants a size in GiB/)
    expect(fs.readdirSync(scratch).filter((name) => name.startsWith("tqlite-scale-"))).toEqual([])
  }, 60_000)
})
