// `tqlite start` as users run it, with the observability flags: --log-format json writes one JSON
// object per line, each carrying the node id; --log-level filters; --metrics serves /health and
// /metrics; bad values are refused with exit code 2.
import { type ChildProcess, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, describe, expect, it, vi } from "vitest"
import { start } from "../../src/cli/commands/start.ts"
import { parseExposition, sampleValue } from "./exposition.ts"
import { freePort } from "../process/harness.ts"
import { cliArgs } from "../bundle.ts"

const root = path.resolve(import.meta.dirname, "../..")
const children = new Set<ChildProcess>()

afterAll(() => {
  for (const child of children) child.kill("SIGKILL")
})

interface Started {
  readonly child: ChildProcess
  readonly stdout: () => string
  readonly stderr: () => string
  readonly exited: Promise<number | null>
}

function tqlite(args: ReadonlyArray<string>): Started {
  const child = spawn(process.execPath, [...cliArgs, ...args], { cwd: root, stdio: ["ignore", "pipe", "pipe"] })
  let stdout = ""
  let stderr = ""
  child.stdout?.on("data", (chunk: Buffer) => (stdout += chunk.toString()))
  child.stderr?.on("data", (chunk: Buffer) => (stderr += chunk.toString()))
  children.add(child)
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => {
    children.delete(child)
    resolve(code)
  }))
  return { child, stdout: () => stdout, stderr: () => stderr, exited }
}

async function startNode(extra: ReadonlyArray<string>) {
  const address = `127.0.0.1:${await freePort()}`
  const metrics = `127.0.0.1:${await freePort()}`
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "tqlite-obs-cli-"))
  return { metrics, started: tqlite(["start", "--address", address, "--data-dir", dataDir, "--metrics", metrics, ...extra]) }
}

/** Polls `url` (real time) until it answers `status`; returns its body. */
async function until(url: string, status: number, started: Started, timeoutMs = 40_000): Promise<string> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    try {
      const response = await fetch(url, { signal: AbortSignal.timeout(2000) })
      const body = await response.text()
      if (response.status === status) return body
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`${url} never answered ${status}; output:\n${started.stdout()}\n${started.stderr()}`)
    await new Promise((r) => setTimeout(r, 100))
  }
}

describe("tqlite start with observability flags", () => {
  it("logs JSON lines annotated with the node id and serves /health and /metrics", async () => {
    const { metrics, started } = await startNode(["--log-format", "json", "--log-level", "info"])
    const health = JSON.parse(await until(`http://${metrics}/health`, 200, started)) as { nodeId: number; role: string }
    expect(health.role).toBe("leader")
    const families = parseExposition(await (await fetch(`http://${metrics}/metrics`)).text())
    expect(sampleValue(families, "tqlite_raft_role", { role: "leader", node_id: String(health.nodeId) })).toBe(1)

    const lines = started.stdout().split("\n").filter((l) => l.length > 0)
    expect(lines.length).toBeGreaterThan(0)
    for (const line of lines) {
      const entry = JSON.parse(line) as { message: unknown; logLevel: string; annotations: Record<string, string> }
      expect(entry.annotations.node_id).toBe(String(health.nodeId))
      expect(["INFO", "WARN", "ERROR", "FATAL"]).toContain(entry.logLevel)
    }
    expect(lines.some((l) => (JSON.parse(l) as { message: string }).message === "tqlite 0.1.0 started")).toBe(true)
    started.child.kill("SIGTERM")
    expect(await started.exited).toBe(0)
  }, 60_000)

  it("refuses a bad --log-format, --log-level or --metrics with exit code 2", () => {
    const cases = [
      { args: ["--log-format", "xml"], says: /--log-format must be one of pretty, json, logfmt/ },
      { args: ["--log-level", "loud"], says: /--log-level must be one of/ },
      { args: ["--metrics", "nowhere"], says: /--metrics wants HOST:PORT, not "nowhere"/ }
    ]
    for (const c of cases) {
      let written = ""
      const stderr = vi.spyOn(process.stderr, "write").mockImplementation((chunk) => {
        written += String(chunk)
        return true
      })
      try {
        // Refused while parsing arguments: nothing starts.
        void start.run(["--data-dir", os.tmpdir(), ...c.args])
        expect(process.exitCode).toBe(2)
        expect(written).toMatch(c.says)
      } finally {
        stderr.mockRestore()
        process.exitCode = undefined
      }
    }
  })
})
