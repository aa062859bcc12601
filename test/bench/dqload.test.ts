// bench/dqload.ts with stand-ins for dqload and its build.sh (small shell scripts): the cached
// build is reused only while newer than the sources, a run's JSON is read, `ready` waits for the
// leader line, and a dqload that ignores its deadline and SIGINT is killed within the bounds.
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, describe, expect, it } from "vitest"
import { ensureDqload, startDqload } from "../../bench/dqload.ts"

const scratch = fs.mkdtempSync(path.join(os.tmpdir(), "tqlite-dqload-test-"))
afterAll(() => fs.rmSync(scratch, { recursive: true, force: true }))

function script(file: string, body: string): string {
  fs.writeFileSync(file, `#!/usr/bin/env bash\n${body}\n`)
  fs.chmodSync(file, 0o755)
  return file
}

const json = `{"workload":"kvwrite","workers":2,"secs":1,"wall_s":1.0,"ok":10,"ok_per_s":10,"errors":0,"error_kinds":{"busy":0},"read_missing":0,"p50_ms":1,"p99_ms":2,"max_ms":3,"mean_ms":1.5,"acked_writes":10}`
const run = { servers: ["127.0.0.1:1"], database: "d", workload: "kvwrite" as const, workers: 2, seconds: 1, opTimeoutSeconds: 1 }

describe("dqload: the cached build", () => {
  it("builds once, reuses the binary while it is newer than the sources, and rebuilds after they change", async () => {
    const source = path.join(scratch, "source")
    const cache = path.join(scratch, "cache")
    fs.mkdirSync(source)
    const builds = path.join(scratch, "builds.log")
    // build.sh OUT: note the build, write a binary at OUT.
    script(path.join(source, "build.sh"), `echo build >> ${builds}; mkdir -p "$(dirname "$1")"; printf '#!/bin/sh\\n' > "$1"; chmod +x "$1"; echo "$1"`)
    fs.writeFileSync(path.join(source, "main.go"), "package main\n")
    const past = new Date(Date.now() - 60_000)
    fs.utimesSync(path.join(source, "main.go"), past, past)
    fs.utimesSync(path.join(source, "build.sh"), past, past)
    const where = { sourceDir: source, cacheDir: cache }
    const count = () => (fs.existsSync(builds) ? fs.readFileSync(builds, "utf8").trim().split("\n").length : 0)

    const binary = await ensureDqload(undefined, () => {}, where)
    expect(binary).toBe(path.join(cache, "dqload"))
    expect(fs.existsSync(binary)).toBe(true)
    expect(count()).toBe(1)
    await ensureDqload(undefined, () => {}, where)
    expect(count()).toBe(1)
    const future = new Date(Date.now() + 60_000)
    fs.utimesSync(path.join(source, "main.go"), future, future)
    await ensureDqload(undefined, () => {}, where)
    expect(count()).toBe(2)
    // --dqload PATH is used as given, and must exist.
    expect(await ensureDqload(binary, () => {}, { sourceDir: path.join(scratch, "nowhere") })).toBe(binary)
    await expect(ensureDqload(path.join(scratch, "missing"), () => {})).rejects.toThrow("no such file")
  })

  it("fails with build.sh's output when the build fails", async () => {
    const source = path.join(scratch, "broken")
    fs.mkdirSync(source)
    script(path.join(source, "build.sh"), "echo 'go: command not found' >&2; exit 1")
    await expect(ensureDqload(undefined, () => {}, { sourceDir: source, cacheDir: path.join(scratch, "cache-broken") })).rejects.toThrow("go: command not found")
  })
})

describe("dqload: a run", () => {
  it("reads the result, and `ready` waits for the leader line", async () => {
    // Prints the leader line, then its result once told to stop (as dqload does on SIGINT).
    const resultFile = path.join(scratch, "result.json")
    fs.writeFileSync(resultFile, `dqload: kvwrite ok=10\n${json}\n`)
    const fake = script(path.join(scratch, "fake-ok"), `trap 'cat ${resultFile}; exit 0' INT\necho "dqload: leader=127.0.0.1:1 cluster=[]" >&2\nwhile true; do sleep 0.05; done`)
    const running = startDqload(fake, { ...run, seconds: 60 })
    await running.ready(10_000)
    running.stop()
    const result = await running.result
    expect(result.ok).toBe(10)
    expect(result.p99_ms).toBe(2)
  })

  it("kills a dqload that ignores its deadline and SIGINT, and says it gave no result", async () => {
    const fake = script(path.join(scratch, "fake-stuck"), "trap '' INT\nwhile true; do sleep 0.05; done")
    const started = performance.now()
    const running = startDqload(fake, { ...run, stopMarginMs: 200, killMarginMs: 200 })
    await expect(running.result).rejects.toThrow(/without a result.*signal SIGKILL|signal SIGKILL.*without a result/)
    // seconds + op timeout + both margins, with room for a loaded machine.
    expect(performance.now() - started).toBeLessThan(2_400 + 10_000)
    await expect(running.ready(1_000)).rejects.toThrow()
  }, 30_000)
})
