// dqload (../shared/tools/dqload: go-dqlite's real driver in its own process) as a benchmark
// client: find or build the binary, run one workload against a cluster with every wait bounded,
// and read its JSON result.
import { type ChildProcess, spawn } from "node:child_process"
import fs from "node:fs"
import os from "node:os"
import path from "node:path"
import { Either, ParseResult, Schema } from "effect"
import { track } from "./children.ts"

const root = path.resolve(import.meta.dirname, "..")

/** One dqload run's result: the JSON line `dqload --json` prints (fields we use). */
export const DqloadResult = Schema.Struct({
  workload: Schema.String,
  workers: Schema.Number,
  wall_s: Schema.Number,
  ok: Schema.Number,
  ok_per_s: Schema.Number,
  errors: Schema.Number,
  error_kinds: Schema.Record({ key: Schema.String, value: Schema.Number }),
  p50_ms: Schema.Number,
  p99_ms: Schema.Number,
  max_ms: Schema.Number,
  mean_ms: Schema.Number,
  read_missing: Schema.Number,
  acked_writes: Schema.Number,
  // Kept in the JSON results: the driver's hidden reconnects (dqload's README, "quirks").
  driver_connects: Schema.optional(Schema.Number),
  driver_badconn_notleader: Schema.optional(Schema.Number),
  driver_badconn_network: Schema.optional(Schema.Number),
  leader: Schema.optional(Schema.String)
})
export type DqloadResult = typeof DqloadResult.Type

export class DqloadOutputInvalid extends Error {
  override readonly name = "DqloadOutputInvalid"
}

/** The JSON result in dqload's stdout (the last line that starts with "{"). Throws
 * DqloadOutputInvalid, quoting the output, when there is none or it lacks a field. */
export function parseDqloadOutput(stdout: string): DqloadResult {
  const line = stdout.split("\n").map((l) => l.trim()).filter((l) => l.startsWith("{")).at(-1)
  const quoted = JSON.stringify(stdout.slice(0, 400))
  if (line === undefined) throw new DqloadOutputInvalid(`no JSON result line in dqload's output: ${quoted}`)
  let value: unknown
  try {
    value = JSON.parse(line)
  } catch (cause) {
    throw new DqloadOutputInvalid(`dqload's result line is not JSON (${String(cause)}): ${quoted}`)
  }
  const decoded = Schema.decodeUnknownEither(DqloadResult)(value)
  if (Either.isLeft(decoded)) {
    throw new DqloadOutputInvalid(`dqload's result lacks a field: ${ParseResult.TreeFormatter.formatErrorSync(decoded.left)}`)
  }
  return decoded.right
}

/** The dqload source folder: $TQLITE_DQLOAD_DIR, else `shared/tools/dqload` beside the repository
 * or one of its parents (a worktree sits deeper than the main checkout). */
export function dqloadSourceDir(): string {
  const fromEnv = process.env["TQLITE_DQLOAD_DIR"]
  if (fromEnv !== undefined && fromEnv !== "") return fromEnv
  for (let dir = root; ; dir = path.dirname(dir)) {
    const candidate = path.join(path.dirname(dir), "shared", "tools", "dqload")
    if (fs.existsSync(path.join(candidate, "build.sh"))) return candidate
    if (path.dirname(dir) === dir) break
  }
  throw new Error("dqload's sources (shared/tools/dqload) not found beside the repository; set TQLITE_DQLOAD_DIR or pass --dqload PATH")
}

export const dqloadCacheDir = path.join(os.tmpdir(), "tqlite-bench-dqload")

/** Building may install Go with apt first. */
const buildTimeoutMs = 15 * 60_000

/** The binary: `explicit` when given (it must exist), else a cached build that is newer than
 * dqload's sources, else a fresh build (`build.sh OUT`) into the cache. */
export async function ensureDqload(
  explicit: string | undefined,
  log: (line: string) => void,
  where: { readonly sourceDir?: string; readonly cacheDir?: string } = {}
): Promise<string> {
  if (explicit !== undefined) {
    if (!fs.existsSync(explicit)) throw new Error(`--dqload ${explicit}: no such file`)
    return explicit
  }
  const source = where.sourceDir ?? dqloadSourceDir()
  const cacheDir = where.cacheDir ?? dqloadCacheDir
  const binary = path.join(cacheDir, "dqload")
  const sourcesMs = Math.max(...fs.readdirSync(source).map((f) => fs.statSync(path.join(source, f)).mtimeMs))
  if (fs.existsSync(binary) && fs.statSync(binary).mtimeMs > sourcesMs) return binary
  const started = performance.now()
  log(`building dqload from ${source} into ${binary} …`)
  const { code, output } = await runBounded("bash", [path.join(source, "build.sh"), binary], buildTimeoutMs, {
    GOCACHE: path.join(cacheDir, "gocache")
  })
  if (code !== 0 || !fs.existsSync(binary)) throw new Error(`dqload's build.sh failed (exit ${code}): ${output.slice(-2000)}`)
  log(`built dqload in ${((performance.now() - started) / 1000).toFixed(1)} s`)
  return binary
}

function runBounded(command: string, args: ReadonlyArray<string>, timeoutMs: number, env: Record<string, string>): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, ...env } })
    let output = ""
    child.stdout!.on("data", (chunk: Buffer) => (output = (output + chunk.toString()).slice(-100_000)))
    child.stderr!.on("data", (chunk: Buffer) => (output = (output + chunk.toString()).slice(-100_000)))
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs)
    child.once("error", (error) => {
      clearTimeout(timer)
      reject(error)
    })
    child.once("exit", (code) => {
      clearTimeout(timer)
      resolve({ code, output })
    })
  })
}

export interface DqloadRun {
  readonly servers: ReadonlyArray<string>
  readonly database: string
  readonly workload: "kvwrite" | "kvreadwrite"
  readonly workers: number
  readonly seconds: number
  /** Each op's bound (dqload's --op-timeout), so the run ends by seconds + this. */
  readonly opTimeoutSeconds: number
  /** Slack past seconds + op timeout before dqload is told to stop (SIGINT), and then before it
   * is killed; tests shorten them. */
  readonly stopMarginMs?: number
  readonly killMarginMs?: number
}

/** dqload running: `stop()` asks it to finish now (SIGINT: it stops its workers and still
 * prints its result); `result` settles once it has exited. */
export interface RunningDqload {
  readonly child: ChildProcess
  /** Resolves once dqload has found the leader (its "dqload: leader=" line); its workers start
   * right after it creates the schema. Rejects if it exits first or after `readyTimeoutMs`. */
  readonly ready: (readyTimeoutMs: number) => Promise<void>
  readonly result: Promise<DqloadResult>
  readonly stop: () => void
}


export function startDqload(binary: string, run: DqloadRun): RunningDqload {
  const args = [
    "--servers", run.servers.join(","), "--db", run.database, "--workload", run.workload,
    "--workers", String(run.workers), "--duration", String(run.seconds), "--json",
    "--op-timeout", `${run.opTimeoutSeconds}s`, "--setup-timeout", "30s"
  ]
  const child = track(spawn(binary, args, { stdio: ["ignore", "pipe", "pipe"] }))
  let stdout = ""
  let stderr = ""
  child.stdout!.on("data", (chunk: Buffer) => (stdout += chunk.toString()))
  // Bounded: the first errors of each kind and the leader lines are all dqload prints here.
  let found = false
  const readyWaiters: Array<() => void> = []
  child.stderr!.on("data", (chunk: Buffer) => {
    stderr = (stderr + chunk.toString()).slice(-20_000)
    if (!found && stderr.includes("dqload: leader=")) {
      found = true
      for (const waiter of readyWaiters.splice(0)) waiter()
    }
  })
  let killTimer: NodeJS.Timeout | undefined
  const stop = () => {
    if (child.exitCode !== null || child.signalCode !== null) return
    child.kill("SIGINT")
    killTimer ??= setTimeout(() => child.kill("SIGKILL"), run.killMarginMs ?? 5_000)
  }
  const stopTimer = setTimeout(stop, (run.seconds + run.opTimeoutSeconds) * 1000 + (run.stopMarginMs ?? 15_000))
  const result = new Promise<DqloadResult>((resolve, reject) => {
    child.once("error", (error) => reject(new Error(`dqload: ${error.message}`)))
    // "close", not "exit": the result line may still sit in the stdout pipe at exit.
    child.once("close", (code, signal) => {
      clearTimeout(stopTimer)
      if (killTimer !== undefined) clearTimeout(killTimer)
      try {
        resolve(parseDqloadOutput(stdout))
      } catch (error) {
        reject(new Error(`dqload exited (code ${code}, signal ${signal}) without a result: ${(error as Error).message}; stderr: ${stderr.slice(-1000)}`))
      }
    })
  })
  const ready = (readyTimeoutMs: number) =>
    new Promise<void>((resolve, reject) => {
      if (found) return resolve()
      const timer = setTimeout(() => reject(new Error(`dqload found no leader within ${readyTimeoutMs} ms`)), readyTimeoutMs)
      readyWaiters.push(() => {
        clearTimeout(timer)
        resolve()
      })
      result.catch((error: unknown) => {
        clearTimeout(timer)
        reject(error)
      })
    })
  return { child, ready, result, stop }
}
