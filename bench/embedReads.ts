// `npm run bench -- embed-reads [--seconds S] [--readers N] [--leader-readers N] [--writers W]
// [--rows R] [--processes [--only leader|local] [--cpu-prof DIR]]`: linearizable
// point reads on a 3-node embedded cluster in one process (Tqlite.make ×3 on loopback TCP, real
// disk with fsync, ticks of 50 ms), two ways:
// - "leader only": every read is served by the leader: the leader's service reads its committed
//   view, each follower's reads go over the wire client to the leader (a Tqlite.makeRemote on
//   the follower's address: the route followers took before read levels);
// - "each node locally": every node's service reads its own copy (the default linearizable
//   level: a follower asks the leader for a read index, waits until applied, reads locally).
// N reader fibers per node (default 8), W writer fibers on the leader meanwhile (default 0).
// By default the three nodes share one process (and one event loop: the modes then compare the
// CPU cost of a read, not the scale-out); `--processes` runs each node in a process of its own
// (bench/embedReadsNode.ts), as a deployed service runs its instances.
// Prints reads/s, p50 and p99 per mode and the ratio; the target is ≥ 2.5×. With
// --processes also each process's CPU per read (less sensitive to other load on shared cores);
// --only runs one mode, --cpu-prof DIR has each node process write a V8 CPU profile there.
import type { ChildProcess } from "node:child_process"
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Duration, Effect } from "effect"
import type { TqliteService } from "../src/embed/Tqlite.ts"
import * as Tqlite from "../src/embed/Tqlite.ts"
import { freePort } from "../test/freePort.ts"
import { stopAll, track } from "./children.ts"
import { option } from "./load.ts"

export interface ModeResult {
  readonly mode: string
  readonly reads: number
  readonly readsPerSecond: number
  readonly p50Ms: number
  readonly p99Ms: number
  readonly errors: number
  readonly writes: number
  /** Reads served per second by each node's readers (leader first). */
  readonly perNode: ReadonlyArray<number>
  /** With --processes: each node's process CPU over the mode (leader first), ms. */
  readonly cpuMs?: ReadonlyArray<number>
}

export interface EmbedReadsOptions {
  readonly seconds: number
  readonly readers: number
  /** Reader fibers on the leader's own service (default: `readers`). */
  readonly leaderReaders: number
  readonly writers: number
  readonly rows: number
  readonly root: string
  /** With --processes: run only this mode (`--only leader|local`, e.g. to profile one). */
  readonly only?: "leader" | "local"
  /** With --processes: each node process writes a V8 CPU profile into this directory at exit. */
  readonly cpuProfDir?: string
}

/** One turn of the event loop (timers and sockets get theirs). */
export const nextTurn = Effect.async<void>((resume) => void setImmediate(() => resume(Effect.void)))

const percentile = (sorted: ReadonlyArray<number>, p: number) => sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))] ?? NaN

/** Runs both modes on one cluster; the results in the order run. */
export const run = (options: EmbedReadsOptions): Effect.Effect<ReadonlyArray<ModeResult>, unknown> =>
  Effect.scoped(Effect.gen(function*() {
    const start = (join: ReadonlyArray<string>) =>
      Effect.gen(function*() {
        const address = `127.0.0.1:${yield* freePort}`
        const service = yield* Tqlite.make({ dataDir: path.join(options.root, address.replace(":", "-")), address, join, tickMs: 50, database: "bench" })
        return { address, service }
      })
    const first = yield* start([])
    const second = yield* start([first.address])
    const third = yield* start([first.address])
    const nodes = [first, second, third]
    let leader: (typeof nodes)[number] | undefined
    for (let i = 0; i < 400 && leader === undefined; i++) {
      for (const node of nodes) {
        const state = yield* node.service.state
        const voters = (yield* node.service.members).filter((m) => m.role === "voter").length
        if (state?.role === "leader" && voters === 3) leader = node
      }
      if (leader === undefined) yield* Effect.sleep(Duration.millis(50))
    }
    if (leader === undefined) return yield* Effect.dieMessage("no leader with three voters")
    const followers = nodes.filter((n) => n !== leader)
    yield* leader.service.execute("CREATE TABLE kv (id INTEGER PRIMARY KEY, v TEXT)")
    for (let i = 1; i <= options.rows; i += 100) {
      const values = Array.from({ length: Math.min(100, options.rows - i + 1) }, (_, j) => `(${i + j}, 'value ${i + j}')`).join(", ")
      yield* leader.service.execute(`INSERT INTO kv (id, v) VALUES ${values}`)
    }
    // Every follower caught up before measuring.
    const committed = (yield* leader.service.state)!.commitIndex
    for (const follower of followers) {
      for (let i = 0; i < 400 && ((yield* follower.service.state)?.appliedIndex ?? 0) < committed; i++) yield* Effect.sleep(Duration.millis(20))
    }
    const routed = yield* Effect.forEach(followers, (f) => Tqlite.makeRemote({ servers: [f.address], database: "bench", connectionsMax: options.readers }))
    const measure = (mode: string, services: ReadonlyArray<TqliteService>) =>
      Effect.gen(function*() {
        const latenciesMs: Array<number> = []
        let errors = 0
        let writes = 0
        const deadline = performance.now() + options.seconds * 1000
        const started = performance.now()
        let seed = 12345
        const nextId = () => {
          seed = (seed * 1103515245 + 12345) & 0x7fffffff
          return 1 + (seed % options.rows)
        }
        const perNode = services.map(() => 0)
        const reader = (service: TqliteService, node: number) =>
          Effect.gen(function*() {
            while (performance.now() < deadline) {
              const t0 = performance.now()
              // Each read arrives as a request does, from an I/O event: without this turn of the event
        // loop, readers answered synchronously (the leader's own) would starve its sockets.
        yield* nextTurn
        const exit = yield* Effect.exit(service.query("SELECT v FROM kv WHERE id = ?", [nextId()]))
              if (exit._tag === "Success") {
                latenciesMs.push(performance.now() - t0)
                perNode[node]!++
              } else errors++
            }
          })
        const writer = Effect.gen(function*() {
          while (performance.now() < deadline) {
            const exit = yield* Effect.exit(leader.service.execute("UPDATE kv SET v = ? WHERE id = ?", [`w${writes}`, nextId()]))
            if (exit._tag === "Success") writes++
            else errors++
          }
        })
        const fibers = [
          ...services.flatMap((service, node) => Array.from({ length: node === 0 ? options.leaderReaders : options.readers }, () => reader(service, node))),
          ...Array.from({ length: options.writers }, () => writer)
        ]
        yield* Effect.all(fibers, { concurrency: "unbounded", discard: true })
        const seconds = (performance.now() - started) / 1000
        latenciesMs.sort((a, b) => a - b)
        return { mode, reads: latenciesMs.length, readsPerSecond: Math.round(latenciesMs.length / seconds), p50Ms: percentile(latenciesMs, 0.5), p99Ms: percentile(latenciesMs, 0.99), errors, writes, perNode: perNode.map((n) => Math.round(n / seconds)) } satisfies ModeResult
      })
    const viaLeader = yield* measure("leader only", [leader.service, ...routed])
    const local = yield* measure("each node locally", [leader.service, ...followers.map((f) => f.service)])
    return [viaLeader, local]
  }))

/** A node in a child process (embedReadsNode.ts): commands in, "@@ " answers out, one at a time. */
class NodeProcess {
  private buffered = ""
  private readonly waiting: Array<(value: unknown) => void> = []
  readonly exited: Promise<number | null>

  constructor(readonly address: string, readonly child: ChildProcess) {
    child.stdout!.on("data", (chunk: Buffer) => {
      this.buffered += chunk.toString()
      for (let at = this.buffered.indexOf("\n"); at >= 0; at = this.buffered.indexOf("\n")) {
        const line = this.buffered.slice(0, at)
        this.buffered = this.buffered.slice(at + 1)
        if (line.startsWith("@@ ")) this.waiting.shift()?.(JSON.parse(line.slice(3)))
      }
    })
    child.stderr!.on("data", (chunk: Buffer) => void process.stderr.write(chunk))
    this.exited = new Promise((resolve) => child.once("exit", (code) => resolve(code)))
  }

  /** The next answer, within `timeoutMs`. */
  next<A>(timeoutMs: number): Promise<A> {
    return new Promise<A>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`node ${this.address}: no answer within ${timeoutMs} ms`)), timeoutMs)
      this.waiting.push((value) => {
        clearTimeout(timer)
        resolve(value as A)
      })
    })
  }

  ask<A>(command: Record<string, unknown>, timeoutMs = 60_000): Promise<A> {
    const answer = this.next<A>(timeoutMs)
    this.child.stdin!.write(`${JSON.stringify(command)}\n`)
    return answer
  }
}

/** Both modes with each node in a process of its own (a service instance per process, as a
 * deployed service runs them): readers per node, leader-only first. */
export async function runProcesses(options: EmbedReadsOptions): Promise<ReadonlyArray<ModeResult>> {
  const entry = path.join(import.meta.dirname, "embedReadsNode.ts")
  const nodes: Array<NodeProcess> = []
  const spawnNode = async (join: string) => {
    const address = `127.0.0.1:${await Effect.runPromise(freePort)}`
    const profile = options.cpuProfDir === undefined ? [] : ["--cpu-prof", "--cpu-prof-dir", options.cpuProfDir]
    const child = track(spawn(process.execPath, [...profile, "--import", "tsx", entry, path.join(options.root, address.replace(":", "-")), address, join], { stdio: ["pipe", "pipe", "pipe"] }))
    const node = new NodeProcess(address, child)
    nodes.push(node)
    await node.next(120_000)
    return node
  }
  try {
    const first = await spawnNode("")
    await Promise.all([spawnNode(first.address), spawnNode(first.address)])
    type State = { role?: string; appliedIndex?: number; commitIndex?: number; voters: number }
    let leader: NodeProcess | undefined
    for (let i = 0; i < 600 && leader === undefined; i++) {
      for (const node of nodes) {
        const state = await node.ask<State>({ cmd: "state" })
        if (state.role === "leader" && state.voters === 3) leader = node
      }
      if (leader === undefined) await new Promise((resolve) => setTimeout(resolve, 100))
    }
    if (leader === undefined) throw new Error("no leader with three voters")
    await leader.ask({ cmd: "setup", rows: options.rows }, 120_000)
    const committed = (await leader.ask<State>({ cmd: "state" })).commitIndex ?? 0
    for (const node of nodes) {
      for (let i = 0; i < 600 && ((await node.ask<State>({ cmd: "state" })).appliedIndex ?? 0) < committed; i++) await new Promise((resolve) => setTimeout(resolve, 50))
    }
    const results: Array<ModeResult> = []
    const modes = options.only === "leader" ? ["leader only"] : options.only === "local" ? ["each node locally"] : ["leader only", "each node locally"]
    for (const mode of modes) {
      const answers = await Promise.all(nodes.map((node) =>
        node.ask<{ latenciesMs: Array<number>; errors: number; cpuMs: number }>({ cmd: "measure", mode, seconds: options.seconds, readers: node === leader ? options.leaderReaders : options.readers, leader: leader!.address, rows: options.rows }, options.seconds * 1000 + 120_000)
      ))
      const ordered = [leader, ...nodes.filter((n) => n !== leader)].map((node) => answers[nodes.indexOf(node!)]!)
      const latenciesMs = ordered.flatMap((a) => a.latenciesMs).sort((a, b) => a - b)
      results.push({
        mode,
        reads: latenciesMs.length,
        readsPerSecond: Math.round(latenciesMs.length / options.seconds),
        p50Ms: percentile(latenciesMs, 0.5),
        p99Ms: percentile(latenciesMs, 0.99),
        errors: ordered.reduce((sum, a) => sum + a.errors, 0),
        writes: 0,
        perNode: ordered.map((a) => Math.round(a.latenciesMs.length / options.seconds)),
        cpuMs: ordered.map((a) => a.cpuMs)
      })
    }
    await Promise.all(nodes.map((node) => node.ask({ cmd: "quit" }, 5_000).catch(() => undefined)))
    return results
  } finally {
    await stopAll(nodes.map((node) => node.child), 5_000)
  }
}

export async function main(args: ReadonlyArray<string>): Promise<void> {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "tqlite-bench-embed-reads-"))
  const options: EmbedReadsOptions = {
    seconds: Number(option(args, "seconds") ?? "3"),
    readers: Number(option(args, "readers") ?? "8"),
    leaderReaders: Number(option(args, "leader-readers") ?? option(args, "readers") ?? "8"),
    writers: Number(option(args, "writers") ?? "0"),
    rows: Number(option(args, "rows") ?? "1000"),
    root,
    ...(option(args, "cpu-prof") !== undefined ? { cpuProfDir: path.resolve(option(args, "cpu-prof")!) } : {}),
    ...(option(args, "only") === "leader" || option(args, "only") === "local" ? { only: option(args, "only") as "leader" | "local" } : {})
  }
  const processes = args.includes("--processes")
  const results = processes
    ? await runProcesses(options).finally(() => fs.rmSync(root, { recursive: true, force: true }))
    : await Effect.runPromise(run(options).pipe(Effect.ensuring(Effect.sync(() => fs.rmSync(root, { recursive: true, force: true })))))
  const where = processes ? "3 nodes in 3 processes" : "3 nodes in one process"
  process.stdout.write(`${where}, ${options.readers} readers per follower and ${options.leaderReaders} on the leader, ${processes ? 0 : options.writers} writers on the leader, ${options.seconds} s per mode, load average ${os.loadavg()[0]!.toFixed(1)}\n`)
  process.stdout.write(`| mode | reads/s | per node (leader first) | p50 ms | p99 ms | errors | writes |\n|---|---|---|---|---|---|---|\n`)
  for (const r of results) process.stdout.write(`| ${r.mode} | ${r.readsPerSecond} | ${r.perNode.join(" / ")} | ${r.p50Ms.toFixed(2)} | ${r.p99Ms.toFixed(2)} | ${r.errors} | ${r.writes} |\n`)
  // CPU per read is what bounds reads/s when the cores are shared (this 2-core machine runs the
  // three processes): less sensitive to other load than reads/s.
  for (const r of results) {
    if (r.cpuMs === undefined || r.reads === 0) continue
    const perRead = r.cpuMs.map((ms) => ((ms * 1000) / r.reads).toFixed(0))
    const total = (r.cpuMs.reduce((a, b) => a + b, 0) * 1000) / r.reads
    process.stdout.write(`${r.mode}: CPU per read ${total.toFixed(0)} µs in all (leader first: ${perRead.join(" / ")} µs)\n`)
  }
  const [viaLeader, local] = results
  if (viaLeader !== undefined && local !== undefined) process.stdout.write(`ratio (each node locally / leader only): ${(local.readsPerSecond / viaLeader.readsPerSecond).toFixed(2)}× (target ≥ 2.5×)\n`)
}
