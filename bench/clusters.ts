// Three-process clusters on loopback for the side-by-side benchmarks: `tqlite start` (the bundled
// CLI, dist/tqlite.mjs) and Debian's `dqlite-demo` (dqlite 1.11), each node with a fresh data
// dir under one temp dir and its output in a log file there. Every wait is bounded; `stop()`
// ends every process (SIGTERM, then SIGKILL) and is safe to call twice.
import { type ChildProcess, spawn, spawnSync } from "node:child_process"
import fs from "node:fs"
import net from "node:net"
import path from "node:path"
import { Duration, Effect, Schedule } from "effect"
import { make as makeClient } from "../src/net/client/Client.ts"
import { cliBundle } from "../test/bundle.ts"
import { freePortNow } from "../test/freePort.ts"
import { stopAll, track } from "./children.ts"

const root = path.resolve(import.meta.dirname, "..")
export const cli = cliBundle
/** `npm run build` when the bundle is missing or older than the sources. */
export { ensureBundle } from "../test/bundle.ts"

export interface Cluster {
  readonly system: "tqlite" | "dqlite"
  readonly servers: ReadonlyArray<string>
  /** tqlite only: each node's /health and /metrics address, in the order of `servers`. */
  readonly metrics: ReadonlyArray<string>
  readonly logDir: string
  /** Each node's process id, in the order of `servers` (CPU time from /proc). */
  readonly pids: ReadonlyArray<number>
  readonly stop: () => Promise<void>
}

/** Cluster start-up (3 voters known to the leader) must finish within this. */
const startTimeoutMs = 90_000

function spawnLogged(command: string, args: ReadonlyArray<string>, logFile: string): ChildProcess {
  const log = fs.openSync(logFile, "a")
  const child = track(spawn(command, args, { cwd: root, stdio: ["ignore", log, log] }))
  fs.closeSync(log)
  return child
}

const poll = (timeoutMs: number) => Schedule.spaced(Duration.millis(200)).pipe(Schedule.upTo(Duration.millis(timeoutMs)))

/** Resolves once a leader lists `voters` voters; rejects after `timeoutMs`. */
export function waitForVoters(servers: ReadonlyArray<string>, voters: number, timeoutMs = startTimeoutMs): Promise<void> {
  return Effect.runPromise(Effect.scoped(Effect.gen(function*() {
    const client = yield* makeClient({ servers, database: "bench", retriesMax: 0, connectTimeoutMs: 1_000, requestTimeoutMs: 2_000 })
    const members = yield* client.cluster
    const count = members.filter((m) => m.role === "voter").length
    if (count < voters) return yield* Effect.fail(`${count} of ${voters} voters`)
  }).pipe(
    Effect.retry(poll(timeoutMs)),
    Effect.mapError((last) => new Error(`cluster ${servers.join(",")} not up within ${timeoutMs} ms (last: ${String(last)})`))
  )))
}

/** Resolves once the leader lists `members` members, whatever their roles. */
function waitForMembers(servers: ReadonlyArray<string>, members: number, timeoutMs: number): Promise<void> {
  return Effect.runPromise(Effect.scoped(Effect.gen(function*() {
    const client = yield* makeClient({ servers, database: "bench", retriesMax: 0, connectTimeoutMs: 1_000, requestTimeoutMs: 2_000 })
    const count = (yield* client.cluster).length
    if (count < members) return yield* Effect.fail(`${count} of ${members} members`)
  }).pipe(
    Effect.retry(poll(timeoutMs)),
    Effect.mapError((last) => new Error(`cluster ${servers.join(",")} not joined within ${timeoutMs} ms (last: ${String(last)})`))
  )))
}

/** Until `voters` voters: gives the cluster's own promotion a moment, then assigns the voter
 * role to the members that lack it. */
function promoteToVoters(servers: ReadonlyArray<string>, voters: number, timeoutMs: number): Promise<void> {
  return Effect.runPromise(Effect.scoped(Effect.gen(function*() {
    const client = yield* makeClient({ servers, database: "bench", retriesMax: 0, connectTimeoutMs: 1_000, requestTimeoutMs: 5_000 })
    const started = performance.now()
    return yield* Effect.gen(function*() {
      const members = yield* client.cluster
      const count = members.filter((m) => m.role === "voter").length
      if (count >= voters) return
      if (performance.now() - started > 3_000) {
        for (const member of members.filter((m) => m.role !== "voter")) yield* Effect.ignore(client.assign(member.id, "voter"))
      }
      return yield* Effect.fail(`${count} of ${voters} voters`)
    }).pipe(Effect.retry(poll(timeoutMs)))
  }).pipe(
    Effect.mapError((last) => new Error(`cluster ${servers.join(",")} not up within ${timeoutMs} ms (last: ${String(last)})`))
  )))
}

/** The leader's address, as any node tells it. */
export function leaderOf(servers: ReadonlyArray<string>, timeoutMs = 10_000): Promise<string> {
  return Effect.runPromise(Effect.scoped(Effect.gen(function*() {
    const client = yield* makeClient({ servers, database: "bench", retriesMax: 0, connectTimeoutMs: 1_000, requestTimeoutMs: 2_000 })
    const leader = yield* client.leader
    if (leader === null) return yield* Effect.fail("no leader")
    return leader.address
  }).pipe(
    Effect.retry(poll(timeoutMs)),
    Effect.mapError((last) => new Error(`no leader among ${servers.join(",")} within ${timeoutMs} ms (last: ${String(last)})`))
  )))
}

/** Stops `children` if `start` fails, so a half-started cluster never leaks; the error then
 * carries the tail of each node's log. */
async function startedOrStopped(children: Array<ChildProcess>, logFiles: ReadonlyArray<string>, start: () => Promise<void>): Promise<void> {
  try {
    await start()
  } catch (error) {
    await stopAll(children)
    const tails = logFiles.filter((f) => fs.existsSync(f)).map((f) => `--- ${path.basename(f)}:\n${fs.readFileSync(f, "utf8").slice(-1500)}`)
    throw new Error(`${(error as Error).message}\n${tails.join("\n")}`)
  }
}

export async function startTqlite(dir: string, options: { readonly metrics?: boolean } = {}): Promise<Cluster> {
  if (!fs.existsSync(cli)) throw new Error(`${cli} missing: npm run build`)
  const servers = [0, 1, 2].map(async () => `127.0.0.1:${await freePortNow()}`)
  const addresses = await Promise.all(servers)
  const metrics = options.metrics === true ? await Promise.all([0, 1, 2].map(async () => `127.0.0.1:${await freePortNow()}`)) : []
  const children: Array<ChildProcess> = []
  const spawnNode = (i: number, join: string | null) =>
    children.push(spawnLogged(process.execPath, [
      cli, "start", "--address", addresses[i]!, "--data-dir", path.join(dir, `t${i + 1}`),
      ...(join === null ? [] : ["--join", join]),
      ...(metrics.length > 0 ? ["--metrics", metrics[i]!] : [])
    ], path.join(dir, `t${i + 1}.log`)))
  await startedOrStopped(children, [0, 1, 2].map((i) => path.join(dir, `t${i + 1}.log`)), async () => {
    spawnNode(0, null)
    await leaderOf(addresses.slice(0, 1), startTimeoutMs)
    spawnNode(1, addresses[0]!)
    spawnNode(2, addresses[0]!)
    await waitForVoters(addresses, 3)
  })
  return { system: "tqlite", servers: addresses, metrics, logDir: dir, pids: children.map((child) => child.pid ?? 0), stop: () => stopAll(children) }
}

/** A port libdqlite can bind: below Linux's ephemeral range, where an outgoing connection may
 * hold a port (dqload's README), and free right now. */
async function lowPort(taken: Set<number>): Promise<number> {
  for (let attempt = 0; attempt < 200; attempt++) {
    const port = 21_000 + Math.floor(Math.random() * 10_000)
    if (taken.has(port)) continue
    const free = await new Promise<boolean>((resolve) => {
      const server = net.createServer()
      server.once("error", () => resolve(false))
      server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)))
    })
    if (free) {
      taken.add(port)
      return port
    }
  }
  throw new Error("no free port in 21000-31000 after 200 tries")
}

export function dqliteDemoAvailable(): boolean {
  return spawnSync("dqlite-demo", ["--help"], { stdio: "ignore", timeout: 10_000 }).status === 0
}

export async function startDqlite(dir: string): Promise<Cluster> {
  if (!dqliteDemoAvailable()) throw new Error("dqlite-demo not found: apt-get install go-dqlite")
  const taken = new Set<number>()
  const servers: Array<string> = []
  const apis: Array<string> = []
  for (let i = 0; i < 3; i++) {
    servers.push(`127.0.0.1:${await lowPort(taken)}`)
    apis.push(`127.0.0.1:${await lowPort(taken)}`)
  }
  const children: Array<ChildProcess> = []
  await startedOrStopped(children, [0, 1, 2].map((i) => path.join(dir, `d${i + 1}.log`)), async () => {
    // One node at a time, then 3 voters made sure of: go-dqlite's app leaves a node a spare
    // below 3 members, and when the third joins, it promotes itself and one other; should that
    // second promotion fail, only the leader's role adjustment (every 30 s, with an online check
    // that times out on a loaded machine) retries it: "2 of 3 voters" for 90 s was seen at load
    // ~12. Assigning the missing voters ourselves (ASSIGN over the wire) makes start-up certain.
    const deadline = performance.now() + startTimeoutMs
    const left = () => Math.max(1_000, deadline - performance.now())
    for (let i = 0; i < 3; i++) {
      children.push(spawnLogged("dqlite-demo", [
        "--api", apis[i]!, "--db", servers[i]!, "--dir", path.join(dir, `d${i + 1}`), ...(i > 0 ? ["--join", servers[0]!] : [])
      ], path.join(dir, `d${i + 1}.log`)))
      await waitForMembers(servers.slice(0, i + 1), i + 1, left())
    }
    await promoteToVoters(servers, 3, left())
  })
  // dqlite-demo's graceful stop hands its roles over with no deadline, which hangs when all three
  // stop at once (the full 10 s grace every time here); the data is thrown away, so 0.5 s will do.
  return { system: "dqlite", servers, metrics: [], logDir: dir, pids: children.map((child) => child.pid ?? 0), stop: () => stopAll(children, 500) }
}

/** Terms in which some node logged "leads the cluster (term T)" (tqlite's log line), sorted. */
export function leadershipTerms(logDir: string): Array<number> {
  const terms: Array<number> = []
  for (const file of fs.readdirSync(logDir).filter((f) => /^t\d+\.log$/.test(f))) {
    for (const match of fs.readFileSync(path.join(logDir, file), "utf8").matchAll(/leads the cluster \(term (\d+)\)/g)) terms.push(Number(match[1]))
  }
  return terms.sort((a, b) => a - b)
}
