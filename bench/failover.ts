// `npm run bench -- failover [--kills 5] [--restarts 3] [--writers 4] [--dqload PATH]`: how long
// writes stop when the leader dies. Three `tqlite start` processes (built: dist/) on loopback with
// default settings; writers on the TypeScript client (default options: its retries and leader
// discovery are part of what is measured) insert one row after another. Then:
// - `kill -9` of the leader, `--kills` times (the victim is restarted on its data dir and the
//   cluster given time to settle before the next kill);
// - `kill -9` of every node and an immediate restart of all three, `--restarts` times.
// The gap of one fault is from the kill to the first acknowledged write *sent after* it (a write
// in flight when the leader died has an unknown outcome and is not counted). With `--dqload`, the
// go-dqlite load client (../shared/tools/dqload) also runs through every fault, for a second
// opinion from the real driver (its error counts are printed).
//
// `--steady SECONDS [--steady-workers 64]`: the other half of the trade-off, run instead of the
// faults: that many seconds of write load without any fault (dqload's kvwrite with `--dqload`,
// else the TypeScript load generator), then the number of leaderships won meanwhile (each node
// logs one line per leadership): short election timeouts must not cost elections under load.
import { type ChildProcess, spawn } from "node:child_process"
import fs from "node:fs"
import os from "node:os"
import path from "node:path"
import { Duration, Effect, Fiber, Schedule } from "effect"
import { prepare, run } from "../src/cli/loadgen.ts"
import { make as makeClient } from "../src/net/client/Client.ts"
import { option } from "./load.ts"
import { freePortNow as freePort } from "../test/freePort.ts"

const root = path.resolve(import.meta.dirname, "..")
const cli = path.join(root, "dist/tqlite.mjs")

interface NodeProcess {
  readonly address: string
  readonly dataDir: string
  child: ChildProcess
}

function spawnNode(node: Omit<NodeProcess, "child">, join: string | null, logDir: string): ChildProcess {
  const log = fs.openSync(path.join(logDir, `${path.basename(node.dataDir)}.log`), "a")
  const args = [cli, "start", "--address", node.address, "--data-dir", node.dataDir, ...(join === null ? [] : ["--join", join])]
  const child = spawn(process.execPath, args, { cwd: root, stdio: ["ignore", log, log] })
  fs.closeSync(log)
  return child
}

function killHard(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve()
    child.once("exit", () => resolve())
    child.kill("SIGKILL")
  })
}

const poll = Schedule.spaced(Duration.millis(100)).pipe(Schedule.intersect(Schedule.recurs(600)))

/** Until a leader confirms itself and lists `voters` voters, each answering LEADER with it. */
const settled = (servers: ReadonlyArray<string>, voters: number) =>
  Effect.scoped(Effect.gen(function*() {
    const client = yield* makeClient({ servers, database: "failover", retriesMax: 0, requestTimeoutMs: 1_000, connectTimeoutMs: 1_000 })
    const leader = yield* client.leader
    if (leader === null) return yield* Effect.fail("no leader yet")
    const members = yield* client.cluster
    if (members.filter((m) => m.role === "voter").length < voters) return yield* Effect.fail("not all voters yet")
    for (const address of servers) {
      const one = yield* makeClient({ servers: [address], database: "failover", retriesMax: 0, requestTimeoutMs: 1_000, connectTimeoutMs: 1_000 })
      const named = yield* one.leader
      if (named?.address !== leader.address) return yield* Effect.fail(`${address} does not know the leader yet`)
    }
    return leader.address
  })).pipe(Effect.retry(poll))

/** Writes acknowledged, as [sent at, acknowledged at] (performance.now() ms). */
interface Ack {
  readonly sentMs: number
  readonly ackedMs: number
}

/** Wall-clock time of a performance.now() reading, to match the nodes' log lines. */
const stamp = (ms: number) => new Date(performance.timeOrigin + ms).toISOString().slice(11, 23)

const median = (values: ReadonlyArray<number>) => {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}

/** Lines "node N leads the cluster (term T)" logged by all nodes, with their terms. */
function leadershipTerms(dir: string): Array<number> {
  const terms: Array<number> = []
  for (const file of fs.readdirSync(dir).filter((f) => f.endsWith(".log"))) {
    for (const match of fs.readFileSync(path.join(dir, file), "utf8").matchAll(/leads the cluster \(term (\d+)\)/g)) terms.push(Number(match[1]))
  }
  return terms.sort((a, b) => a - b)
}

async function steady(servers: ReadonlyArray<string>, dir: string, seconds: number, workers: number, dqloadPath: string | undefined): Promise<void> {
  const before = leadershipTerms(dir)
  const started = Date.now()
  if (dqloadPath !== undefined) {
    const out = await new Promise<string>((resolve) => {
      const child = spawn(dqloadPath, ["--servers", servers.join(","), "--db", "steady", "--workload", "kvwrite", "--workers", String(workers), "--duration", String(seconds)], { stdio: ["ignore", "pipe", "pipe"] })
      let text = ""
      child.stdout!.on("data", (chunk: Buffer) => (text += chunk.toString()))
      child.stderr!.on("data", (chunk: Buffer) => (text += chunk.toString()))
      child.once("exit", () => resolve(text))
    })
    process.stdout.write(`  dqload: ${out.trim()}\n`)
  } else {
    const report = await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
      const client = yield* makeClient({ servers, database: "steady", connectionsMax: workers })
      const load = { workers, seconds, workload: "write" as const, valueBytes: 100, keySpace: 100_000 }
      yield* Effect.orDie(prepare(client, load))
      return yield* run(client, load)
    })))
    process.stdout.write(`  load: ${report.perSecond.toFixed(0)} writes/s, p50 ${report.latency.p50.toFixed(2)} ms, failures ${JSON.stringify(report.failures)}\n`)
  }
  const after = leadershipTerms(dir)
  const won = after.slice(before.length)
  process.stdout.write(`steady load: ${workers} workers for ${((Date.now() - started) / 1000).toFixed(0)} s without faults: ${won.length} election(s) won meanwhile${won.length > 0 ? ` (terms ${won.join(", ")})` : ""}\n`)
}

export async function main(args: ReadonlyArray<string>): Promise<void> {
  const steadySeconds = option(args, "steady")
  const kills = Number(option(args, "kills") ?? 5)
  const restarts = Number(option(args, "restarts") ?? 3)
  const writers = Number(option(args, "writers") ?? 4)
  const dqloadPath = option(args, "dqload")
  if (!fs.existsSync(cli)) throw new Error("build first: npm run build")
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tqlite-failover-"))
  const nodes: Array<NodeProcess> = []
  for (let i = 1; i <= 3; i++) {
    const address = `127.0.0.1:${await freePort()}`
    nodes.push({ address, dataDir: path.join(dir, `n${i}`), child: undefined as unknown as ChildProcess })
  }
  const servers = nodes.map((n) => n.address)
  process.stdout.write(`failover: 3 tqlite processes on loopback (default settings), ${writers} writers on the TypeScript client, data and logs in ${dir}\n`)
  let dqload: ChildProcess | null = null
  try {
    nodes[0]!.child = spawnNode(nodes[0]!, null, dir)
    await Effect.runPromise(settled(servers.slice(0, 1), 1))
    for (const n of nodes.slice(1)) n.child = spawnNode(n, servers[0]!, dir)
    await Effect.runPromise(settled(servers, 3))
    if (steadySeconds !== undefined) return await steady(servers, dir, Number(steadySeconds), Number(option(args, "steady-workers") ?? 64), dqloadPath)

    const acks: Array<Ack> = []
    const failures = new Map<string, number>()
    const program = Effect.gen(function*() {
      const client = yield* makeClient({ servers, database: "failover" })
      yield* client.exec("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, writer INTEGER, at REAL)").pipe(Effect.retry(poll))
      let running = true
      const writer = (w: number) =>
        Effect.gen(function*() {
          while (running) {
            const sentMs = performance.now()
            const exit = yield* Effect.exit(client.exec("INSERT INTO t (writer, at) VALUES (?, ?)", [w, sentMs]))
            if (exit._tag === "Success") acks.push({ sentMs, ackedMs: performance.now() })
            else {
              const tag = exit.cause._tag === "Fail" ? exit.cause.error._tag : "defect"
              failures.set(tag, (failures.get(tag) ?? 0) + 1)
              // A failed write returns at once (e.g. ConnectionLost): pace the loop a little.
              yield* Effect.sleep(Duration.millis(5))
            }
          }
        })
      const fibers = yield* Effect.forEach(Array.from({ length: writers }, (_, w) => w), (w) => Effect.fork(writer(w)))

      const gapAfter = (killedMs: number) =>
        Effect.gen(function*() {
          for (;;) {
            const first = acks.find((a) => a.sentMs > killedMs)
            if (first !== undefined) return first.ackedMs - killedMs
            if (performance.now() - killedMs > 60_000) return Number.POSITIVE_INFINITY
            yield* Effect.sleep(Duration.millis(5))
          }
        })

      const killGaps: Array<number> = []
      for (let k = 0; k < kills; k++) {
        const leader = yield* settled(servers, 3)
        yield* Effect.sleep(Duration.millis(1_000)) // writes flowing on a settled cluster
        const victim = nodes.find((n) => n.address === leader)!
        const killedMs = performance.now()
        yield* Effect.promise(() => killHard(victim.child))
        const gap = yield* gapAfter(killedMs)
        killGaps.push(gap)
        process.stdout.write(`  ${stamp(killedMs)} kill -9 leader ${leader}: first write after ${gap.toFixed(0)} ms\n`)
        victim.child = spawnNode(victim, null, dir)
      }
      const restartGaps: Array<number> = []
      for (let r = 0; r < restarts; r++) {
        yield* settled(servers, 3)
        yield* Effect.sleep(Duration.millis(1_000))
        const killedMs = performance.now()
        yield* Effect.promise(() => Promise.all(nodes.map((n) => killHard(n.child))))
        for (const n of nodes) n.child = spawnNode(n, null, dir)
        const gap = yield* gapAfter(killedMs)
        restartGaps.push(gap)
        process.stdout.write(`  ${stamp(killedMs)} kill -9 of all three and restart: first write after ${gap.toFixed(0)} ms\n`)
      }
      running = false
      yield* Effect.forEach(fibers, Fiber.join, { discard: true })
      return { killGaps, restartGaps }
    })
    if (dqloadPath !== undefined) {
      const seconds = String(kills * 8 + restarts * 8 + 30)
      dqload = spawn(dqloadPath, ["--servers", servers.join(","), "--db", "dqload", "--workload", "kvwrite", "--workers", "4", "--duration", seconds], { stdio: ["ignore", "pipe", "pipe"] })
      dqload.stdout!.on("data", (chunk: Buffer) => process.stdout.write(`  dqload: ${chunk.toString()}`))
    }
    const { killGaps, restartGaps } = await Effect.runPromise(Effect.scoped(program))
    const line = (name: string, gaps: ReadonlyArray<number>) =>
      `${name.padEnd(34)} n=${gaps.length}  median ${median(gaps).toFixed(0)} ms  max ${Math.max(...gaps).toFixed(0)} ms  (${gaps.map((g) => g.toFixed(0)).join(", ")})\n`
    process.stdout.write(line("kill -9 leader → first write", killGaps))
    process.stdout.write(line("whole-cluster restart → first write", restartGaps))
    process.stdout.write(`  writes acknowledged ${acks.length}; failed by kind ${JSON.stringify(Object.fromEntries(failures))}\n`)
    if (dqload !== null) {
      dqload.kill("SIGINT")
      await new Promise((resolve) => dqload!.once("exit", resolve))
    }
  } finally {
    if (dqload !== null && dqload.exitCode === null) dqload.kill("SIGKILL")
    await Promise.all(nodes.map((n) => (n.child === undefined ? Promise.resolve() : killHard(n.child))))
    if (!args.includes("--keep")) fs.rmSync(dir, { recursive: true, force: true })
  }
}
