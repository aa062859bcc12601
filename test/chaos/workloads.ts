// The chaos workloads: set, register (read / write / compare-and-set), bank and list-append,
// run at once through the real go-dqlite driver (test/chaos/goclient, a child process) and the
// TypeScript client (fibers here). Both record every operation with real invoke and complete
// times; an outcome the client cannot know is recorded as unknown ("info").
import { type ChildProcess, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as readline from "node:readline"
import { Duration, Effect } from "effect"
import type { ClientError, ServerFailure } from "../../src/net/client/errors.ts"
import type { DqliteClientService } from "../../src/net/client/Client.ts"
import type { Row } from "../../src/net/client/values.ts"
import { make as makeClient } from "../../src/net/client/Client.ts"
import { Prng } from "../sim/Prng.ts"
import type { ChaosOp, OpType, Workload } from "./history.ts"
import { parseOpLine } from "./history.ts"
import { finalClient } from "./checkers.ts"

export const database = "chaos"

export interface WorkloadConfig {
  readonly servers: ReadonlyArray<string>
  readonly workloads: ReadonlyArray<Workload>
  /** Register and list keys change every epoch, so each key's history stays short. */
  readonly epochStartMs: number
  readonly epochMs: number
  readonly registerKeys: number
  readonly listKeys: number
  readonly accounts: number
  readonly opTimeoutMs: number
  /** Mean pause between one worker's operations. */
  readonly pauseMs: number
}

export const accountBalance = 100

/** Times are the wall clock, as the Go client's (one clock for both), in whole ms: an invocation
 * is stamped with the ms it began in (never later than the truth) and a completion with the end
 * of the ms it ended in (never earlier), so every recorded interval holds the real one. */
export const invokedNow = () => Date.now()
export const completedNow = () => Date.now() + 1

export const schema = [
  "CREATE TABLE IF NOT EXISTS set_items (v TEXT PRIMARY KEY)",
  "CREATE TABLE IF NOT EXISTS registers (k INTEGER PRIMARY KEY, v TEXT NOT NULL)",
  "CREATE TABLE IF NOT EXISTS accounts (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL)",
  "CREATE TABLE IF NOT EXISTS list_items (id INTEGER PRIMARY KEY AUTOINCREMENT, k INTEGER NOT NULL, v TEXT NOT NULL)"
]

export function accountsInsert(accounts: number): string {
  return `INSERT OR IGNORE INTO accounts (id, balance) VALUES ${Array.from({ length: accounts }, (_, id) => `(${id}, ${accountBalance})`).join(", ")}`
}

// ---------------------------------------------------------------------------------------------
// The Go client
// ---------------------------------------------------------------------------------------------

/** Builds the go-dqlite workload client (GOPATH mode against Debian's package, no cgo) and
 * returns the binary's path. Fails with the reason when Go or go-dqlite is missing. */
export async function buildGoClient(): Promise<string> {
  const source = path.join(import.meta.dirname, "goclient", "main.go")
  const gopath = "/usr/share/gocode"
  if (!fs.existsSync(path.join(gopath, "src/github.com/canonical/go-dqlite/driver"))) {
    throw new Error("go-dqlite is missing: apt-get install golang-go golang-github-canonical-go-dqlite-dev")
  }
  const work = fs.mkdtempSync(path.join(os.tmpdir(), "tqlite-chaos-go-"))
  try {
    fs.copyFileSync(source, path.join(work, "main.go"))
    const binary = path.join(os.tmpdir(), "tqlite-chaos-go", "chaos-go")
    fs.mkdirSync(path.dirname(binary), { recursive: true })
    const env = { ...process.env, GO111MODULE: "off", GOPATH: gopath, CGO_ENABLED: "0", GOCACHE: path.join(os.tmpdir(), "tqlite-chaos-gocache"), GOFLAGS: "" }
    await new Promise<void>((resolve, reject) => {
      const child = spawn("go", ["build", "-o", binary, "."], { cwd: work, env, stdio: ["ignore", "ignore", "pipe"] })
      let stderr = ""
      child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()))
      child.on("error", (error) => reject(new Error(`go build: ${error.message} (is golang-go installed?)`)))
      child.on("exit", (code) => (code === 0 ? resolve() : reject(new Error(`go build failed: ${stderr}`))))
    })
    return binary
  } finally {
    fs.rmSync(work, { recursive: true, force: true })
  }
}

export interface RunningGoClient {
  readonly child: ChildProcess
  /** Stops the workers (SIGTERM: they finish the operation in hand) and waits for the exit. */
  readonly stop: () => Promise<void>
}

export function startGoClient(binary: string, config: WorkloadConfig, workers: number, seed: number, logFile: string, history: Array<ChaosOp>): RunningGoClient {
  const log = fs.openSync(logFile, "a")
  const child = spawn(binary, [
    "--servers", config.servers.join(","),
    "--db", database,
    "--workloads", config.workloads.join(","),
    "--workers", String(workers),
    "--op-timeout", `${config.opTimeoutMs}ms`,
    "--pause-ms", String(config.pauseMs),
    "--seed", String(seed),
    "--epoch-start-ms", String(Math.floor(config.epochStartMs)),
    "--epoch-ms", String(config.epochMs),
    "--register-keys", String(config.registerKeys),
    "--list-keys", String(config.listKeys),
    "--accounts", String(config.accounts)
  ], { stdio: ["ignore", "pipe", log] })
  fs.closeSync(log)
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)))
  const lines = readline.createInterface({ input: child.stdout! })
  const done = new Promise<void>((resolve) => lines.on("close", resolve))
  lines.on("line", (line) => {
    if (line.trim() !== "") history.push(parseOpLine(line))
  })
  return {
    child,
    stop: async () => {
      child.kill("SIGTERM")
      const code = await exited
      await done
      if (code !== 0) throw new Error(`the Go workload client exited with ${code} (see ${logFile})`)
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The TypeScript client
// ---------------------------------------------------------------------------------------------

const leadershipLostOrIo = (code: number) => (code & 0xff) === 10

/** Whether a write that failed with `error` certainly did nothing ("fail") or may have ("info"). */
export function writeOutcome(error: { readonly _tag: string }): OpType {
  switch (error._tag) {
    case "ServerFailure": {
      const failure = error as ServerFailure
      if (failure.isNotLeader) return "fail"
      return leadershipLostOrIo(failure.code) ? "info" : "fail"
    }
    case "ConnectionFailed":
    case "NoLeader":
    case "InvalidArgument":
      return "fail"
    default:
      // ConnectionLost, RequestTimeout, ProtocolError, our own timeout, and any error a newer
      // client adds: the write may have been applied.
      return "info"
  }
}

function describe(error: unknown): string {
  if (typeof error === "object" && error !== null && "_tag" in error) {
    const tagged = error as { _tag: string; message?: string; detail?: string; code?: number }
    return `${tagged._tag}${tagged.code !== undefined ? ` ${tagged.code}` : ""}: ${tagged.message ?? tagged.detail ?? ""}`
  }
  return String(error)
}

interface TsWorker {
  readonly name: string
  readonly workload: Workload
  readonly prng: Prng
  readonly db: DqliteClientService
  seq: number
  readonly lastSeen: Map<number, string>
}

/** Runs one operation: `body` gives the result, or fails; `isRead` failures are certain. */
function record<A>(
  worker: TsWorker,
  config: WorkloadConfig,
  history: Array<ChaosOp>,
  f: string,
  value: unknown,
  body: Effect.Effect<A, ClientError>,
  options: { readonly isRead: boolean; readonly certainFailure?: () => boolean }
): Effect.Effect<void> {
  return Effect.suspend(() => {
    const invokedAt = invokedNow()
    return Effect.either(body.pipe(Effect.timeout(Duration.millis(config.opTimeoutMs)))).pipe(
      Effect.map((either) => {
        const base = { workload: worker.workload, client: worker.name, f, value, invokedAt }
        if (either._tag === "Right") {
          history.push({ ...base, completedAt: completedNow(), type: "ok", ...(either.right !== undefined ? { result: either.right } : {}) })
          return
        }
        const type: OpType = options.isRead || options.certainFailure?.() === true ? "fail" : writeOutcome(either.left)
        history.push({ ...base, completedAt: type === "info" ? null : completedNow(), type, error: describe(either.left) })
      })
    )
  })
}

const text = (value: unknown): string => (value instanceof Uint8Array ? Buffer.from(value).toString("utf8") : String(value))

function registerStep(worker: TsWorker, config: WorkloadConfig, history: Array<ChaosOp>): Effect.Effect<void> {
  const epoch = Math.floor((Date.now() - config.epochStartMs) / config.epochMs)
  const key = epoch * config.registerKeys + worker.prng.int(0, config.registerKeys - 1)
  const db = worker.db
  switch (worker.prng.int(0, 2)) {
    case 0:
      return record(worker, config, history, "read", { key }, Effect.map(db.query("SELECT v FROM registers WHERE k = ?", [key]), ({ rows }) => {
        const value = rows.length === 0 ? null : text(rows[0]![0])
        if (value === null) worker.lastSeen.delete(key)
        else worker.lastSeen.set(key, value)
        return { value }
      }), { isRead: true })
    case 1: {
      const value = `${worker.name}-${++worker.seq}`
      return record(worker, config, history, "write", { key, value }, Effect.map(
        db.exec("INSERT INTO registers (k, v) VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET v = excluded.v", [key, value]),
        () => void worker.lastSeen.set(key, value)
      ), { isRead: false })
    }
    default: {
      const expected = worker.lastSeen.get(key) ?? null
      const value = `${worker.name}-${++worker.seq}`
      const statement = expected === null
        ? db.exec("INSERT INTO registers (k, v) VALUES (?, ?) ON CONFLICT (k) DO NOTHING", [key, value])
        : db.exec("UPDATE registers SET v = ? WHERE k = ? AND v = ?", [value, key, expected])
      return record(worker, config, history, "cas", { key, expected, value }, Effect.map(statement, ({ rowsAffected }) => {
        if (rowsAffected === 1n) worker.lastSeen.set(key, value)
        return { applied: rowsAffected === 1n }
      }), { isRead: false })
    }
  }
}

function bankStep(worker: TsWorker, config: WorkloadConfig, history: Array<ChaosOp>): Effect.Effect<void> {
  const db = worker.db
  if (worker.prng.chance(0.5)) {
    return record(worker, config, history, "read", null, Effect.map(db.query("SELECT id, balance FROM accounts ORDER BY id"), ({ rows }) => ({ balances: balancesOf(rows) })), { isRead: true })
  }
  const from = worker.prng.int(0, config.accounts - 1)
  const to = (from + worker.prng.int(1, config.accounts - 1)) % config.accounts
  const amount = worker.prng.int(1, 5)
  // A failure before COMMIT was sent rolls the transaction back: certainly not applied.
  let committing = false
  const transfer = db.transaction(Effect.gen(function*() {
    yield* db.exec("UPDATE accounts SET balance = balance - ? WHERE id = ?", [amount, from])
    yield* db.exec("UPDATE accounts SET balance = balance + ? WHERE id = ?", [amount, to])
    committing = true
  }))
  return record(worker, config, history, "transfer", { from, to, amount }, transfer, { isRead: false, certainFailure: () => !committing })
}

export function balancesOf(rows: ReadonlyArray<Row>): Record<string, number> {
  const balances: Record<string, number> = {}
  for (const row of rows) balances[String(row[0])] = Number(row[1])
  return balances
}

function listStep(worker: TsWorker, config: WorkloadConfig, history: Array<ChaosOp>): Effect.Effect<void> {
  const epoch = Math.floor((Date.now() - config.epochStartMs) / config.epochMs)
  const key = epoch * config.listKeys + worker.prng.int(0, config.listKeys - 1)
  const db = worker.db
  if (worker.prng.chance(1 / 3)) {
    return record(worker, config, history, "read", { key }, Effect.map(db.query("SELECT v FROM list_items WHERE k = ? ORDER BY id", [key]), ({ rows }) => ({ values: rows.map((row) => text(row[0])) })), { isRead: true })
  }
  const value = `${worker.name}-${++worker.seq}`
  return record(worker, config, history, "append", { key, value }, Effect.asVoid(db.exec("INSERT INTO list_items (k, v) VALUES (?, ?)", [key, value])), { isRead: false })
}

function setStep(worker: TsWorker, config: WorkloadConfig, history: Array<ChaosOp>): Effect.Effect<void> {
  const value = `${worker.name}-${++worker.seq}`
  return record(worker, config, history, "add", value, Effect.asVoid(worker.db.exec("INSERT INTO set_items (v) VALUES (?)", [value])), { isRead: false })
}

const steps: Record<Workload, (worker: TsWorker, config: WorkloadConfig, history: Array<ChaosOp>) => Effect.Effect<void>> = {
  set: setStep,
  register: registerStep,
  bank: bankStep,
  list: listStep
}

export interface RunningTsClient {
  readonly stop: () => Promise<void>
}

/** Starts `workers` TypeScript workers per workload, each with a client of its own. */
export function startTsClient(config: WorkloadConfig, workers: number, prng: Prng, history: Array<ChaosOp>): RunningTsClient {
  const control = { stopped: false }
  let id = 0
  const fibers = config.workloads.flatMap((workload) =>
    Array.from({ length: workers }, () => {
      const name = `t${++id}`
      const workerPrng = prng.fork(name)
      return Effect.scoped(Effect.gen(function*() {
        const db = yield* makeClient({ servers: config.servers, database, connectTimeoutMs: 1_000, requestTimeoutMs: config.opTimeoutMs })
        const worker: TsWorker = { name, workload, prng: workerPrng, db, seq: 0, lastSeen: new Map() }
        while (!control.stopped) {
          yield* steps[workload](worker, config, history)
          yield* Effect.sleep(Duration.millis(workerPrng.int(0, 2 * config.pauseMs)))
        }
      }))
    })
  )
  const done = Effect.runPromise(Effect.all(fibers, { concurrency: "unbounded", discard: true }))
  return {
    stop: async () => {
      control.stopped = true
      await done
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Setup and the final reads
// ---------------------------------------------------------------------------------------------

/** Creates the tables and the accounts (idempotent: retried until it succeeds). */
export function setupSchema(db: DqliteClientService, accounts: number): Effect.Effect<void, ClientError> {
  return Effect.forEach([...schema, accountsInsert(accounts)], (sql) => db.exec(sql), { discard: true })
}

/** Reads every workload's final state as operations of the client "final". */
export function finalReads(db: DqliteClientService, history: ReadonlyArray<ChaosOp>): Effect.Effect<ReadonlyArray<ChaosOp>, ClientError> {
  return Effect.gen(function*() {
    const out: Array<ChaosOp> = []
    const read = <A>(workload: Workload, value: unknown, query: Effect.Effect<A, ClientError>) =>
      Effect.gen(function*() {
        const invokedAt = invokedNow()
        const result = yield* query
        return { workload, client: finalClient, f: "read", value, invokedAt, completedAt: completedNow(), type: "ok" as const, result }
      })
    const used = new Set(history.map((op) => op.workload))
    if (used.has("set")) out.push(yield* read("set", null, Effect.map(db.query("SELECT v FROM set_items"), ({ rows }) => rows.map((row) => text(row[0])))))
    if (used.has("bank")) out.push(yield* read("bank", null, Effect.map(db.query("SELECT id, balance FROM accounts ORDER BY id"), ({ rows }) => ({ balances: balancesOf(rows) }))))
    if (used.has("list")) {
      const invokedAt = invokedNow()
      const { rows } = yield* db.query("SELECT k, v FROM list_items ORDER BY k, id")
      const completedAt = completedNow()
      const lists = new Map<number, Array<string>>()
      for (const op of history) if (op.workload === "list") lists.set((op.value as { key: number }).key, [])
      for (const row of rows) {
        const key = Number(row[0])
        const values = lists.get(key) ?? []
        values.push(text(row[1]))
        lists.set(key, values)
      }
      for (const [key, values] of lists) out.push({ workload: "list", client: finalClient, f: "read", value: { key }, invokedAt, completedAt, type: "ok", result: { values } })
    }
    if (used.has("register")) {
      const invokedAt = invokedNow()
      const { rows } = yield* db.query("SELECT k, v FROM registers")
      const completedAt = completedNow()
      const registers = new Map<number, string | null>()
      for (const op of history) if (op.workload === "register") registers.set((op.value as { key: number }).key, null)
      for (const row of rows) registers.set(Number(row[0]), text(row[1]))
      for (const [key, value] of registers) out.push({ workload: "register", client: finalClient, f: "read", value: { key }, invokedAt, completedAt, type: "ok", result: { value } })
    }
    return out
  })
}
