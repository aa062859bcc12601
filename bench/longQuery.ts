// `npm run bench -- long-query [--query-seconds 10] [--seconds 20] [--dqlite] [--dqload PATH] [--json FILE]`
//
// Issue 12's third target: while a long query runs on the leader, no leader change, a concurrent
// `SELECT 1` answers in < 50 ms, and kvwrite p99 stays within 2× of its value without the query.
// Three `tqlite start` processes (with --metrics, for /health's term) on loopback:
//   1. baseline: dqload kvwrite, 8 workers, --seconds;
//   2. then at once: a long read on the leader (a recursive CTE sized on this machine to take
//      about --query-seconds), the same dqload load, and a second client sending `SELECT 1`
//      every 100 ms (one at a time: a stalled probe is timed until it answers). dqload is
//      stopped when the query ends, so both windows cover the query only.
// Leader changes: the leader's address and /health term before and after, and the elections
// won meanwhile (each tqlite node logs "leads the cluster (term T)"). Prints baseline vs during
// and PASS/FAIL per target. `--dqlite` runs the same against 3 dqlite-demo processes for
// reference (leader address only: dqlite-demo exposes no term).
import fs from "node:fs"
import os from "node:os"
import path from "node:path"
import Database from "better-sqlite3"
import { Cause, Duration, Effect, Fiber } from "effect"
import { make as makeClient } from "../src/net/client/Client.ts"
import { onInterrupt, stopTracked } from "./children.ts"
import { type Cluster, ensureBundle, leaderOf, leadershipTerms, startDqlite, startTqlite } from "./clusters.ts"
import { ensureDqload, type RunningDqload, startDqload } from "./dqload.ts"
import { option } from "./load.ts"
import { UsageError, wholeSeconds } from "./versusDqlite.ts"
import { formatLongQuery, loadLine, type LongQueryMeasurement, type Outcome, type System, verdicts } from "./versusReport.ts"

const longQuerySql = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ?) SELECT count(*) AS n FROM c"
const probeIntervalMs = 100
const workers = 8
const database = "longquery"

/** Rows the CTE must count to take about `seconds` here: timed in-process on SQLite (the same
 * engine the nodes run), best of three so a momentary stall does not shrink it. */
export function calibrate(seconds: number): { readonly rows: number; readonly rowsPerSecond: number } {
  const db = new Database(":memory:")
  try {
    const statement = db.prepare(longQuerySql)
    const sampleRows = 2_000_000
    let bestMs = Number.POSITIVE_INFINITY
    for (let i = 0; i < 3; i++) {
      const started = performance.now()
      statement.get(sampleRows)
      bestMs = Math.min(bestMs, performance.now() - started)
    }
    const rowsPerSecond = sampleRows / (bestMs / 1000)
    return { rows: Math.round(rowsPerSecond * seconds), rowsPerSecond }
  } finally {
    db.close()
  }
}

async function healthTerm(metricsAddress: string | undefined): Promise<number | null> {
  if (metricsAddress === undefined) return null
  try {
    const response = await fetch(`http://${metricsAddress}/health`, { signal: AbortSignal.timeout(3_000) })
    const body = (await response.json()) as { readonly term?: unknown }
    return typeof body.term === "number" ? body.term : null
  } catch {
    return null
  }
}

interface During {
  readonly querySeconds: number
  readonly queryError: string | null
  readonly probeLatenciesMs: ReadonlyArray<number>
  readonly probeFailuresAfterMs: ReadonlyArray<number>
}

/** The long query, with `SELECT 1` probes beside it until it ends. `onStart` starts the load. */
function queryWithProbes(servers: ReadonlyArray<string>, rows: number, boundMs: number, onStart: () => Promise<void>): Promise<During> {
  const options = { servers, database, retriesMax: 0, requestTimeoutMs: boundMs, livenessProbeAfterMs: 0, connectionsMax: 1 }
  return Effect.runPromise(Effect.scoped(Effect.gen(function*() {
    const longClient = yield* makeClient(options)
    const probeClient = yield* makeClient(options)
    // Both connected to the leader before anything is timed.
    yield* longClient.query("SELECT 1")
    yield* probeClient.query("SELECT 1")
    const probeLatenciesMs: Array<number> = []
    const probeFailuresAfterMs: Array<number> = []
    let done = false
    const probes = Effect.gen(function*() {
      while (!done) {
        const started = performance.now()
        const exit = yield* Effect.exit(probeClient.query("SELECT 1"))
        const elapsedMs = performance.now() - started
        if (exit._tag === "Success") probeLatenciesMs.push(elapsedMs)
        else {
          probeFailuresAfterMs.push(elapsedMs)
          process.stderr.write(`  SELECT 1 failed after ${elapsedMs.toFixed(0)} ms: ${Cause.pretty(exit.cause).split("\n")[0]!.slice(0, 200)}\n`)
        }
        yield* Effect.sleep(Duration.millis(Math.max(0, probeIntervalMs - elapsedMs)))
      }
    })
    yield* Effect.promise(onStart)
    const started = performance.now()
    const probeFiber = yield* Effect.fork(probes)
    const queryExit = yield* Effect.exit(longClient.query(longQuerySql, [rows]))
    const querySeconds = (performance.now() - started) / 1000
    done = true
    // A probe in flight when the query ends answers soon after; bounded all the same.
    yield* Fiber.join(probeFiber).pipe(Effect.timeout(Duration.millis(boundMs)), Effect.ignore)
    yield* Fiber.interrupt(probeFiber)
    const queryError = queryExit._tag === "Success" ? null : Cause.pretty(queryExit.cause).split("\n")[0]!.slice(0, 300)
    return { querySeconds, queryError, probeLatenciesMs, probeFailuresAfterMs }
  })))
}

async function measure(cluster: Cluster, dqload: string, rows: number, seconds: number, querySeconds: number, log: (line: string) => void): Promise<LongQueryMeasurement> {
  const opTimeoutSeconds = 10
  log(`${cluster.system}: baseline, dqload kvwrite ×${workers} for ${seconds} s …`)
  const baseline = await startDqload(dqload, { servers: cluster.servers, database, workload: "kvwrite", workers, seconds, opTimeoutSeconds }).result
  const leaderBefore = await leaderOf(cluster.servers)
  const leaderMetrics = cluster.metrics[cluster.servers.indexOf(leaderBefore)]
  const termBefore = await healthTerm(leaderMetrics)
  const electionsBefore = cluster.system === "tqlite" ? leadershipTerms(cluster.logDir).length : null
  // The query may run far longer than calibrated (that is what is measured): wait for it up to
  // 6× plus a minute, and let dqload run until it is told to stop.
  const boundMs = (querySeconds * 6 + 60) * 1000
  log(`${cluster.system}: long query on the leader ${leaderBefore} (${rows.toLocaleString("en-US")} rows, ~${querySeconds} s) with SELECT 1 every ${probeIntervalMs} ms and dqload kvwrite ×${workers} …`)
  let load: RunningDqload | null = null
  const during = await queryWithProbes(cluster.servers, rows, boundMs, async () => {
    load = startDqload(dqload, { servers: cluster.servers, database, workload: "kvwrite", workers, seconds: Math.ceil(boundMs / 1000), opTimeoutSeconds })
    // Its workers run once it has found the leader and (re)created the table, which exists
    // since the baseline: a write of a few ms. A SIGINT before that would kill it result-less.
    await load.ready(30_000)
    await new Promise((resolve) => setTimeout(resolve, 500))
  })
  const running = load as RunningDqload | null
  if (running === null) throw new Error("dqload was not started")
  running.stop()
  const duringLoad: Outcome = await running.result.then((result) => ({ result }), (error: Error) => ({ error: error.message }))
  // Give an election the query provoked time to show in the logs before counting.
  await new Promise((resolve) => setTimeout(resolve, 2_000))
  const leaderAfter = await leaderOf(cluster.servers, 30_000)
  const termAfter = await healthTerm(cluster.metrics[cluster.servers.indexOf(leaderAfter)])
  const electionsAfter = cluster.system === "tqlite" ? leadershipTerms(cluster.logDir).length : null
  const leaderChanges = electionsBefore === null || electionsAfter === null ? null : electionsAfter - electionsBefore
  if (termBefore !== null || termAfter !== null) log(`${cluster.system}: term ${termBefore ?? "?"} → ${termAfter ?? "?"}`)
  return {
    system: cluster.system,
    baseline,
    during: duringLoad,
    query: { seconds: during.querySeconds, error: during.queryError },
    probeLatenciesMs: during.probeLatenciesMs,
    probeFailuresAfterMs: during.probeFailuresAfterMs,
    // A term that moved is an election even if the same node won it again.
    leaderChanges: leaderChanges === null ? null : Math.max(leaderChanges, termBefore !== null && termAfter !== null && termAfter !== termBefore ? 1 : 0),
    leaderBefore,
    leaderAfter
  }
}

export async function main(args: ReadonlyArray<string>): Promise<void> {
  try {
    await longQuery(args)
  } catch (error) {
    if (!(error instanceof UsageError)) throw error
    process.stderr.write(`long-query: ${error.message}\n`)
    process.exitCode = 2
  }
}

async function longQuery(args: ReadonlyArray<string>): Promise<void> {
  const querySeconds = wholeSeconds(args, "query-seconds", 10)
  const seconds = wholeSeconds(args, "seconds", 20)
  const systems: ReadonlyArray<System> = args.includes("--dqlite") ? ["tqlite", "dqlite"] : ["tqlite"]
  const jsonFile = option(args, "json")
  const log = (line: string) => process.stderr.write(`${line}\n`)
  await ensureBundle(log)
  const dqload = await ensureDqload(option(args, "dqload"), log)
  const { rows, rowsPerSecond } = calibrate(querySeconds)
  log(`calibrated: SQLite counts ${(rowsPerSecond / 1e6).toFixed(1)}M CTE rows/s here, so ${rows.toLocaleString("en-US")} rows for ~${querySeconds} s`)
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tqlite-longquery-"))
  log(`3 tqlite processes${systems.length > 1 ? ", then 3 dqlite-demo processes" : ""} (data in ${dir})`)
  const loadBefore = os.loadavg()
  const results: Array<LongQueryMeasurement> = []
  const cleanUp = async () => {
    await stopTracked(3_000)
    fs.rmSync(dir, { recursive: true, force: true })
  }
  const removeHandler = onInterrupt(cleanUp)
  try {
    for (const system of systems) {
      const sub = path.join(dir, system)
      fs.mkdirSync(sub)
      const cluster = system === "tqlite" ? await startTqlite(sub, { metrics: true }) : await startDqlite(sub)
      try {
        const m = await measure(cluster, dqload, rows, seconds, querySeconds, log)
        results.push(m)
        process.stdout.write(`\n${formatLongQuery(m)}\n`)
      } finally {
        await cluster.stop()
      }
    }
  } finally {
    removeHandler()
    await cleanUp()
  }
  const loadAfter = os.loadavg()
  process.stdout.write(`\n${loadLine({ before: loadBefore, after: loadAfter, cpus: os.cpus().length })}\n`)
  if (jsonFile !== undefined) {
    const json = {
      benchmark: "long-query", querySeconds, baselineSeconds: seconds, calibratedRows: rows, loadavgBefore: loadBefore, loadavgAfter: loadAfter,
      results: results.map((m) => ({ ...m, verdicts: verdicts(m) }))
    }
    fs.writeFileSync(jsonFile, JSON.stringify(json, null, 2) + "\n")
    process.stdout.write(`results: ${jsonFile}\n`)
  }
}
