// `npm run bench -- opcount [--seconds S] [--writers 1,8] [--readers 1,8] [--wire-writers 8] [--effect-per-request]` (0: no such rows): Effect operations and fiber resumptions
// per committed entry and per statement on a 3-node in-process cluster (the `sqlite` bench's
// setup, real disk), counted by a Supervisor with op supervision on. Fibers are split in three:
// "writer+client" are the client fibers and every fiber they fork (the leader's writer is created,
// and its fibers forked, from a client's call); within it, "writer fibers" are the writer's own
// (those with the `writer` log annotation, where the build has it); "rest" is everything else
// (Raft actors, log writers, appliers, links). The numbers compare builds; op supervision itself slows everything
// down, so rates printed here mean nothing.
import fs from "node:fs"
import os from "node:os"
import path from "node:path"
import { Effect, FiberRef, HashMap, RuntimeFlagsPatch, RuntimeFlags, Supervisor } from "effect"
import type { Fiber } from "effect"
import { make as makeClient } from "../src/net/client/Client.ts"
import { listenForClients } from "../test/net/gateway/harness.ts"
import { SqliteCluster } from "../test/sim/full/SqliteCluster.ts"
import { Prng } from "../test/sim/Prng.ts"
import { option, runWriters } from "./load.ts"

/** Which side a fiber counts for; inherited by the fibers it forks. */
const sideRef = FiberRef.unsafeMake<"rest" | "writer+client" | "client" | "gateway">("rest")

type Side = "rest" | "writer+client" | "writer fibers"

const sideOf = <A, E>(fiber: Fiber.RuntimeFiber<A, E>): Side | "client" | "gateway" => {
  const side = fiber.getFiberRef(sideRef)
  if (side === "rest" || side === "client") return side
  // The leader's writer is created by a client's first write, so over the wire its fibers are
  // forked from a connection's: counted apart.
  if (side === "gateway") return HashMap.has(fiber.getFiberRef(FiberRef.currentLogAnnotations), "writer") ? "writer fibers" : side
  return HashMap.has(fiber.getFiberRef(FiberRef.currentLogAnnotations), "writer") ? "writer fibers" : side
}

/** The actor a "rest" fiber belongs to (its `actor` log annotation, node ids elided), or "other". */
const actorOf = <A, E>(fiber: Fiber.RuntimeFiber<A, E>): string => {
  const name = HashMap.get(fiber.getFiberRef(FiberRef.currentLogAnnotations), "actor")
  return name._tag === "Some" ? String(name.value).replace(/\d+/g, "N") : "other"
}

class Counter extends Supervisor.AbstractSupervisor<void> {
  readonly restByActor = new Map<string, { ops: number; resumptions: number }>()
  readonly ops = { rest: 0, "writer+client": 0, "writer fibers": 0, client: 0, gateway: 0 }
  readonly resumptions = { rest: 0, "writer+client": 0, "writer fibers": 0, client: 0, gateway: 0 }
  counting = false
  get value(): Effect.Effect<void> {
    return Effect.void
  }
  private actorCount<A, E>(fiber: Fiber.RuntimeFiber<A, E>) {
    const actor = actorOf(fiber)
    let count = this.restByActor.get(actor)
    if (count === undefined) this.restByActor.set(actor, count = { ops: 0, resumptions: 0 })
    return count
  }
  override onEffect<A, E>(fiber: Fiber.RuntimeFiber<A, E>): void {
    if (!this.counting) return
    const side = sideOf(fiber)
    this.ops[side]++
    if (side === "rest") this.actorCount(fiber).ops++
  }
  override onResume<A, E>(fiber: Fiber.RuntimeFiber<A, E>): void {
    if (!this.counting) return
    const side = sideOf(fiber)
    this.resumptions[side]++
    if (side === "rest") this.actorCount(fiber).resumptions++
  }
  reset(): void {
    this.ops.rest = this.ops["writer+client"] = this.ops["writer fibers"] = this.ops.client = this.ops.gateway = 0
    this.resumptions.rest = this.resumptions["writer+client"] = this.resumptions["writer fibers"] = this.resumptions.client = this.resumptions.gateway = 0
    this.restByActor.clear()
  }
}

async function measure(dir: string, writers: number, seconds: number): Promise<string> {
  const base = fs.mkdtempSync(path.join(dir, `opcount-${writers}-`))
  const counter = new Counter()
  const program = Effect.scoped(
    Effect.gen(function*() {
      const nodes = new SqliteCluster({ baseDir: base, rng: new Prng(writers), tickMs: 50, fsync: "async", syncEveryEntries: 1000, snapshotEveryEntries: 1_000_000, disk: "node", limits: {} })
      yield* nodes.bootstrap([1, 2, 3])
      const leader = yield* nodes.awaitLeader(1000)
      const client = <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.locally(effect, sideRef, "writer+client")
      const setup = yield* client(leader.dbs.open("bench"))
      yield* client(setup.execSql("CREATE TABLE t(id INTEGER PRIMARY KEY, w INTEGER, v BLOB)", []))
      const sessions = yield* client(Effect.forEach(Array.from({ length: writers }), () => leader.dbs.open("bench")))
      const payload = Buffer.alloc(100, 7)
      // Warm up, then count.
      yield* client(runWriters(writers, 0.5, (w) => sessions[w]!.execSql("INSERT INTO t(w, v) VALUES (?, ?)", [w, payload])))
      const statsBefore = { ...leader.dbs.writer("bench")!.stats }
      counter.reset()
      counter.counting = true
      const outcome = yield* client(runWriters(writers, seconds, (w) => sessions[w]!.execSql("INSERT INTO t(w, v) VALUES (?, ?)", [w, payload])))
      counter.counting = false
      const stats = leader.dbs.writer("bench")!.stats
      yield* nodes.shutdown()
      const entries = Math.max(1, stats.entries - statsBefore.entries)
      const statements = Math.max(1, outcome.ok)
      const row = (name: Side) =>
        `${name.padEnd(14)} ops/entry ${(counter.ops[name] / entries).toFixed(0).padStart(6)}  ops/statement ${(counter.ops[name] / statements).toFixed(0).padStart(6)}  resumptions/entry ${(counter.resumptions[name] / entries).toFixed(1).padStart(6)}  resumptions/statement ${(counter.resumptions[name] / statements).toFixed(1).padStart(6)}`
      // "writer+client" printed in total: its own fibers plus the writer's.
      counter.ops["writer+client"] += counter.ops["writer fibers"]
      counter.resumptions["writer+client"] += counter.resumptions["writer fibers"]
      return [`writers ${writers}: ${outcome.ok} statements ok, ${outcome.errors} errors, ${entries} entries (${(statements / entries).toFixed(1)} statements/entry, ${stats.retries - statsBefore.retries} retries, ${((stats.commitMsTotal - statsBefore.commitMsTotal) / entries).toFixed(1)} ms/commit)`, `  ${row("writer+client")}`, `    of which ${row("writer fibers")}`, `  ${row("rest")}`, ...[...counter.restByActor].sort((a, b) => b[1].ops - a[1].ops).map(([actor, count]) =>
        `    of which ${actor.padEnd(28)} ops/entry ${(count.ops / entries).toFixed(0).padStart(6)}  resumptions/entry ${(count.resumptions / entries).toFixed(1).padStart(6)}`)].join("\n")
    })
  )
  return Effect.runPromise(program.pipe(Effect.supervised(counter), Effect.withRuntimeFlagsPatch(RuntimeFlagsPatch.enable(RuntimeFlags.OpSupervision))))
}

/** Point reads (`SELECT v FROM t WHERE id = ?`, bounded: on the leader's committed view), or
 * one-row INSERTs, over the dqlite wire: a gateway on loopback in front of the leader, the
 * TypeScript client. The client's fibers are not counted; everything the node does for a
 * statement is (gateway, session, writer, Raft's lease check, the read itself). With
 * `effectPerRequest` the gateway answers every request in the connection's fiber (as before the
 * plain statement path). */
async function measureWire(dir: string, kind: "read" | "write", readers: number, seconds: number, effectPerRequest: boolean): Promise<string> {
  const base = fs.mkdtempSync(path.join(dir, `opcount-${kind}s-${readers}-`))
  const counter = new Counter()
  const program = Effect.scoped(
    Effect.gen(function*() {
      const nodes = new SqliteCluster({ baseDir: base, rng: new Prng(readers), tickMs: 50, fsync: "async", syncEveryEntries: 1000, snapshotEveryEntries: 1_000_000, disk: "node", limits: {} })
      yield* nodes.bootstrap([1, 2, 3])
      const leader = yield* nodes.awaitLeader(1000)
      let address = ""
      const cluster = {
        leader: Effect.sync(() => ({ id: leader.id, address })),
        servers: Effect.sync(() => [{ id: leader.id, address, role: "voter" as const }]),
        add: () => Effect.die("unused"), assign: () => Effect.die("unused"), remove: () => Effect.die("unused"), transfer: () => Effect.die("unused"),
        describe: Effect.succeed({ failureDomain: 0n, weight: 0n }),
        setWeight: () => Effect.void
      }
      // Served as a node serves clients (the peers' listener hands them over). The connection fibers (forked by the listener) count as "gateway": a lease read runs in them.
      const server = yield* Effect.locally(listenForClients({ databases: leader.dbs, cluster }, undefined, { effectPerRequest }), sideRef, "gateway")
      address = server.address
      const client = <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.locally(effect, sideRef, "client")
      const db = yield* client(makeClient({ servers: [address], database: "bench", connectionsMax: readers }))
      yield* client(db.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)", []))
      yield* client(db.exec("INSERT INTO t(id, v) VALUES (1, ?)", [Buffer.alloc(100, 7)]))
      const payload = Buffer.alloc(100, 7)
      const read = kind === "read" ? () => Effect.asVoid(db.query("SELECT v FROM t WHERE id = ?", [1])) : () => Effect.asVoid(db.exec("INSERT INTO t(v) VALUES (?)", [payload]))
      yield* client(runWriters(readers, 0.5, read))
      counter.reset()
      counter.counting = true
      const outcome = yield* client(runWriters(readers, seconds, read))
      counter.counting = false
      yield* nodes.shutdown()
      const reads = Math.max(1, outcome.ok)
      const unit = kind === "read" ? "read" : "write"
      return [
        `${kind === "read" ? "readers" : "wire writers"} ${readers}${effectPerRequest ? " (effectPerRequest)" : ""}: ${outcome.ok} ${kind === "read" ? "point reads" : "one-row INSERTs"} ok over the wire, ${outcome.errors} errors`,
        `  connection fibers  ops/${unit} ${(counter.ops.gateway / reads).toFixed(1).padStart(6)}  resumptions/${unit} ${(counter.resumptions.gateway / reads).toFixed(2).padStart(6)}`,
        `  writer fibers  ops/${unit} ${(counter.ops["writer fibers"] / reads).toFixed(1).padStart(6)}  resumptions/${unit} ${(counter.resumptions["writer fibers"] / reads).toFixed(2).padStart(6)}`,
        `  rest of the node (Raft, log, applier, links; for reads background ticks)  ops/${unit} ${(counter.ops.rest / reads).toFixed(0).padStart(6)}  resumptions/${unit} ${(counter.resumptions.rest / reads).toFixed(1).padStart(6)}`,
        ...[...counter.restByActor].sort((a, b) => b[1].ops - a[1].ops).map(([actor, count]) =>
          `    of which ${actor.padEnd(28)} ops/${unit} ${(count.ops / reads).toFixed(0).padStart(6)}  resumptions/${unit} ${(count.resumptions / reads).toFixed(1).padStart(6)}`),
        `  (client, not counted above: ops/${unit} ${(counter.ops.client / reads).toFixed(0)})`
      ].join("\n")
    })
  )
  return Effect.runPromise(program.pipe(Effect.supervised(counter), Effect.withRuntimeFlagsPatch(RuntimeFlagsPatch.enable(RuntimeFlags.OpSupervision))))
}

/** A comma-separated list of worker counts; 0 (or nothing) means no such row: `--readers 0` used
 * to run a wire row with a client of no connections, whose first request waited for ever (the
 * cluster's timers kept the process alive after the table was printed). */
export function workerCounts(args: ReadonlyArray<string>, name: string, fallback: string): Array<number> {
  const text = option(args, name) ?? fallback
  return text.split(",").filter((word) => word.trim() !== "").map((word) => {
    const count = Number(word)
    if (!Number.isSafeInteger(count) || count < 0) throw new Error(`--${name} ${text}: worker counts are whole numbers, 0 for none`)
    return count
  }).filter((count) => count > 0)
}

export async function main(args: ReadonlyArray<string>): Promise<void> {
  const seconds = Number(option(args, "seconds") ?? 2)
  if (!(seconds > 0)) throw new Error(`--seconds ${option(args, "seconds")}: a positive number of seconds`)
  const writerCounts = workerCounts(args, "writers", "1,8")
  const readerCounts = workerCounts(args, "readers", "1,8")
  const wireWriterCounts = workerCounts(args, "wire-writers", "8")
  const effectPerRequest = args.includes("--effect-per-request")
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tqlite-bench-opcount-"))
  try {
    for (const writers of writerCounts) process.stdout.write(`${await measure(dir, writers, seconds)}\n`)
    for (const readers of readerCounts) process.stdout.write(`${await measureWire(dir, "read", readers, seconds, effectPerRequest)}\n`)
    for (const writers of wireWriterCounts) process.stdout.write(`${await measureWire(dir, "write", writers, seconds, effectPerRequest)}\n`)
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
}
