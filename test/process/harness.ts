// Real `tqlite` processes on loopback for the process tests: spawn a subcommand, keep its output,
// wait for its exit, and ask the cluster questions through the TypeScript client.
import { type ChildProcess, execFileSync, spawn } from "node:child_process"
import * as path from "node:path"
import { Effect } from "effect"
import type { DqliteClientService } from "../../src/net/client/Client.ts"
import { make as makeClient } from "../../src/net/client/Client.ts"
import { cliArgs } from "../bundle.ts"

export const root = path.resolve(import.meta.dirname, "../..")

/** Root, and `unshare -m` works: a test can mount a small tmpfs in a mount namespace of its own
 * (the full-disk tests). CI runs as root. */
export const canUnshare = (() => {
  if (process.getuid?.() !== 0) return false
  try {
    execFileSync("unshare", ["-m", "true"], { stdio: "ignore" })
    return true
  } catch {
    return false
  }
})()

export interface TqliteProcess {
  readonly child: ChildProcess
  readonly output: () => string
  /** Resolves with the exit code (or the signal's name) once the process has exited. */
  readonly exited: Promise<{ readonly code: number | null; readonly signal: NodeJS.Signals | null; readonly atMs: number }>
}

const running = new Set<ChildProcess>()

/** SIGKILLs whatever is still running (for afterAll). */
export function killAll(): void {
  for (const child of running) {
    child.kill("SIGCONT")
    child.kill("SIGKILL")
  }
}

export function tqlite(args: ReadonlyArray<string>): TqliteProcess {
  return spawnTracked(process.execPath, [...cliArgs, ...args])
}

/** Any command (e.g. `unshare … exec node … start`), tracked like `tqlite`. */
export function spawnTracked(command: string, args: ReadonlyArray<string>): TqliteProcess {
  const child = spawn(command, args, { cwd: root, stdio: ["ignore", "pipe", "pipe"] })
  let output = ""
  child.stdout?.on("data", (chunk: Buffer) => (output += chunk.toString()))
  child.stderr?.on("data", (chunk: Buffer) => (output += chunk.toString()))
  running.add(child)
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; atMs: number }>((resolve) =>
    child.on("exit", (code, signal) => {
      running.delete(child)
      resolve({ code, signal, atMs: Date.now() })
    }))
  return { child, output: () => output, exited }
}

export function startNode(address: string, dataDir: string, join: ReadonlyArray<string>, extra: ReadonlyArray<string> = []): TqliteProcess {
  return tqlite(["start", "--address", address, "--data-dir", dataDir, ...(join.length > 0 ? ["--join", join.join(",")] : []), ...extra])
}

export { freePortNow as freePort } from "../freePort.ts"

/** Retries `check` (real time) until it returns a value other than null, or fails at the deadline. */
export async function eventually<A>(what: string, check: () => Promise<A | null>, timeoutMs = 30_000): Promise<A> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await check().catch(() => null)
    if (value !== null) return value
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 200))
  }
}

/** Runs `f` with a client of the cluster at `servers` (quick to give up: callers poll). */
export function withClient<A>(servers: ReadonlyArray<string>, f: (client: DqliteClientService) => Effect.Effect<A, unknown>): Promise<A> {
  return Effect.runPromise(Effect.scoped(Effect.flatMap(makeClient({ servers, database: "process-test", connectTimeoutMs: 1_000, requestTimeoutMs: 3_000, retriesMax: 2 }), f)))
}

export const rolesOf = (servers: ReadonlyArray<string>) =>
  withClient(servers, (client) => Effect.map(client.cluster, (members) => new Map(members.map((m) => [m.address, m.role]))))

export const leaderAddress = (servers: ReadonlyArray<string>) =>
  withClient(servers, (client) => Effect.map(client.leader, (leader) => (leader === null || leader.address === "" ? null : leader.address)))

/** The time of day (ms since midnight) of the first log line matching `pattern`: the pretty
 * logger starts each line with HH:MM:SS.mmm. */
export function loggedAt(output: string, pattern: RegExp): number | null {
  for (const line of output.split("\n")) {
    if (!pattern.test(line)) continue
    const stamp = /^(\d\d):(\d\d):(\d\d)\.(\d\d\d) /.exec(line)
    if (stamp === null) continue
    return ((Number(stamp[1]) * 60 + Number(stamp[2])) * 60 + Number(stamp[3])) * 1000 + Number(stamp[4])
  }
  return null
}
