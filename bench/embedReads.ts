// `npm run bench -- embed-reads [--seconds S] [--readers N] [--writers W] [--rows R]`: linearizable
// point reads on a 3-node embedded cluster in one process (Tqlite.make ×3 on loopback TCP, real
// disk with fsync, ticks of 50 ms), two ways:
// - "leader only": every read is served by the leader: the leader's service reads its committed
//   view, each follower's reads go over the wire client to the leader (a Tqlite.makeRemote on
//   the follower's address: the route followers took before read levels);
// - "each node locally": every node's service reads its own copy (the default linearizable
//   level: a follower asks the leader for a read index, waits until applied, reads locally).
// N reader fibers per node (default 8), W writer fibers on the leader meanwhile (default 0).
// Prints reads/s, p50 and p99 per mode and the ratio; the target is ≥ 2.5×.
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Duration, Effect } from "effect"
import type { TqliteService } from "../src/embed/Tqlite.ts"
import * as Tqlite from "../src/embed/Tqlite.ts"
import { freePort } from "../test/freePort.ts"
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
}

export interface EmbedReadsOptions {
  readonly seconds: number
  readonly readers: number
  /** Reader fibers on the leader's own service (default: `readers`). */
  readonly leaderReaders: number
  readonly writers: number
  readonly rows: number
  readonly root: string
}

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

export async function main(args: ReadonlyArray<string>): Promise<void> {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "tqlite-bench-embed-reads-"))
  const options: EmbedReadsOptions = {
    seconds: Number(option(args, "seconds") ?? "3"),
    readers: Number(option(args, "readers") ?? "8"),
    leaderReaders: Number(option(args, "leader-readers") ?? option(args, "readers") ?? "8"),
    writers: Number(option(args, "writers") ?? "0"),
    rows: Number(option(args, "rows") ?? "1000"),
    root
  }
  const results = await Effect.runPromise(run(options).pipe(Effect.ensuring(Effect.sync(() => fs.rmSync(root, { recursive: true, force: true })))))
  process.stdout.write(`3 nodes in one process, ${options.readers} readers per follower and ${options.leaderReaders} on the leader, ${options.writers} writers on the leader, ${options.seconds} s per mode, load average ${os.loadavg()[0]!.toFixed(1)}\n`)
  process.stdout.write(`| mode | reads/s | per node (leader first) | p50 ms | p99 ms | errors | writes |\n|---|---|---|---|---|---|---|\n`)
  for (const r of results) process.stdout.write(`| ${r.mode} | ${r.readsPerSecond} | ${r.perNode.join(" / ")} | ${r.p50Ms.toFixed(2)} | ${r.p99Ms.toFixed(2)} | ${r.errors} | ${r.writes} |\n`)
  const [viaLeader, local] = results
  if (viaLeader !== undefined && local !== undefined) process.stdout.write(`ratio (each node locally / leader only): ${(local.readsPerSecond / viaLeader.readsPerSecond).toFixed(2)}× (target ≥ 2.5×)\n`)
}
