// `tqlite bench`: a load generator against a live cluster over the wire protocol (any dqlite
// wire-protocol v1 server, so tqlite and dqlite can be measured the same way).
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import { Console, Effect } from "effect"
import { parseArgs } from "node:util"
import { make as makeClient } from "../../net/client/Client.ts"
import type { LoadOptions, Workload } from "../loadgen.ts"
import { prepare, run, workersMax } from "../loadgen.ts"
import type { Command } from "./command.ts"
import { usageError } from "./command.ts"

export interface BenchArgs {
  readonly servers: ReadonlyArray<string>
  readonly database: string
  readonly load: LoadOptions
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
      keys: { type: "string", default: "100000" }
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
  return { servers, database: positionals[0] ?? "bench", load: { workers, seconds, workload, valueBytes, keySpace } }
}

export const bench: Command = {
  name: "bench",
  usage: `tqlite bench --servers A,B,C [--workers N] [--seconds S] [--workload write|read|mixed]
               [--value-bytes B] [--keys K] [DB]
      runs a key-value workload against a live cluster (each worker its own connection to the
      leader) and prints operations/s, latency percentiles and failures by kind`,
  run: (args) => {
    const parsed = parseBenchArgs(args)
    if ("error" in parsed) return usageError("bench", parsed.error)
    const program = Effect.scoped(
      Effect.gen(function*() {
        const client = yield* makeClient({ servers: parsed.servers, database: parsed.database, connectionsMax: parsed.load.workers })
        const load = parsed.load
        yield* Console.error(`tqlite bench: ${load.workload} workload, ${load.workers} workers, ${load.seconds} s, ${load.valueBytes}-byte values, ${load.keySpace} keys, database ${parsed.database}`)
        yield* prepare(client, load)
        const report = yield* run(client, {
          ...load,
          onProgress: (done, elapsed) => Console.error(`  ${elapsed.toFixed(0)} s: ${done} operations`)
        })
        const failed = Object.entries(report.failures)
        yield* Console.log(
          `${report.operations} operations in ${report.seconds.toFixed(1)} s: ${report.perSecond.toFixed(0)}/s; ` +
            `latency ms p50 ${report.latency.p50.toFixed(2)} p95 ${report.latency.p95.toFixed(2)} p99 ${report.latency.p99.toFixed(2)} max ${report.latency.max.toFixed(2)}; ` +
            `failures ${failed.length === 0 ? "none" : failed.map(([kind, n]) => `${kind} ${n}`).join(", ")}`
        )
        if (failed.length > 0) process.exitCode = 1
      })
    )
    NodeRuntime.runMain(program.pipe(Effect.tapErrorCause((cause) => Effect.sync(() => void (process.exitCode = 1)).pipe(Effect.zipRight(Console.error(`tqlite bench: ${String(cause)}`))))), { disableErrorReporting: true })
  }
}
