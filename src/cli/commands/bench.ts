// `tqlite bench`: a load generator against a live cluster over the wire protocol (any dqlite
// wire-protocol v1 server, so tqlite and dqlite can be measured the same way).
import { Cause, Console, Deferred, Effect, Exit } from "effect"
import { parseArgs } from "node:util"
import { make as makeClient } from "../../net/client/Client.ts"
import { exitCodes, parseTlsFlags, tlsFlags, withTls } from "../common.ts"
import type { PeerTlsOptions } from "../../net/peers/sockets.ts"
import { failureLine } from "../failureText.ts"
import type { LoadOptions, LoadReport, Workload } from "../loadgen.ts"
import { prepare, run, workersMax } from "../loadgen.ts"
import type { Command } from "./command.ts"
import { usageError } from "./command.ts"

export interface BenchArgs {
  readonly servers: ReadonlyArray<string>
  readonly database: string
  readonly load: LoadOptions
  readonly tls?: PeerTlsOptions
}

/** Parses the arguments, or says what is wrong with them. */
export function parseBenchArgs(args: ReadonlyArray<string>): BenchArgs | { readonly error: string } {
  try {
    return checkBenchArgs(args)
  } catch (error) {
    // parseArgs throws on unknown flags and missing values.
    return { error: error instanceof Error ? error.message : String(error) }
  }
}

function checkBenchArgs(args: ReadonlyArray<string>): BenchArgs | { readonly error: string } {
  const { values, positionals } = parseArgs({
    args: [...args],
    allowPositionals: true,
    options: {
      servers: { type: "string" },
      workers: { type: "string", default: "8" },
      seconds: { type: "string", default: "10" },
      workload: { type: "string", default: "write" },
      "value-bytes": { type: "string", default: "100" },
      keys: { type: "string", default: "100000" },
      ...tlsFlags
    }
  })
  const servers = (values.servers ?? "").split(",").map((s) => s.trim()).filter((s) => s.length > 0)
  if (servers.length === 0) return { error: "--servers HOST:PORT[,...] is required" }
  if (positionals.length > 1) return { error: `one database name expected, got ${positionals.length}` }
  const workers = Number(values.workers)
  const seconds = Number(values.seconds)
  const valueBytes = Number(values["value-bytes"])
  const keySpace = Number(values.keys)
  const workload = values.workload as Workload
  if (!Number.isSafeInteger(workers) || workers < 1 || workers > workersMax) return { error: `--workers must be an integer in [1, ${workersMax}]` }
  if (!Number.isFinite(seconds) || seconds <= 0 || seconds > 86_400) return { error: "--seconds must be in (0, 86400]" }
  if (!Number.isSafeInteger(valueBytes) || valueBytes < 0 || valueBytes > 1024 * 1024) return { error: "--value-bytes must be an integer in [0, 1048576]" }
  if (!Number.isSafeInteger(keySpace) || keySpace < 1 || keySpace > 100_000_000) return { error: "--keys must be an integer in [1, 100000000]" }
  if (!["write", "read", "mixed"].includes(workload)) return { error: "--workload must be write, read or mixed" }
  const tls = parseTlsFlags(values)
  if ("error" in tls) return tls
  return { servers, database: positionals[0] ?? "bench", load: { workers, seconds, workload, valueBytes, keySpace }, ...withTls(tls.tls) }
}

export const bench: Command = {
  name: "bench",
  usage: `tqlite bench --servers A,B,C [--workers N] [--seconds S] [--workload write|read|mixed]
               [--value-bytes B] [--keys K] [--tls-cert F --tls-key F --tls-ca F] [DB]
      runs a key-value workload against a live cluster (each worker its own connection to the
      leader) and prints operations/s, latency percentiles and failures by kind`,
  run: async (args) => {
    const parsed = parseBenchArgs(args)
    if ("error" in parsed) return usageError("bench", parsed.error)
    // The first Ctrl-C (or SIGTERM) ends the run early and still prints the summary so far, exit
    // 130; a second one exits at once.
    const stop = Effect.runSync(Deferred.make<void>())
    let signalled = false
    const onSignal = () => {
      if (signalled) process.exit(exitCodes.interrupted)
      signalled = true
      process.stderr.write("tqlite bench: stopping; the summary so far follows (again to exit at once)\n")
      Effect.runSync(Deferred.succeed(stop, undefined))
    }
    process.on("SIGINT", onSignal)
    process.on("SIGTERM", onSignal)
    const program = Effect.scoped(
      Effect.gen(function*() {
        const client = yield* makeClient({ servers: parsed.servers, database: parsed.database, connectionsMax: parsed.load.workers, tls: parsed.tls ?? null })
        const load = parsed.load
        yield* Console.error(`tqlite bench: ${load.workload} workload, ${load.workers} workers, ${load.seconds} s, ${load.valueBytes}-byte values, ${load.keySpace} keys, database ${parsed.database}`)
        // Interrupted before the run starts: nothing to summarise.
        yield* Effect.raceFirst(prepare(client, load), Effect.zipRight(Deferred.await(stop), Effect.interrupt))
        const report = yield* run(client, {
          ...load,
          stop: Deferred.await(stop),
          onProgress: (done, elapsed) => Console.error(`  ${elapsed.toFixed(0)} s: ${done} operations`)
        })
        yield* Console.log(summaryLine(report))
        return signalled ? exitCodes.interrupted : Object.keys(report.failures).length > 0 ? exitCodes.failed : exitCodes.ok
      })
    )
    try {
      const exit = await Effect.runPromiseExit(program)
      if (Exit.isSuccess(exit)) process.exitCode = exit.value
      else if (Cause.isInterruptedOnly(exit.cause)) process.exitCode = exitCodes.interrupted
      else {
        process.stderr.write(`tqlite bench: ${failureLine(exit.cause, "")}\n`)
        process.exitCode = exitCodes.failed
      }
    } finally {
      process.off("SIGINT", onSignal)
      process.off("SIGTERM", onSignal)
    }
  }
}

/** The run as one line: throughput, latency percentiles, failures by kind. */
export function summaryLine(report: LoadReport): string {
  const failed = Object.entries(report.failures)
  return `${report.operations} operations in ${report.seconds.toFixed(1)} s: ${report.perSecond.toFixed(0)}/s; ` +
    `latency ms p50 ${report.latency.p50.toFixed(2)} p95 ${report.latency.p95.toFixed(2)} p99 ${report.latency.p99.toFixed(2)} max ${report.latency.max.toFixed(2)}; ` +
    `failures ${failed.length === 0 ? "none" : failed.map(([kind, n]) => `${kind} ${n}`).join(", ")}`
}
