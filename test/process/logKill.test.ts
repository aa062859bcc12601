// A real process appending to the log on the real disk is killed with SIGKILL at random moments
// (seeded); after each kill the log is opened again and every entry the process had reported
// persisted must be there, intact, and nothing else may be wrong.
import { spawn, spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { Disk } from "../../src/storage/Disk.ts"
import { LogStore } from "../../src/storage/LogStore.ts"
import type { Recovered } from "../../src/storage/LogStore.ts"
import { SegmentLog } from "../../src/storage/SegmentLog.ts"
import { Prng } from "../sim/Prng.ts"
import { entryFor, logKillClusterId, logKillSegmentBytesMax, sameEntry } from "./logKillEntries.ts"

const root = path.resolve(import.meta.dirname, "..", "..")
const writerSource = path.join(import.meta.dirname, "logKillWriter.ts")

/**
 * How to start a writer. Loading effect through tsx takes ~3 s per process on a small machine
 * (plain node: ~1 s), so the writer is transpiled once with the project's tsc into a temporary
 * directory (which links the project's node_modules); if that fails, tsx runs the source.
 */
function prepareWriter(buildDir: string): ReadonlyArray<string> {
  const tsc = path.join(root, "node_modules", ".bin", "tsc")
  const result = spawnSync(tsc, [
    "--ignoreConfig", "--noCheck", "--outDir", buildDir, "--rootDir", root,
    "--module", "nodenext", "--moduleResolution", "nodenext", "--target", "es2022",
    "--rewriteRelativeImportExtensions", "--allowImportingTsExtensions", "--skipLibCheck",
    "--types", "node", "--declaration", "false", "--sourceMap", "false", writerSource
  ], { encoding: "utf8" })
  const compiled = path.join(buildDir, "test", "process", "logKillWriter.js")
  if (result.status !== 0 || !fs.existsSync(compiled)) return ["--import", "tsx", writerSource]
  fs.writeFileSync(path.join(buildDir, "package.json"), JSON.stringify({ type: "module" }))
  fs.symlinkSync(path.join(root, "node_modules"), path.join(buildDir, "node_modules"), "dir")
  return [compiled]
}

interface Round {
  readonly ready: number
  readonly persistedLast: number
  readonly persistedCommit: number
  readonly lines: number
}

interface Writer {
  /** Resolves once the child has loaded its modules and waits for "go". */
  readonly loaded: Promise<void>
  /** Lets the writer go, SIGKILLs it `killAfterMs` after its "ready" line, reports what it said. */
  readonly runAndKill: (killAfterMs: number) => Promise<Round>
}

function startWriter(command: ReadonlyArray<string>, dir: string, term: number, seed: number): Writer {
  const child = spawn(process.execPath, [...command, dir, String(term), String(seed)], {
    stdio: ["pipe", "pipe", "pipe"]
  })
  let ready = -1
  let persistedLast = -1
  let persistedCommit = -1
  let lines = 0
  let pending = ""
  let stderr = ""
  let onLoaded: () => void = () => {}
  let onReady: () => void = () => {}
  const loaded = new Promise<void>((resolve) => (onLoaded = resolve))
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve, reject) => {
    child.on("error", reject)
    child.on("exit", (code, signal) => resolve({ code, signal }))
  })
  const giveUp = setTimeout(() => child.kill("SIGKILL"), 30_000)
  child.stdout.setEncoding("utf8")
  child.stdout.on("data", (text: string) => {
    pending += text
    const parts = pending.split("\n")
    pending = parts.pop()!
    for (const line of parts) {
      const [word, a, b] = line.split(" ")
      if (word === "loaded") onLoaded()
      else if (word === "ready") {
        ready = Number(a)
        onReady()
      } else if (word === "persisted") {
        persistedLast = Number(a)
        persistedCommit = Number(b)
        lines++
      }
    }
  })
  child.stderr.on("data", (text: Buffer) => {
    stderr += text.toString()
  })
  const runAndKill = async (killAfterMs: number): Promise<Round> => {
    const isReady = new Promise<void>((resolve) => (onReady = resolve))
    child.stdin.write("go\n")
    await Promise.race([isReady, exited])
    const timer = setTimeout(() => child.kill("SIGKILL"), killAfterMs)
    const { code, signal } = await exited
    clearTimeout(timer)
    clearTimeout(giveUp)
    if (signal !== "SIGKILL") throw new Error(`writer exited with ${code}: ${stderr}`)
    return { ready, persistedLast, persistedCommit, lines }
  }
  return { loaded, runAndKill }
}

const load = (dir: string): Effect.Effect<Recovered, unknown> =>
  Effect.scoped(Effect.flatMap(LogStore, (store) => store.load)).pipe(
    Effect.provide(SegmentLog.layer({ dir, clusterId: logKillClusterId, segmentBytesMax: logKillSegmentBytesMax }).pipe(Layer.provide(Disk.layerNode)))
  )

describe("kill -9 while appending", () => {
  it.scopedLive("every entry reported persisted survives SIGKILL, intact; nothing wrong appears", () =>
    Effect.gen(function* () {
      const temp = yield* Effect.acquireRelease(
        Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "tqlite-logkill-"))),
        (d) => Effect.sync(() => fs.rmSync(d, { recursive: true, force: true }))
      )
      const dir = path.join(temp, "log")
      const command = prepareWriter(path.join(temp, "build"))
      const prng = new Prng(20_261_125)
      let reportedLast = 0
      let reportedTerm = 0
      let totalPersists = 0
      const rounds = 6
      // Every writer loads its modules up front (they wait for "go"), so rounds follow each other.
      const writers: ReadonlyArray<Writer> = Array.from({ length: rounds }, (_, i) => startWriter(command, dir, i + 1, prng.u32()))
      for (let term = 1; term <= rounds; term++) {
        const current = writers[term - 1]!
        yield* Effect.promise(() => current.loaded)
        const killAfterMs = prng.int(20, 300)
        const round = yield* Effect.promise(() => current.runAndKill(killAfterMs))
        expect(round.ready, `round ${term} started from what was durable`).toBeGreaterThanOrEqual(reportedLast)
        totalPersists += round.lines
        const recovered = yield* load(dir)
        const last = recovered.base.index + recovered.entries.length
        // every entry reported persisted is there (or compacted away under a base that covers it)
        if (round.lines > 0) {
          reportedLast = round.persistedLast
          reportedTerm = term
          expect(last, `round ${term}`).toBeGreaterThanOrEqual(round.persistedLast)
          expect(recovered.hardState.term).toBe(term)
          expect(recovered.hardState.commit).toBeGreaterThanOrEqual(round.persistedCommit)
        } else {
          expect(last).toBeGreaterThanOrEqual(reportedLast)
        }
        // and every entry present is exactly what was written at its index, in order
        recovered.entries.forEach((entry, i) => {
          expect(entry.index).toBe(recovered.base.index + 1 + i)
          if (!sameEntry(entry, entryFor(entry.index, entry.term))) expect.fail(`entry ${entry.index} is not what was written`)
        })
        expect(recovered.entries.every((e) => e.term <= term)).toBe(true)
      }
      expect(reportedTerm).toBeGreaterThan(0)
      expect(totalPersists).toBeGreaterThan(20)
    }), 30_000)
})
