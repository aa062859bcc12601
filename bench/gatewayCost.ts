// `npm run bench -- gateway-cost [--requests N]`: the CPU one request costs the gateway's request
// loop, with the raw test client in the same process: LEADER and QUERY_SQL `SELECT 1` sent one at
// a time (as go-dqlite sends them) over loopback, the node's real metrics as the observer, against
// the test fixture's SQL surface (no Raft). `process.cpuUsage` over N of each after a warm-up.
// Compares builds: run it in each worktree, back to back (it depends on the machine's load).
//
// `--replicated`: the statement path instead, in one process and one build: a single-node
// cluster's leader (real disk, fsync async) behind two gateways, one serving requests as plain code
// and one answering each in the connection's fiber (`bugs.effectPerRequest`, as before the plain
// path); a raw client on each sends an EXEC_SQL one-row INSERT then a point QUERY_SQL, one at a
// time on each of `--connections` (32) connections at once. Blocks of each alternate, so the machine's load falls on both alike; CPU per request
// (client, gateway, session, writer, Raft and log of the one node: only the gateway differs).
import fs from "node:fs"
import os from "node:os"
import path from "node:path"
import { parseArgs } from "node:util"
import { Effect } from "effect"
import * as NodeMetrics from "../src/observability/NodeMetrics.ts"
import { makeFakeCluster } from "../test/net/gateway/fixture/fakeCluster.ts"
import { execSql, listenForClients, querySql, rawConnect, startGateway } from "../test/net/gateway/harness.ts"
import { SqliteCluster } from "../test/sim/full/SqliteCluster.ts"
import { Prng } from "../test/sim/Prng.ts"

async function replicated(requests: number, connections: number): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tqlite-gateway-cost-"))
  try {
    const lines = await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
      const nodes = new SqliteCluster({ baseDir: dir, rng: new Prng(1), tickMs: 50, fsync: "async", syncEveryEntries: 1000, snapshotEveryEntries: 1_000_000, disk: "node", limits: {} })
      yield* nodes.bootstrap([1])
      const leader = yield* nodes.awaitLeader(1000)
      const metrics = NodeMetrics.make(1)
      const modes = [false, true].map((effectPerRequest) => ({ effectPerRequest, samples: [] as Array<number> }))
      const clients = yield* Effect.forEach(modes, (mode) =>
        Effect.gen(function*() {
          const server = yield* listenForClients({ databases: leader.dbs, cluster: makeFakeCluster({ self: 1, members: [], leader: null }), observer: metrics.gateway }, undefined, { effectPerRequest: mode.effectPerRequest })
          return yield* Effect.forEach(Array.from({ length: connections }), () =>
            Effect.gen(function*() {
              const client = yield* rawConnect(server.address)
              yield* client.open("bench")
              return client
            }))
        }))
      yield* clients[0]![0]!.call(execSql("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)"))
      const value = { kind: "blob" as const, value: new Uint8Array(100).fill(7) }
      let id = 0
      type Client = (typeof clients)[number][number]
      const round = (client: Client) =>
        Effect.zipRight(client.call(execSql("INSERT INTO t(v) VALUES (?)", [value])), Effect.suspend(() => client.call(querySql("SELECT v FROM t WHERE id = ?", [{ kind: "integer", value: 1 + (id++ % 1000) }]))))
      // Every connection of a mode does `rounds` rounds, all at once (writes gather into entries).
      const rounds = (mode: ReadonlyArray<Client>, count: number) =>
        Effect.forEach(mode, (client) => Effect.forEach(Array.from({ length: count }), () => round(client), { discard: true }), { concurrency: "unbounded", discard: true })
      for (const mode of clients) yield* rounds(mode, Math.max(1, Math.ceil(1_000 / connections))) // warm up (JIT)
      const blocks = 8
      const perConnection = Math.max(1, Math.floor(requests / 2 / blocks / connections))
      for (let block = 0; block < blocks; block++) {
        for (const [index, mode] of modes.entries()) {
          const cpu = process.cpuUsage()
          yield* rounds(clients[index]!, perConnection)
          const used = process.cpuUsage(cpu)
          mode.samples.push((used.user + used.system) / (2 * perConnection * connections))
        }
      }
      const perBlock = perConnection * connections
      yield* nodes.shutdown()
      const median = (xs: ReadonlyArray<number>) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!
      return modes.map((mode) =>
        `gateway-cost --replicated: ${mode.effectPerRequest ? "fiber per request (bugs.effectPerRequest)" : "plain statement path         "} ${median(mode.samples).toFixed(1)} µs CPU per request (median of ${blocks} blocks of ${perBlock} INSERT + point SELECT from ${connections} connections; blocks ${mode.samples.map((x) => x.toFixed(0)).join(" ")})`)
    })))
    for (const line of lines) console.log(line)
    console.log(`load ${os.loadavg()[0]!.toFixed(1)}`)
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

export async function main(args: ReadonlyArray<string>): Promise<void> {
  const { values } = parseArgs({ args: [...args], options: { requests: { type: "string", default: "5000" }, replicated: { type: "boolean", default: false }, connections: { type: "string", default: "32" } } })
  const requests = Number(values.requests)
  if (!Number.isSafeInteger(requests) || requests < 1) throw new Error(`--requests must be a positive integer, got ${values.requests}`)
  if (values.replicated) return replicated(requests, Number(values.connections))
  const result = await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
    const metrics = NodeMetrics.make(1)
    const gateway = yield* startGateway({ observer: metrics.gateway })
    const client = yield* rawConnect(gateway.address)
    yield* client.open("bench")
    const select = querySql("SELECT 1")
    const round = Effect.zipRight(client.call({ kind: "leader" }), client.call(select))
    for (let i = 0; i < 2_000; i++) yield* round // warm up (JIT)
    const cpu = process.cpuUsage()
    const startedMs = performance.now()
    for (let i = 0; i < requests; i++) yield* round
    const used = process.cpuUsage(cpu)
    const wallMs = performance.now() - startedMs
    return { cpuUs: (used.user + used.system) / (2 * requests), wallUs: (wallMs * 1000) / (2 * requests) }
  })))
  console.log(`gateway-cost: ${2 * requests} requests (LEADER and QUERY_SQL SELECT 1), ${result.cpuUs.toFixed(1)} µs CPU and ${result.wallUs.toFixed(1)} µs wall per request (server and client in this process); load ${(await import("node:os")).loadavg()[0]!.toFixed(1)}`)
}
