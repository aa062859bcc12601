// The chaos suite's nodes: real `tqlite start` processes, each in its own network namespace
// (nsenter execs node in place, so the child's pid is the node's), with its log appended to a
// file beside (not inside) its data directory.
import { type ChildProcess, execFile, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { Effect } from "effect"
import type { DqliteClientService } from "../../src/net/client/Client.ts"
import { make as makeClient } from "../../src/net/client/Client.ts"
import { cliArgs, ensureBundle } from "../bundle.ts"
import { nodeIp, nodeNetns } from "./sandbox.ts"

export const root = path.resolve(import.meta.dirname, "../..")
/** How a node process is run: the bundled CLI (`useBundle`), or the sources through tsx. */
let cliCommand: ReadonlyArray<string> = ["--import", "tsx", path.join(root, "src/cli/main.ts")]

/** Runs the nodes from the bundled CLI (test/bundle.ts), built first if older than the sources:
 * a node then starts in a fraction of the CPU it takes through tsx, which matters on a loaded
 * machine, where a restart is part of every availability gap. */
export function useBundle(log: (line: string) => void): void {
  ensureBundle(log)
  cliCommand = cliArgs
}
export const port = 9001
export const metricsPort = 9101

export interface Exit {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
  readonly atMs: number
}

export class ChaosNode {
  readonly address: string
  readonly dataDir: string
  readonly logFile: string
  private child: ChildProcess | null = null
  private exit: Promise<Exit> | null = null
  paused = false
  /** Exits nobody asked for (the suite restarts the node and reports them). */
  readonly unexpectedExits: Array<Exit> = []
  /** Set while the suite itself stops the node, so the exit is not unexpected. */
  private stopping = false

  constructor(readonly index: number, baseDir: string) {
    this.address = `${nodeIp(index)}:${port}`
    this.dataDir = path.join(baseDir, `n${index}`, "data")
    this.logFile = path.join(baseDir, `n${index}.log`)
  }

  get metricsUrl(): string {
    return `http://${nodeIp(this.index)}:${metricsPort}/metrics`
  }

  get running(): boolean {
    return this.child !== null
  }

  get pid(): number | null {
    return this.child?.pid ?? null
  }

  /** Runs a `tqlite` subcommand in this node's namespace, its output appended to the node's log. */
  spawnCli(args: ReadonlyArray<string>): { child: ChildProcess; exit: Promise<Exit> } {
    const log = fs.openSync(this.logFile, "a")
    fs.writeSync(log, `\n=== ${new Date().toISOString()} tqlite ${args.join(" ")}\n`)
    const child = spawn("nsenter", [`--net=/run/netns/${nodeNetns(this.index)}`, "--", process.execPath, ...cliCommand, ...args], {
      cwd: root,
      stdio: ["ignore", log, log]
    })
    fs.closeSync(log)
    const exit = new Promise<Exit>((resolve) => child.on("exit", (code, signal) => resolve({ code, signal, atMs: Date.now() })))
    return { child, exit }
  }

  /** Starts the node; with `mayExit` its exit is expected (it is meant to refuse to start). */
  start(join: ReadonlyArray<string> = [], options: { readonly mayExit?: boolean } = {}): void {
    if (this.child !== null) throw new Error(`node ${this.index} is already running`)
    const { child, exit } = this.spawnCli([
      "start",
      "--address", this.address,
      "--data-dir", this.dataDir,
      "--metrics", `${nodeIp(this.index)}:${metricsPort}`,
      ...(join.length > 0 ? ["--join", join.join(",")] : [])
    ])
    this.child = child
    this.paused = false
    this.stopping = options.mayExit === true
    this.exit = exit.then((result) => {
      if (this.child === child) {
        this.child = null
        if (!this.stopping) this.unexpectedExits.push(result)
      }
      return result
    })
  }

  /** kill -9, and waits for the exit. */
  async kill(): Promise<void> {
    const child = this.child
    if (child === null) return
    this.stopping = true
    child.kill("SIGKILL")
    await this.exit
    this.paused = false
  }

  pause(): void {
    if (this.child === null) return
    this.child.kill("SIGSTOP")
    this.paused = true
  }

  resume(): void {
    if (this.child === null) return
    this.child.kill("SIGCONT")
    this.paused = false
  }

  /** The node's exit, if it happens within `timeoutMs`; null while it keeps running. */
  async exitWithin(timeoutMs: number): Promise<Exit | null> {
    if (this.exit === null || this.child === null) return this.exit === null ? null : await this.exit
    const exit = this.exit
    return await Promise.race([exit, new Promise<null>((resolve) => setTimeout(() => resolve(null), timeoutMs))])
  }

  /** The applied and commit index from the node's /metrics, or null when it does not answer. */
  async indexes(): Promise<{ applied: number; commit: number } | null> {
    try {
      const response = await fetch(this.metricsUrl, { signal: AbortSignal.timeout(2_000) })
      const text = await response.text()
      const applied = metricValue(text, "tqlite_raft_applied_index")
      const commit = metricValue(text, "tqlite_raft_commit_index")
      return applied === null || commit === null ? null : { applied, commit }
    } catch {
      return null
    }
  }
}

function metricValue(text: string, name: string): number | null {
  const match = new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, "m").exec(text)
  return match === null ? null : Number(match[1])
}

/** Runs `f` with a short-lived TypeScript client of the cluster (for the runner's questions). */
export function withClient<A>(servers: ReadonlyArray<string>, database: string, f: (client: DqliteClientService) => Effect.Effect<A, unknown>): Promise<A> {
  return Effect.runPromise(Effect.scoped(Effect.flatMap(makeClient({ servers, database, connectTimeoutMs: 1_000, requestTimeoutMs: 3_000, retriesMax: 2 }), f)))
}

/** The leader's address as the cluster names it, or null. */
export async function leaderOf(servers: ReadonlyArray<string>): Promise<string | null> {
  try {
    return await withClient(servers, "chaos", (client) => Effect.map(client.leader, (leader) => (leader === null || leader.address === "" ? null : leader.address)))
  } catch {
    return null
  }
}

/** Retries `check` until it returns a value other than null, or throws at the deadline. */
export async function eventually<A>(what: string, check: () => Promise<A | null>, timeoutMs: number): Promise<A> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await check().catch(() => null)
    if (value !== null) return value
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await sleep(250)
  }
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

/** Runs a program to its end; rejects with its output on a non-zero exit or after `timeoutMs`. */
export function runProgram(file: string, args: ReadonlyArray<string>, timeoutMs: number, env?: NodeJS.ProcessEnv): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(file, [...args], { timeout: timeoutMs, maxBuffer: 16 << 20, ...(env !== undefined ? { env } : {}) }, (error, stdout, stderr) => {
      if (error !== null) reject(new Error(`${file} ${args.join(" ")}: ${error.message}\n${stdout}${stderr}`))
      else resolve(stdout)
    })
  })
}
