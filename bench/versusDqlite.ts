// `npm run bench -- versus-dqlite [--seconds S] [--workers 1,8,64] [--workload write]`: the same
// wire-protocol load generator (`tqlite bench`, src/cli/loadgen.ts) against a 3-node tqlite
// cluster (three `tqlite start` processes) and a 3-node dqlite 1.11 cluster (three `dqlite-demo`
// processes from Debian's go-dqlite package), one after the other on loopback, each with its
// data in a fresh temporary directory. Both clusters are real multi-process deployments with
// fsync on, so the ratio compares the systems, not an in-process shortcut.
import { type ChildProcess, spawn } from "node:child_process"
import fs from "node:fs"
import os from "node:os"
import path from "node:path"
import { Duration, Effect, Schedule } from "effect"
import type { LoadReport, Workload } from "../src/cli/loadgen.ts"
import { prepare, run } from "../src/cli/loadgen.ts"
import { make as makeClient } from "../src/net/client/Client.ts"
import { option } from "./load.ts"
import { freePortNow as freePort } from "../test/freePort.ts"

const root = path.resolve(import.meta.dirname, "..")

type Cluster = { readonly servers: ReadonlyArray<string>; readonly stop: () => Promise<void> }

function spawnAll(commands: ReadonlyArray<{ readonly command: string; readonly args: ReadonlyArray<string> }>): Array<ChildProcess> {
  return commands.map(({ command, args }) => spawn(command, args, { cwd: root, stdio: ["ignore", "ignore", "ignore"] }))
}

async function stopAll(children: ReadonlyArray<ChildProcess>): Promise<void> {
  await Promise.all(children.map((child) => new Promise<void>((resolve) => {
    if (child.exitCode !== null) return resolve()
    const timer = setTimeout(() => child.kill("SIGKILL"), 10_000)
    child.once("exit", () => {
      clearTimeout(timer)
      resolve()
    })
    child.kill("SIGTERM")
  })))
}

async function startTqlite(dir: string): Promise<Cluster> {
  const ports = [await freePort(), await freePort(), await freePort()]
  const servers = ports.map((p) => `127.0.0.1:${p}`)
  const cli = path.join(root, "dist/tqlite.mjs")
  const first = spawnAll([{ command: process.execPath, args: [cli, "start", "--address", servers[0]!, "--data-dir", path.join(dir, "t1")] }])
  await waitForLeader(servers.slice(0, 1))
  const rest = spawnAll(servers.slice(1).map((address, i) => ({
    command: process.execPath,
    args: [cli, "start", "--address", address, "--data-dir", path.join(dir, `t${i + 2}`), "--join", servers[0]!]
  })))
  await waitForVoters(servers, 3)
  return { servers, stop: () => stopAll([...first, ...rest]) }
}

async function startDqlite(dir: string): Promise<Cluster> {
  const ports = [await freePort(), await freePort(), await freePort()]
  const api = [await freePort(), await freePort(), await freePort()]
  const servers = ports.map((p) => `127.0.0.1:${p}`)
  const children = spawnAll(servers.map((address, i) => ({
    command: "dqlite-demo",
    args: ["--api", `127.0.0.1:${api[i]}`, "--db", address, "--dir", path.join(dir, `d${i + 1}`), ...(i > 0 ? ["--join", servers[0]!] : [])]
  })))
  await waitForVoters(servers, 3)
  return { servers, stop: () => stopAll(children) }
}

const retry = Schedule.spaced(Duration.millis(200)).pipe(Schedule.intersect(Schedule.recurs(300)))

function waitForLeader(servers: ReadonlyArray<string>): Promise<void> {
  return Effect.runPromise(Effect.scoped(Effect.gen(function*() {
    const client = yield* makeClient({ servers, database: "bench", retriesMax: 0 })
    const leader = yield* client.leader
    if (leader === null) return yield* Effect.fail("no leader yet")
  }).pipe(Effect.retry(retry))))
}

function waitForVoters(servers: ReadonlyArray<string>, voters: number): Promise<void> {
  return Effect.runPromise(Effect.scoped(Effect.gen(function*() {
    const client = yield* makeClient({ servers, database: "bench", retriesMax: 0 })
    const members = yield* client.cluster
    if (members.filter((m) => m.role === "voter").length < voters) return yield* Effect.fail("not all voters yet")
  }).pipe(Effect.retry(retry))))
}

async function measure(cluster: Cluster, workers: number, seconds: number, workload: Workload, database: string): Promise<LoadReport> {
  return Effect.runPromise(Effect.scoped(Effect.gen(function*() {
    const client = yield* makeClient({ servers: cluster.servers, database, connectionsMax: workers })
    const load = { workers, seconds, workload, valueBytes: 100, keySpace: 100_000 }
    yield* Effect.orDie(prepare(client, load))
    return yield* run(client, load)
  })))
}

export async function main(args: ReadonlyArray<string>): Promise<void> {
  const seconds = Number(option(args, "seconds") ?? 5)
  const workerCounts = (option(args, "workers") ?? "1,8,64").split(",").map(Number)
  const workload = (option(args, "workload") ?? "write") as Workload
  if (!fs.existsSync(path.join(root, "dist/tqlite.mjs"))) throw new Error("build first: npm run build")
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tqlite-versus-"))
  process.stdout.write(`tqlite vs dqlite 1.11 (dqlite-demo), 3 processes each on loopback, ${workload} workload, ${seconds} s per run, data in ${dir}\n`)
  process.stdout.write(`${"workers".padStart(7)}  ${"dqlite/s".padStart(9)}  ${"p50 ms".padStart(7)}  ${"tqlite/s".padStart(9)}  ${"p50 ms".padStart(7)}  ${"ratio".padStart(6)}  failures (dqlite | tqlite)\n`)
  const dqlite = await startDqlite(dir)
  const tqlite = await startTqlite(dir)
  try {
    for (const workers of workerCounts) {
      const d = await measure(dqlite, workers, seconds, workload, `bench${workers}`)
      const t = await measure(tqlite, workers, seconds, workload, `bench${workers}`)
      process.stdout.write(
        `${String(workers).padStart(7)}  ${d.perSecond.toFixed(0).padStart(9)}  ${d.latency.p50.toFixed(2).padStart(7)}  ${t.perSecond.toFixed(0).padStart(9)}  ${t.latency.p50.toFixed(2).padStart(7)}  ${(t.perSecond / Math.max(1, d.perSecond)).toFixed(2).padStart(6)}  ${JSON.stringify(d.failures)} | ${JSON.stringify(t.failures)}\n`
      )
    }
  } finally {
    await Promise.all([dqlite.stop(), tqlite.stop()])
    fs.rmSync(dir, { recursive: true, force: true })
  }
}
