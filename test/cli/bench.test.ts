// `tqlite bench`: its arguments, and the load generator against a live one-node tqlite over the
// wire (real sockets on loopback): it does work, counts it, and leaves the rows it wrote.
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { spawn } from "node:child_process"
import * as path from "node:path"
import { parseBenchArgs } from "../../src/cli/commands/bench.ts"
import { prepare, run, table } from "../../src/cli/loadgen.ts"
import { make as makeClient } from "../../src/net/client/Client.ts"
import { startNode, tempDir } from "../loopback.ts"
import { cliArgs } from "../bundle.ts"

const root = path.resolve(import.meta.dirname, "../..")

describe("tqlite bench", () => {
  it("parses its arguments and refuses bad ones", () => {
    const ok = parseBenchArgs(["--servers", "127.0.0.1:9001,127.0.0.1:9002", "--workers", "16", "--workload", "mixed", "kv"])
    expect(ok).toEqual({
      servers: ["127.0.0.1:9001", "127.0.0.1:9002"],
      database: "kv",
      load: { workers: 16, seconds: 10, workload: "mixed", valueBytes: 100, keySpace: 100_000 }
    })
    expect(parseBenchArgs([])).toEqual({ error: "--servers HOST:PORT[,...] is required" })
    expect(parseBenchArgs(["--servers", "a:1", "--workers", "0"])).toHaveProperty("error")
    expect(parseBenchArgs(["--servers", "a:1", "--workload", "delete"])).toHaveProperty("error")
    expect(parseBenchArgs(["--servers", "a:1", "--seconds", "-1"])).toHaveProperty("error")
    expect(parseBenchArgs(["--servers", "a:1", "one", "two"])).toHaveProperty("error")
  })

  it.live("runs a mixed workload against a live node and counts what it did", () =>
    Effect.scoped(
      Effect.gen(function*() {
        const node = yield* startNode({ dataDir: yield* tempDir("tqlite-bench-"), join: [], tickMs: 50 })
        const address = node.node.identity.address
        const client = yield* makeClient({ servers: [address], database: "bench", connectionsMax: 4 })
        const load = { workers: 4, seconds: 1.5, workload: "mixed" as const, valueBytes: 64, keySpace: 500 }
        yield* prepare(client, load)
        const filled = yield* client.query(`SELECT count(*) FROM ${table}`)
        expect(filled.rows[0]?.[0]).toBe(500)
        const progress: Array<number> = []
        const report = yield* run(client, { ...load, onProgress: (done) => Effect.sync(() => void progress.push(done)) })
        expect(report.failures).toEqual({})
        expect(report.operations).toBeGreaterThan(20)
        expect(report.perSecond).toBeCloseTo(report.operations / report.seconds, 5)
        expect(report.seconds).toBeGreaterThanOrEqual(1.5)
        expect(report.latency.p50).toBeGreaterThan(0)
        expect(report.latency.p50).toBeLessThanOrEqual(report.latency.p95)
        expect(report.latency.p99).toBeLessThanOrEqual(report.latency.max)
        expect(progress.length).toBeGreaterThanOrEqual(1)
        // Writes were upserts into the key space: still 500 rows, every value 64 bytes.
        const after = yield* client.query(`SELECT count(*), min(length(v)), max(length(v)) FROM ${table}`)
        expect(after.rows[0]).toEqual([500, 64, 64])
      })
    ), 60_000)

  it.live("Ctrl-C ends a run early: the summary so far, exit 130", () =>
    Effect.scoped(
      Effect.gen(function*() {
        const node = yield* startNode({ dataDir: yield* tempDir("tqlite-bench-int-"), join: [], tickMs: 50 })
        const address = node.node.identity.address
        const child = spawn(process.execPath, [...cliArgs, "bench", "--servers", address, "--workers", "2", "--seconds", "120", "--keys", "50"], { cwd: root, stdio: ["ignore", "pipe", "pipe"] })
        let out = ""
        let err = ""
        child.stdout.on("data", (chunk: Buffer) => void (out += chunk.toString()))
        // Interrupt once the run has made progress (its first progress line).
        const progressed = new Promise<void>((resolve) => child.stderr.on("data", (chunk: Buffer) => {
          err += chunk.toString()
          if (/\d+ s: \d+ operations/.test(err)) resolve()
        }))
        const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)))
        yield* Effect.promise(() => progressed).pipe(Effect.timeoutFail({ duration: "60 seconds", onTimeout: () => new Error(`no progress: ${err}`) }))
        child.kill("SIGINT")
        const code = yield* Effect.promise(() => exited).pipe(Effect.timeoutFail({ duration: "20 seconds", onTimeout: () => new Error("bench did not exit after SIGINT") }))
        expect(code).toBe(130)
        expect(out).toMatch(/^\d+ operations in \d+\.\d s: \d+\/s; latency ms p50 /)
        expect(Number(/in (\d+\.\d) s/.exec(out)?.[1])).toBeLessThan(100)
      })
    ), 120_000)
})
