// `tqlite dump`: a consistent backup of a live cluster's database as a plain SQLite file.
//
// DUMP goes to the leader (a follower's copy may be behind): tqlite's leader answers with the
// image of its committed read view after a ReadIndex round (src/sqlite/ReplicatedDatabases.ts
// `dump`), so the file holds every write acknowledged before the dump started and no
// uncommitted one. A dqlite server may send the main file plus a WAL; both are written beside
// the target, opened once with SQLite to fold the WAL in and switch the file to rollback-journal
// mode (a plain file that needs no -wal/-shm beside it), checked with PRAGMA quick_check, fsynced,
// and only then renamed over FILE: FILE is either the old one or the whole new dump.
//
// The client reads the DUMP answer as one message, so there is no byte progress to show; the
// size written is printed at the end. The answer is bounded by `dumpBytesMax`.
import { nodeBoundsDefault } from "../../limits.ts"
import Database from "better-sqlite3"
import type { Scope } from "effect"
import { Clock, Data, Duration, Effect } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import type { DqliteClientService, DumpedFile } from "../../net/client/Client.ts"
import { make as makeClient } from "../../net/client/Client.ts"
import type { ClientError } from "../../net/client/errors.ts"
import { NoLeader } from "../../net/client/errors.ts"
import type { CliIo } from "../common.ts"
import { clientErrorText, exitCodes, formatBytes, parseCommandLine, parseServers, parseTlsFlags, processIo, runProgram, tlsFlags, withTls } from "../common.ts"
import type { PeerTlsOptions } from "../../net/peers/sockets.ts"
import type { Command } from "./command.ts"
import { usageError } from "./command.ts"

/** The largest dump accepted (the client holds it in memory as one message): in the bounds
 * table, src/limits.ts, which checks a dqlite header can announce it. */
export const dumpBytesMax = nodeBoundsDefault.wire.dumpBytesMax
/** Leader look-ups when the server asked turns out not to lead any more. */
const leaderAttemptsMax = 5
const leaderRetryMs = 200
const dumpTimeoutMsDefault = 120_000

export class DumpFileError extends Data.TaggedError("DumpFileError")<{ readonly file: string; readonly detail: string; readonly cause?: unknown }> {}

export interface DumpOptions {
  readonly servers: ReadonlyArray<string>
  readonly database: string
  readonly file: string
  readonly timeoutMs?: number
  readonly tls?: PeerTlsOptions
}

export interface DumpOutcome {
  readonly leader: string
  readonly bytes: number
}

/** The database's files from the current leader, looking the leader up again (bounded) when
 * the one asked has just lost leadership. */
export const dumpFromLeader = (client: DqliteClientService, database: string): Effect.Effect<{ readonly leader: string; readonly files: ReadonlyArray<DumpedFile> }, ClientError> =>
  Effect.gen(function*() {
    for (let attempt = 1; ; attempt++) {
      const leader = yield* client.leader
      const outcome = leader === null
        ? null
        : yield* Effect.either(client.dump(leader.address, database))
      if (outcome !== null && outcome._tag === "Right") return { leader: leader!.address, files: outcome.right }
      const notLeader = outcome !== null && outcome.left._tag === "ServerFailure" && outcome.left.isNotLeader
      if (outcome !== null && !notLeader) return yield* Effect.fail(outcome.left)
      if (attempt >= leaderAttemptsMax) {
        return yield* Effect.fail(outcome?.left ?? new NoLeader({ detail: "no server names a leader" }))
      }
      yield* Effect.sleep(Duration.millis(leaderRetryMs * attempt))
    }
  })

const fileStep = <A>(file: string, detail: string, run: () => A) =>
  Effect.try({ try: run, catch: (cause) => new DumpFileError({ file, detail: `${detail}: ${cause instanceof Error ? cause.message : String(cause)}`, cause }) })

function writeDurably(file: string, data: Uint8Array): void {
  const fd = fs.openSync(file, "w", 0o644)
  try {
    fs.writeSync(fd, data)
    fs.fsyncSync(fd)
  } finally {
    fs.closeSync(fd)
  }
}

/** Writes the dumped files as one plain SQLite file at `file`, atomically. Its size in bytes. */
export const writeDumpFile = (file: string, database: string, files: ReadonlyArray<DumpedFile>): Effect.Effect<number, DumpFileError, Scope.Scope> =>
  Effect.gen(function*() {
    const main = files.find((f) => f.name === database)
    const wal = files.find((f) => f.name === `${database}-wal`)
    if (main === undefined || main.data.byteLength === 0) return yield* new DumpFileError({ file, detail: `the server sent no main file for ${database}` })
    const temporary = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.dump-tmp`)
    // Whatever happens, no temporary file stays behind (FILE itself is only ever renamed onto).
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        for (const suffix of ["", "-wal", "-shm", "-journal"]) fs.rmSync(`${temporary}${suffix}`, { force: true })
      })
    )
    yield* fileStep(temporary, "write", () => {
      writeDurably(temporary, main.data)
      if (wal !== undefined && wal.data.byteLength > 0) writeDurably(`${temporary}-wal`, wal.data)
    })
    yield* fileStep(temporary, "convert", () => {
      const db = new Database(temporary, { fileMustExist: true })
      try {
        // Folds a WAL in (if any) and makes the file a rollback-journal database.
        const mode = db.pragma("journal_mode=DELETE", { simple: true })
        if (mode !== "delete") throw new Error(`journal_mode is ${String(mode)}`)
        const check = db.pragma("quick_check", { simple: true })
        if (check !== "ok") throw new Error(`quick_check: ${String(check)}`)
      } finally {
        db.close()
      }
      const fd = fs.openSync(temporary, "r+")
      try {
        fs.fsyncSync(fd)
      } finally {
        fs.closeSync(fd)
      }
    })
    const bytes = yield* fileStep(temporary, "rename", () => {
      const size = fs.statSync(temporary).size
      fs.renameSync(temporary, file)
      const dir = fs.openSync(path.dirname(file), "r")
      try {
        fs.fsyncSync(dir)
      } finally {
        fs.closeSync(dir)
      }
      return size
    })
    return bytes
  })

export const runDump = (options: DumpOptions, io: CliIo): Effect.Effect<number, never, Scope.Scope> =>
  Effect.gen(function*() {
    const client = yield* makeClient({
      servers: options.servers,
      database: options.database,
      requestTimeoutMs: options.timeoutMs ?? dumpTimeoutMsDefault,
      messageBytesMax: dumpBytesMax,
      connectionsMax: 1,
      tls: options.tls ?? null
    })
    const started = yield* Clock.currentTimeMillis
    io.err(`dumping ${options.database} …\n`)
    const dumped = yield* Effect.either(dumpFromLeader(client, options.database))
    if (dumped._tag === "Left") {
      io.err(`Error: ${clientErrorText(dumped.left)}\n`)
      return exitCodes.failed
    }
    const received = dumped.right.files.reduce((sum, f) => sum + f.data.byteLength, 0)
    const written = yield* Effect.either(Effect.scoped(writeDumpFile(options.file, options.database, dumped.right.files)))
    if (written._tag === "Left") {
      io.err(`Error: ${written.left.file}: ${written.left.detail}\n`)
      return exitCodes.failed
    }
    const elapsedMs = (yield* Clock.currentTimeMillis) - started
    io.err(`dumped ${options.database} from ${dumped.right.leader}: received ${formatBytes(received)}, wrote ${written.right} bytes (${formatBytes(written.right)}) to ${options.file} in ${elapsedMs} ms\n`)
    return exitCodes.ok
  })

export function parseDumpArgs(args: ReadonlyArray<string>): DumpOptions | string {
  const parsed = parseCommandLine(args, { servers: { type: "string", short: "s" }, "timeout-ms": { type: "string" }, ...tlsFlags })
  if (typeof parsed === "string") return parsed
  const servers = parseServers(parsed.values.servers)
  if ("error" in servers) return servers.error
  if (parsed.positionals.length !== 2) return "give DATABASE and FILE"
  const timeoutMs = Number(parsed.values["timeout-ms"] ?? dumpTimeoutMsDefault)
  if (!Number.isSafeInteger(timeoutMs) || timeoutMs < 1) return "--timeout-ms must be a positive integer"
  const tls = parseTlsFlags(parsed.values)
  if ("error" in tls) return tls.error
  return { servers: servers.servers, database: parsed.positionals[0]!, file: path.resolve(parsed.positionals[1]!), timeoutMs, ...withTls(tls.tls) }
}

export const dump: Command = {
  name: "dump",
  usage: `tqlite dump --servers HOST:PORT[,...] [--timeout-ms MS] [--tls-cert F --tls-key F --tls-ca F] DATABASE FILE
      a consistent backup from the leader, written atomically to FILE as a plain SQLite file`,
  run: async (args) => {
    const options = parseDumpArgs(args)
    if (typeof options === "string") return usageError("dump", options)
    await runProgram(runDump(options, processIo))
  }
}
