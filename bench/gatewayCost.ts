// `npm run bench -- gateway-cost [--requests N]`: the CPU one request costs the gateway's request
// loop, with the raw test client in the same process: LEADER and QUERY_SQL `SELECT 1` sent one at
// a time (as go-dqlite sends them) over loopback, the node's real metrics as the observer, against
// the test fixture's SQL surface (no Raft). `process.cpuUsage` over N of each after a warm-up.
// Compares builds: run it in each worktree, back to back (it depends on the machine's load).
import { parseArgs } from "node:util"
import { Effect } from "effect"
import * as NodeMetrics from "../src/observability/NodeMetrics.ts"
import { querySql, rawConnect, startGateway } from "../test/net/gateway/harness.ts"

export async function main(args: ReadonlyArray<string>): Promise<void> {
  const { values } = parseArgs({ args: [...args], options: { requests: { type: "string", default: "5000" } } })
  const requests = Number(values.requests)
  if (!Number.isSafeInteger(requests) || requests < 1) throw new Error(`--requests must be a positive integer, got ${values.requests}`)
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
