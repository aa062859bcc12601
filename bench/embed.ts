// `npm run bench -- embed [--seconds S] [--writers 1,16]`: the embedding API's routes on a 3-node
// cluster in one process (Tqlite.make ×3 on loopback TCP, real disk with fsync): autocommit
// INSERTs and point SELECTs through the leader's service (local SQL surface), a follower's
// service (routed to the leader over the wire client) and a remote-only service
// (Tqlite.makeRemote). Each writer sends one statement after another; ticks are 50 ms.
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Duration, Effect } from "effect"
import type { TqliteService } from "../src/embed/Tqlite.ts"
import * as Tqlite from "../src/embed/Tqlite.ts"
import { option, runWriters } from "./load.ts"
import { freePort } from "../test/freePort.ts"

const payload = Buffer.alloc(100, 7)

/** Statements per second and the median latency of `writers` fibers running `statement`. */
const measure = (writers: number, seconds: number, statement: (writer: number, i: number) => Effect.Effect<unknown, unknown>) =>
  Effect.map(runWriters(writers, seconds, statement), (outcome) => ({
    perSecond: Math.round(outcome.ok / outcome.seconds),
    medianMs: (outcome.latenciesMs[Math.floor(outcome.latenciesMs.length / 2)] ?? NaN).toFixed(2),
    errors: outcome.errors
  }))

export async function main(args: ReadonlyArray<string>): Promise<void> {
  const seconds = Number(option(args, "seconds") ?? "3")
  const writerCounts = (option(args, "writers") ?? "1,16").split(",").map(Number)
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "tqlite-bench-embed-"))
  const program = Effect.scoped(Effect.gen(function*() {
    const start = (join: ReadonlyArray<string>) =>
      Effect.gen(function*() {
        const address = `127.0.0.1:${yield* freePort}`
        const service = yield* Tqlite.make({ dataDir: path.join(root, address.replace(":", "-")), address, join, tickMs: 50, database: "bench" })
        return { address, service }
      })
    const first = yield* start([])
    const second = yield* start([first.address])
    const third = yield* start([first.address])
    const nodes = [first, second, third]
    const roleOf = (service: TqliteService) => Effect.map(service.state, (s) => s?.role)
    let leader: TqliteService | undefined
    for (let i = 0; i < 200 && leader === undefined; i++) {
      for (const node of nodes) if ((yield* roleOf(node.service)) === "leader") leader = node.service
      if (leader === undefined) yield* Effect.sleep(Duration.millis(50))
    }
    if (leader === undefined) return yield* Effect.dieMessage("no leader")
    const follower = nodes.find((n) => n.service !== leader)!
    const remote = yield* Tqlite.makeRemote({ servers: [follower.address], database: "bench", connectionsMax: Number(option(args, "connections") ?? "4") })
    yield* leader.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, w INTEGER, v BLOB)")
    yield* leader.execute("INSERT INTO t (w, v) VALUES (-1, ?)", [payload])
    const routes: Array<[string, TqliteService]> = (option(args, "routes") ?? "local,routed,remote").split(",").map((r): [string, TqliteService] => r === "local" ? ["leader (local)", leader] : r === "routed" ? ["follower (routed)", follower.service] : ["remote (layerRemote)", remote])
    process.stdout.write(`| route | writers | inserts/s | median ms | selects/s | median ms | errors |\n|---|---|---|---|---|---|---|\n`)
    for (const [name, service] of routes) {
      for (const writers of writerCounts) {
        const inserts = yield* measure(writers, seconds, (w) => service.execute("INSERT INTO t (w, v) VALUES (?, ?)", [w, payload]))
        const selects = yield* measure(writers, seconds, () => service.query("SELECT w, v FROM t WHERE id = 1"))
        process.stdout.write(`| ${name} | ${writers} | ${inserts.perSecond} | ${inserts.medianMs} | ${selects.perSecond} | ${selects.medianMs} | ${inserts.errors + selects.errors} |\n`)
      }
    }
  }))
  await Effect.runPromise(program.pipe(Effect.ensuring(Effect.sync(() => fs.rmSync(root, { recursive: true, force: true })))))
}
