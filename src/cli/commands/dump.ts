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
// The answer is streamed (Client.dumpTo): each file goes to its temporary as its bytes arrive, a
// piece at a time, and the socket is read only once the piece before is written, so the client
// holds about one socket read of the dump whatever its size: no bound of ours on a dump's size,
// only what a FILES header can announce (8 × (2^32 − 1) bytes, ~32 GiB) and the disk. Byte
// progress against the size the answer announces shows on stderr (progress.ts).
import Database from "better-sqlite3"
import { assert } from "../../assert.ts"
import type { Scope } from "effect"
import { Clock, Data, Duration, Effect } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import type { DqliteClientService } from "../../net/client/Client.ts"
import { dumpIdleTimeoutMsDefault, make as makeClient } from "../../net/client/Client.ts"
import type { ClientError } from "../../net/client/errors.ts"
import { NoLeader, ServerFailure } from "../../net/client/errors.ts"
import type { FilesPiece } from "../../net/protocol/filesStream.ts"
import type { CliIo } from "../common.ts"
import { clientErrorText, exitCodes, formatBytes, parseCommandLine, parseServers, parseTlsFlags, processIo, runProgram, tlsFlags, withTls } from "../common.ts"
import type { PeerTlsOptions } from "../../net/peers/sockets.ts"
import { Progress } from "../progress.ts"
import type { Command } from "./command.ts"
import { usageError } from "./command.ts"

/** Leader look-ups when the server asked turns out not to lead any more. */
const leaderAttemptsMax = 5
const leaderRetryMs = 200
/** The whole dump: the leader's own bound (src/net/gateway/limits.ts `dumpTimeoutMs`, 10 min),
 * past which it closes the connection anyway. A stalled dump fails sooner, at the idle timeout. */
const dumpTimeoutMsDefault = 600_000

export class DumpFileError extends Data.TaggedError("DumpFileError")<{ readonly file: string; readonly detail: string; readonly cause?: unknown }> {}

export interface DumpOptions {
  readonly servers: ReadonlyArray<string>
  readonly database: string
  readonly file: string
  readonly timeoutMs?: number
  /** The longest wait for the answer's next bytes (default: the client's 30 s). */
  readonly idleTimeoutMs?: number
  readonly tls?: PeerTlsOptions
}

/** Streams the database's files from the current leader to `sink`, looking the leader up again
 * (bounded) when the one asked has just lost leadership: its FAILURE answer comes before any
 * piece, so the sink has seen nothing of the failed attempt. The leader's address. */
export const dumpFromLeader = <E>(
  client: DqliteClientService,
  database: string,
  sink: (piece: FilesPiece) => Effect.Effect<void, E>,
  options: { readonly timeoutMs: number; readonly idleTimeoutMs: number }
): Effect.Effect<string, ClientError | E> =>
  Effect.gen(function*() {
    for (let attempt = 1; ; attempt++) {
      const leader = yield* client.leader
      const outcome = leader === null
        ? null
        : yield* Effect.either(client.dumpTo(leader.address, database, sink, options))
      if (outcome !== null && outcome._tag === "Right") return leader!.address
      const error = outcome?.left
      const notLeader = error instanceof ServerFailure && error.isNotLeader
      if (error !== undefined && !notLeader) return yield* Effect.fail(error)
      if (attempt >= leaderAttemptsMax) {
        return yield* Effect.fail(error ?? new NoLeader({ detail: "no server names a leader" }))
      }
      yield* Effect.sleep(Duration.millis(leaderRetryMs * attempt))
    }
  })

const fileStep = <A>(file: string, detail: string, run: () => A) =>
  Effect.try({ try: run, catch: (cause) => new DumpFileError({ file, detail: `${detail}: ${cause instanceof Error ? cause.message : String(cause)}`, cause }) })

/** Writes all of `bytes` at the file's current end. */
function writeAll(fd: number, bytes: Uint8Array): void {
  let written = 0
  while (written < bytes.byteLength) written += fs.writeSync(fd, bytes, written, bytes.byteLength - written)
}

/** The temporaries of a dump into `file`: the main file, and its WAL if the server sends one. */
export function dumpTemporary(file: string): string {
  return path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.dump-tmp`)
}

/** Receives a dump's files as they arrive: the main file into `temporary`, its WAL into
 * `temporary-wal` (other files are read and dropped), each fsynced once whole. */
export class DumpReceiver {
  /** Bytes received per file written, by name. */
  readonly received = new Map<string, number>()
  private fd: number | null = null
  /** The body's bytes, and those counted to `onBytes` so far (file bytes; the rest at the end). */
  private bodyBytes = 0
  private countedBytes = 0
  private current: { readonly name: string; readonly sizeBytes: number; written: number } | null = null

  constructor(
    readonly temporary: string,
    private readonly database: string,
    private readonly onBytes: (bytes: number, bodyBytes: number) => void = () => {}
  ) {}

  readonly sink = (piece: FilesPiece): Effect.Effect<void, DumpFileError> =>
    fileStep(this.temporary, "write", () => {
      switch (piece._tag) {
        case "Files":
          this.closeCurrent()
          this.received.clear()
          this.bodyBytes = piece.bodyBytes
          this.countedBytes = 0
          this.onBytes(0, piece.bodyBytes)
          return
        case "File": {
          this.finishCurrent()
          const target = piece.name === this.database ? this.temporary : piece.name === `${this.database}-wal` ? `${this.temporary}-wal` : null
          if (this.received.has(piece.name)) throw new Error(`the server sent ${piece.name} twice`)
          this.received.set(piece.name, piece.sizeBytes)
          this.current = { name: piece.name, sizeBytes: piece.sizeBytes, written: 0 }
          if (target !== null) this.fd = fs.openSync(target, "w", 0o644)
          return
        }
        case "Data": {
          if (this.fd !== null) writeAll(this.fd, piece.bytes)
          this.current!.written += piece.bytes.byteLength
          this.countedBytes += piece.bytes.byteLength
          this.onBytes(piece.bytes.byteLength, 0)
          return
        }
        case "End":
          this.finishCurrent()
          // The names and sizes: the progress ends at the body's whole size.
          this.onBytes(this.bodyBytes - this.countedBytes, 0)
          return
      }
    })

  /** Closes what is open and removes every temporary (on any exit; FILE is only renamed onto). */
  readonly cleanUp: Effect.Effect<void> = Effect.sync(() => {
    this.closeCurrent()
    for (const suffix of ["", "-wal", "-shm", "-journal"]) fs.rmSync(`${this.temporary}${suffix}`, { force: true })
  })

  private finishCurrent(): void {
    const current = this.current
    // The reader hands out exactly the bytes each file announced before the next one begins.
    assert(current === null || current.written === current.sizeBytes, "a file ends with all its bytes")
    if (this.fd !== null) fs.fsyncSync(this.fd)
    this.closeCurrent()
  }

  private closeCurrent(): void {
    const fd = this.fd
    this.fd = null
    this.current = null
    if (fd !== null) fs.closeSync(fd)
  }
}

/** Makes the received temporaries one plain SQLite file at `file`, atomically: the WAL folded in,
 * rollback-journal mode, quick_check, fsync, rename, fsync of the directory. Its size in bytes. */
export const finishDumpFile = (file: string, database: string, receiver: DumpReceiver): Effect.Effect<number, DumpFileError> =>
  Effect.gen(function*() {
    const temporary = receiver.temporary
    const mainBytes = receiver.received.get(database) ?? 0
    if (mainBytes === 0) return yield* new DumpFileError({ file, detail: `the server sent no main file for ${database}` })
    if ((receiver.received.get(`${database}-wal`) ?? 0) === 0) fs.rmSync(`${temporary}-wal`, { force: true })
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
    return yield* fileStep(temporary, "rename", () => {
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
  })

export const runDump = (options: DumpOptions, io: CliIo): Effect.Effect<number, never, Scope.Scope> =>
  Effect.gen(function*() {
    // The client's own bounds serve the leader look-ups; the dump has its own (below). A FAILURE
    // answer is the only message read whole.
    const client = yield* makeClient({ servers: options.servers, database: options.database, connectionsMax: 1, tls: options.tls ?? null })
    const clock = yield* Effect.clock
    const started = clock.unsafeCurrentTimeMillis()
    io.err(`dumping ${options.database} …\n`)
    const progress = new Progress(io, `dump ${options.database}`, 0, "bytes")
    const receiver = new DumpReceiver(dumpTemporary(options.file), options.database, (bytes, bodyBytes) => {
      if (bodyBytes > 0) progress.setTotal(bodyBytes)
      progress.advance(0, bytes, clock.unsafeCurrentTimeMillis())
    })
    const outcome = yield* Effect.either(Effect.acquireUseRelease(
      Effect.succeed(receiver),
      (receiver) =>
        Effect.gen(function*() {
          const leader = yield* dumpFromLeader(client, options.database, receiver.sink, {
            timeoutMs: options.timeoutMs ?? dumpTimeoutMsDefault,
            idleTimeoutMs: options.idleTimeoutMs ?? dumpIdleTimeoutMsDefault
          })
          const received = progress.finish().bytes
          const written = yield* finishDumpFile(options.file, options.database, receiver)
          return { leader, received, written }
        }),
      (receiver) => receiver.cleanUp
    ))
    if (outcome._tag === "Left") {
      progress.abandon()
      const error = outcome.left
      io.err(error._tag === "DumpFileError" ? `Error: ${error.file}: ${error.detail}\n` : `Error: ${clientErrorText(error)}\n`)
      return exitCodes.failed
    }
    const { leader, received, written } = outcome.right
    const elapsedMs = clock.unsafeCurrentTimeMillis() - started
    io.err(`dumped ${options.database} from ${leader}: received ${formatBytes(received)}, wrote ${written} bytes (${formatBytes(written)}) to ${options.file} in ${elapsedMs} ms\n`)
    return exitCodes.ok
  })

export function parseDumpArgs(args: ReadonlyArray<string>): DumpOptions | string {
  const parsed = parseCommandLine(args, { servers: { type: "string", short: "s" }, "timeout-ms": { type: "string" }, "idle-timeout-ms": { type: "string" }, ...tlsFlags })
  if (typeof parsed === "string") return parsed
  const servers = parseServers(parsed.values.servers)
  if ("error" in servers) return servers.error
  if (parsed.positionals.length !== 2) return "give DATABASE and FILE"
  const timeoutMs = Number(parsed.values["timeout-ms"] ?? dumpTimeoutMsDefault)
  if (!Number.isSafeInteger(timeoutMs) || timeoutMs < 1) return "--timeout-ms must be a positive integer"
  const idleTimeoutMs = Number(parsed.values["idle-timeout-ms"] ?? dumpIdleTimeoutMsDefault)
  if (!Number.isSafeInteger(idleTimeoutMs) || idleTimeoutMs < 1) return "--idle-timeout-ms must be a positive integer"
  const tls = parseTlsFlags(parsed.values)
  if ("error" in tls) return tls.error
  return { servers: servers.servers, database: parsed.positionals[0]!, file: path.resolve(parsed.positionals[1]!), timeoutMs, idleTimeoutMs, ...withTls(tls.tls) }
}

export const dump: Command = {
  name: "dump",
  usage: `tqlite dump --servers HOST:PORT[,...] [--timeout-ms MS] [--idle-timeout-ms MS] [--tls-cert F --tls-key F --tls-ca F] DATABASE FILE
      a consistent backup from the leader, written atomically to FILE as a plain SQLite file`,
  run: async (args) => {
    const options = parseDumpArgs(args)
    if (typeof options === "string") return usageError("dump", options)
    await runProgram(runDump(options, processIo))
  }
}
