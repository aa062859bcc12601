// The load generator behind `tqlite bench`: concurrent workers, each with its own connection to
// the leader, run a key-value workload over the wire for a fixed time and the run reports
// throughput, latency percentiles and failures by kind. Like dqlite-benchmark's kvwrite and
// kvreadwrite, so the two can be run side by side against a tqlite and a dqlite cluster.
import { Clock, Duration, Effect } from "effect"
import type { DqliteClientService } from "../net/client/Client.ts"
import type { ClientError } from "../net/client/errors.ts"

export type Workload = "write" | "read" | "mixed"

export interface LoadOptions {
  readonly workers: number
  readonly seconds: number
  readonly workload: Workload
  readonly valueBytes: number
  /** Keys are drawn from [0, keySpace): writes are upserts, reads point lookups. */
  readonly keySpace: number
  /** Called about once a second with the operations done so far. */
  readonly onProgress?: (done: number, elapsedSeconds: number) => Effect.Effect<void>
  /** Ends the run early when it completes (Ctrl-C): operations in flight are abandoned and the
   * report covers what finished. */
  readonly stop?: Effect.Effect<void>
}

export interface LoadReport {
  readonly operations: number
  readonly seconds: number
  readonly perSecond: number
  /** Milliseconds, from the kept samples. */
  readonly latency: { readonly p50: number; readonly p95: number; readonly p99: number; readonly max: number }
  readonly failures: Readonly<Record<string, number>>
}

/** Latency samples kept at most (reservoir sampling beyond): bounds the run's memory. */
export const samplesMax = 200_000
export const workersMax = 1_024

export const table = "tqlite_bench_kv"

/** Milliseconds with sub-millisecond precision (latencies on loopback are fractions of one). */
const nowMs = Effect.map(Clock.currentTimeNanos, (ns) => Number(ns / 1000n) / 1000)

/** Creates the table the workload uses and fills the key space for reads. */
export const prepare = (client: DqliteClientService, options: LoadOptions): Effect.Effect<void, ClientError> =>
  Effect.gen(function*() {
    yield* client.exec(`CREATE TABLE IF NOT EXISTS ${table} (k INTEGER PRIMARY KEY, v BLOB NOT NULL)`)
    if (options.workload === "write") return
    const value = new Uint8Array(options.valueBytes)
    // Bounded transactions: a few thousand rows each, far below the transaction size bound.
    const rowsPerTransaction = Math.max(1, Math.floor((4 * 1024 * 1024) / Math.max(64, options.valueBytes)))
    for (let first = 0; first < options.keySpace; first += rowsPerTransaction) {
      const last = Math.min(options.keySpace, first + rowsPerTransaction)
      yield* client.transaction(
        Effect.gen(function*() {
          for (let k = first; k < last; k++) yield* client.exec(`INSERT OR REPLACE INTO ${table} (k, v) VALUES (?, ?)`, [k, value])
        })
      )
    }
  })

/** Runs the workload for `options.seconds` and reports. Never fails: failures are counted. */
export const run = (client: DqliteClientService, options: LoadOptions): Effect.Effect<LoadReport> =>
  Effect.gen(function*() {
    const started = yield* nowMs
    const deadline = started + options.seconds * 1000
    const samples: Array<number> = []
    let seen = 0
    let operations = 0
    const failures: Record<string, number> = {}
    let seed = 0x9e3779b9
    const random = () => {
      // xorshift32: the workload's key choice need not be cryptographic, only cheap.
      seed ^= seed << 13
      seed ^= seed >>> 17
      seed ^= seed << 5
      return (seed >>> 0) / 0x1_0000_0000
    }
    const record = (ms: number) => {
      seen++
      if (samples.length < samplesMax) samples.push(ms)
      else {
        const at = Math.floor(random() * seen)
        if (at < samplesMax) samples[at] = ms
      }
    }
    const value = new Uint8Array(options.valueBytes)
    const one = (): Effect.Effect<unknown, ClientError> => {
      const key = Math.floor(random() * options.keySpace)
      const read = options.workload === "read" || (options.workload === "mixed" && random() < 0.5)
      return read
        ? client.query(`SELECT v FROM ${table} WHERE k = ?`, [key])
        : client.exec(`INSERT OR REPLACE INTO ${table} (k, v) VALUES (?, ?)`, [key, value])
    }
    const worker = Effect.gen(function*() {
      for (;;) {
        const before = yield* nowMs
        if (before >= deadline) return
        const outcome = yield* Effect.either(one())
        const after = yield* nowMs
        if (outcome._tag === "Right") {
          operations++
          record(after - before)
        } else {
          const kind = outcome.left._tag === "ServerFailure" ? `ServerFailure(${outcome.left.code})` : outcome.left._tag
          failures[kind] = (failures[kind] ?? 0) + 1
        }
      }
    })
    const progress = options.onProgress === undefined ? Effect.void : Effect.gen(function*() {
      for (;;) {
        yield* Effect.sleep(Duration.seconds(1))
        const now = yield* nowMs
        yield* options.onProgress!(operations, (now - started) / 1000)
      }
    })
    const workers = Effect.all(Array.from({ length: options.workers }, () => worker), { concurrency: "unbounded", discard: true })
    yield* Effect.raceAll([workers, Effect.zipRight(progress, Effect.never), options.stop ?? Effect.never])
    const seconds = ((yield* nowMs) - started) / 1000
    samples.sort((a, b) => a - b)
    const at = (q: number) => samples.length === 0 ? 0 : samples[Math.min(samples.length - 1, Math.floor(q * samples.length))]!
    return {
      operations,
      seconds,
      perSecond: seconds > 0 ? operations / seconds : 0,
      latency: { p50: at(0.5), p95: at(0.95), p99: at(0.99), max: samples.length === 0 ? 0 : samples[samples.length - 1]! },
      failures
    }
  })
