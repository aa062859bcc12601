// The chaos suite's short run in CI: real nodes, the faults that work on main, both clients,
// all four checkers and the final content comparison: 1.25 minutes of faults, about two in all. It needs
// root (network namespaces, tmpfs) and Go with Debian's go-dqlite (.ci/run installs them); it
// fails rather than skips when they are missing. A failure prints the seed and the command that
// replays it.
import { spawn } from "node:child_process"
import * as path from "node:path"
import { describe, expect, it } from "vitest"

const root = path.resolve(import.meta.dirname, "../..")
const faults = "kill,pause,partition,cluster-kill,disk-full,bitflip"
const minutes = 1.25

function runChaos(seed: number): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ["--import", "tsx", path.join(root, "test/chaos/main.ts"), "--minutes", String(minutes), "--seed", String(seed), "--faults", faults], {
      cwd: root,
      stdio: ["ignore", "pipe", "pipe"]
    })
    let output = ""
    child.stdout.on("data", (chunk: Buffer) => (output += chunk.toString()))
    child.stderr.on("data", (chunk: Buffer) => (output += chunk.toString()))
    child.on("exit", (code) => resolve({ code, output }))
  })
}

describe("chaos suite (short run)", () => {
  it(`survives ${faults} with nothing lost, linearizable registers and identical nodes`, async () => {
    const seed = Number(process.env["CHAOS_SEED"] ?? Date.now() % 1_000_000)
    const { code, output } = await runChaos(seed)
    const summary = /^chaos: seed (\d+), (\d+) ops \((\d+) ok, (\d+) failed, (\d+) unknown\), (\d+) faults, (\d+) violations$/m.exec(output)
    const context = `seed ${seed} (replay: CHAOS_SEED=${seed} npx vitest run test/chaos/chaos.test.ts, or npm run chaos -- --minutes ${minutes} --seed ${seed} --faults ${faults})\n${output}`
    expect(summary, context).not.toBeNull()
    console.log(`${summary![0]} (replay: CHAOS_SEED=${seed})`)
    const [, , , ok, , , faultCount, violations] = summary!.map(Number)
    expect(violations, context).toBe(0)
    expect(code, context).toBe(0)
    expect(faultCount, context).toBeGreaterThanOrEqual(2)
    expect(ok, context).toBeGreaterThan(200)
  }, 300_000)
})
