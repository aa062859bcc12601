// `tqlite shell`: a SQL shell on a tqlite (or dqlite) cluster through the Effect client.
// Interactive on a terminal (readline prompt, history in ~/.tqlite_history), a script when stdin
// is not a terminal, or one command with -c. Input accumulates until a statement is complete (a
// `;` outside strings, comments and trigger bodies, split as the server splits it); each
// statement then runs on the leader and prints its rows, or what it changed. An error prints its
// SQLite code and message on stderr; the interactive shell keeps going, -c and scripts end with
// exit code 1.
//
// The client holds one connection (connectionsMax 1), so a BEGIN typed at the prompt and the
// statements after it share one server session. A connection lost inside such a transaction
// loses the transaction (the server rolls it back); the next statement runs in autocommit.
import type { Scope } from "effect"
import { Effect, Exit, Fiber } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as readline from "node:readline"
import type { DqliteClientService } from "../../net/client/Client.ts"
import { make as makeClient } from "../../net/client/Client.ts"
import { classifyStatement, isComplete, isRelease, returnsRows, splitStatements } from "../../sqlite/statements.ts"
import type { CliIo } from "../common.ts"
import { clientErrorText, exitCodes, parseCommandLine, parseServers, parseTlsFlags, processIo, runProgram, tlsFlags, withTls } from "../common.ts"
import type { PeerTlsOptions } from "../../net/peers/sockets.ts"
import type { ReadConsistency } from "../../actors/RaftActor.ts"
import { parseReadLevelFlag } from "../../net/protocol/readLevel.ts"
import type { OutputFormat } from "../format.ts"
import { formatChange, formatRows, isOutputFormat, outputFormats } from "../format.ts"
import type { Command } from "./command.ts"
import { usageError } from "./command.ts"
import { formatServers } from "./cluster.ts"

export interface ShellOptions {
  readonly servers: ReadonlyArray<string>
  readonly database: string
  readonly format: OutputFormat
  readonly tls?: PeerTlsOptions
  /** Reads (single read-only statements outside a transaction) at this level from the first of
   * `servers`, from its own copy when it does not lead; absent: every statement on the leader. */
  readonly consistency?: ReadConsistency
}

/** History lines kept in the file and in memory. */
export const historyLinesMax = 1000
/** A statement being typed may grow to this many characters; past it the input is dropped. */
const pendingCharsMax = 16 * 1024 * 1024

export const historyFilePath = () => process.env["TQLITE_HISTORY"] ?? path.join(os.homedir(), ".tqlite_history")

/** Transaction control answers with no change count worth printing (sqlite3 prints nothing). */
function isTransactionControl(sql: string): boolean {
  const kind = classifyStatement(sql)._tag
  return kind === "Begin" || kind === "Commit" || kind === "Rollback" || kind === "Savepoint" || isRelease(sql)
}

export { isComplete, returnsRows }

const helpText = `.cluster            the cluster's members (id, address, role, leader)
.format [FORMAT]     show or set the output format: table, json or csv
.help                this text
.leader              the leader's address
.quit, .exit         leave the shell
.schema [TABLE]      the CREATE statements (of one table and its indexes/triggers)
.tables              the tables and views
SQL ends with ';' and may span lines. Ctrl-C clears the statement being typed, or stops the one
running (its connection is closed: the server stops a streaming result at its next batch); Ctrl-D leaves.
`

/** A shell session over one client: statements and dot commands, each printing to `io`. */
export class ShellSession {
  format: OutputFormat
  private readonly database: string

  constructor(
    private readonly client: DqliteClientService,
    private readonly io: CliIo,
    options: ShellOptions
  ) {
    this.format = options.format
    this.database = options.database
  }

  /** Runs the statements of `text` in order, stopping at the first error. False on an error. */
  runSql(text: string): Effect.Effect<boolean> {
    const statements = splitStatements(text)
    return Effect.gen(this, function*() {
      for (const statement of statements) {
        if (!(yield* this.runStatement(statement.text))) return false
      }
      return true
    })
  }

  runStatement(sql: string): Effect.Effect<boolean> {
    const run = returnsRows(sql)
      ? Effect.map(this.client.query(sql), (result) => formatRows(this.format, result.columns, result.rows))
      : Effect.map(this.client.exec(sql), (result) => isTransactionControl(sql) ? "" : formatChange(this.format, result.rowsAffected, result.lastInsertId))
    return Effect.match(run, {
      onFailure: (error) => {
        this.io.err(`Error: ${clientErrorText(error)}\n`)
        return false
      },
      onSuccess: (text) => {
        this.io.out(text)
        return true
      }
    })
  }

  /** A dot command: "quit" to leave, else whether it worked. */
  runDot(line: string): Effect.Effect<boolean | "quit"> {
    const [name = "", ...args] = line.trim().split(/\s+/)
    const fail = (why: string) => Effect.sync(() => (this.io.err(`Error: ${why}\n`), false))
    const printed = <E>(effect: Effect.Effect<string, E>, text: (e: E) => string) =>
      Effect.match(effect, {
        onFailure: (error) => (this.io.err(`Error: ${text(error)}\n`), false),
        onSuccess: (out) => (this.io.out(out), true)
      })
    switch (name) {
      case ".quit":
      case ".exit":
        return Effect.succeed("quit")
      case ".help":
        return Effect.sync(() => (this.io.out(helpText), true))
      case ".leader":
        return printed(Effect.map(this.client.leader, (leader) => `${leader?.address ?? "(no leader)"}\n`), clientErrorText)
      case ".cluster":
        return printed(
          Effect.map(Effect.zip(this.client.cluster, this.client.leader), ([servers, leader]) => formatServers(this.format, servers, leader?.id ?? null)),
          clientErrorText
        )
      case ".format": {
        const wanted = args[0]
        if (wanted === undefined) return Effect.sync(() => (this.io.out(`${this.format}\n`), true))
        if (!isOutputFormat(wanted)) return fail(`unknown format '${wanted}' (${outputFormats.join(", ")})`)
        return Effect.sync(() => ((this.format = wanted), true))
      }
      case ".tables":
        return printed(
          Effect.map(
            this.client.query("SELECT name FROM sqlite_schema WHERE type IN ('table', 'view') AND name NOT LIKE 'sqlite_%' ORDER BY name"),
            (result) => result.rows.map((row) => `${String(row[0])}\n`).join("")
          ),
          clientErrorText
        )
      case ".schema": {
        const table = args[0]
        const sql = table === undefined
          ? "SELECT sql FROM sqlite_schema WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%' ORDER BY rowid"
          : "SELECT sql FROM sqlite_schema WHERE sql IS NOT NULL AND tbl_name = ? ORDER BY rowid"
        return printed(
          Effect.map(this.client.query(sql, table === undefined ? [] : [table]), (result) => result.rows.map((row) => `${String(row[0])};\n`).join("")),
          clientErrorText
        )
      }
      default:
        return fail(`unknown command '${name}' (.help lists them)`)
    }
  }

  /** One -c command: a dot command or SQL. Its exit code. */
  runCommand(text: string): Effect.Effect<number> {
    const ok = text.trimStart().startsWith(".") ? Effect.map(this.runDot(text), (r) => r !== false) : this.runSql(text)
    return Effect.map(ok, (good) => (good ? exitCodes.ok : exitCodes.failed))
  }

  /** Reads statements and dot commands from `input` until it ends or .quit. With `terminal` a
   * prompt and history; otherwise (a script) the exit code is 1 if anything failed. */
  runLines(input: NodeJS.ReadableStream, terminal: boolean, history: HistoryFile | null, output: NodeJS.WritableStream = process.stdout): Effect.Effect<number, never, Scope.Scope> {
    return Effect.gen(this, function*() {
      const rl = yield* Effect.acquireRelease(
        Effect.sync(() =>
          readline.createInterface({
            input,
            ...(terminal ? { output, terminal: true, history: history?.load() ?? [], historySize: historyLinesMax, removeHistoryDuplicates: true } : { terminal: false })
          })
        ),
        (rl) => Effect.sync(() => {
          if (terminal && history !== null) history.save((rl as unknown as { history: ReadonlyArray<string> }).history)
          rl.close()
        })
      )
      const primary = `${this.database}> `
      const continuation = `${" ".repeat(Math.max(0, primary.length - 5))}...> `
      let pending = ""
      let failures = 0
      const prompt = () => {
        if (!terminal) return
        rl.setPrompt(pending === "" ? primary : continuation)
        rl.prompt()
      }
      // The statement running now, so Ctrl-C can stop it.
      let running: Fiber.RuntimeFiber<boolean> | null = null
      rl.on("SIGINT", () => {
        if (running !== null) {
          // Interrupting closes its connection; the next statement gets a fresh one at once.
          this.io.err("^C: statement stopped\n")
          Effect.runFork(Fiber.interrupt(running))
          return
        }
        // Clear what is typed on the current line too (readline keeps it otherwise, and Enter
        // would run the statement just cancelled): end of line, then delete to its start.
        rl.write(null, { ctrl: true, name: "e" })
        rl.write(null, { ctrl: true, name: "u" })
        if (pending === "") this.io.out("\n(.quit or Ctrl-D to leave)\n")
        else this.io.out("\n")
        pending = ""
        prompt()
      })
      let closed = false
      rl.on("close", () => void (closed = true))
      const lines = rl[Symbol.asyncIterator]()
      for (;;) {
        prompt()
        const next = yield* Effect.promise(() => lines.next())
        if (next.done === true) break
        const line = next.value
        if (pending === "" && line.trimStart().startsWith(".")) {
          const result = yield* this.runDot(line)
          if (result === "quit") break
          if (result === false) failures++
          continue
        }
        pending = pending === "" ? line : `${pending}\n${line}`
        if (pending.length > pendingCharsMax) {
          this.io.err(`Error: statement longer than ${pendingCharsMax} characters; dropped\n`)
          pending = ""
          failures++
          continue
        }
        if (!isComplete(pending)) continue
        const text = pending
        pending = ""
        const fiber = yield* Effect.fork(this.runSql(text))
        running = fiber
        const exit = yield* Fiber.await(fiber)
        running = null
        if (Exit.isFailure(exit) || !exit.value) failures++
      }
      // Input ended inside a statement: run what was typed, as sqlite3 does.
      if (pending.trim().length > 0 && !(yield* this.runSql(pending))) failures++
      if (terminal && !closed) this.io.out("\n")
      return terminal || failures === 0 ? exitCodes.ok : exitCodes.failed
    })
  }

}

/** ~/.tqlite_history: one line per entry, oldest first, at most historyLinesMax. */
export class HistoryFile {
  constructor(readonly file: string) {}

  /** Newest first, as readline wants it; nothing when the file is missing or unreadable. */
  load(): Array<string> {
    try {
      const lines = fs.readFileSync(this.file, "utf8").split("\n").filter((l) => l.length > 0)
      return lines.slice(-historyLinesMax).reverse()
    } catch {
      return []
    }
  }

  /** `newestFirst` as readline keeps it; written through a temporary file, readable by the user only. */
  save(newestFirst: ReadonlyArray<string>): void {
    const lines = newestFirst.slice(0, historyLinesMax).reverse()
    const temporary = `${this.file}.${process.pid}.tmp`
    try {
      fs.writeFileSync(temporary, lines.length === 0 ? "" : `${lines.join("\n")}\n`, { mode: 0o600 })
      fs.renameSync(temporary, this.file)
    } catch {
      fs.rmSync(temporary, { force: true })
    }
  }
}

/** The shell as a program: -c runs one command, else lines from `input`. Its exit code. */
export const runShell = (
  options: ShellOptions & { readonly command: string | null },
  io: CliIo,
  input: NodeJS.ReadableStream = process.stdin,
  terminal = false
): Effect.Effect<number, never, Scope.Scope> =>
  Effect.gen(function*() {
    const client = yield* makeClient({
      servers: options.servers,
      database: options.database,
      connectionsMax: 1,
      tls: options.tls ?? null,
      ...(options.consistency !== undefined ? { readConsistency: options.consistency } : {})
    })
    const session = new ShellSession(client, io, options)
    if (options.command !== null) return yield* session.runCommand(options.command)
    return yield* session.runLines(input, terminal, terminal ? new HistoryFile(historyFilePath()) : null)
  })

/** The shell's options from its arguments, or what is wrong with them. */
export function parseShellArgs(args: ReadonlyArray<string>): (ShellOptions & { readonly command: string | null }) | string {
  const parsed = parseCommandLine(args, { servers: { type: "string", short: "s" }, format: { type: "string", short: "f" }, command: { type: "string", short: "c" }, consistency: { type: "string" }, ...tlsFlags })
  if (typeof parsed === "string") return parsed
  const { values, positionals } = parsed
  const servers = parseServers(values.servers)
  if ("error" in servers) return servers.error
  const format = values.format ?? "table"
  if (!isOutputFormat(format)) return `--format must be one of ${outputFormats.join(", ")}`
  if (positionals.length !== 1) return "give one DATABASE name"
  const tls = parseTlsFlags(values)
  if ("error" in tls) return tls.error
  const consistency = values.consistency === undefined ? undefined : parseReadLevelFlag(values.consistency)
  if (typeof consistency === "string") return `--consistency: ${consistency} (linearizable, local, bounded:MS or session:INDEX)`
  return { servers: servers.servers, database: positionals[0]!, format, command: values.command ?? null, ...withTls(tls.tls), ...(consistency !== undefined ? { consistency } : {}) }
}

export const shell: Command = {
  name: "shell",
  usage: `tqlite shell --servers HOST:PORT[,...] [--format table|json|csv] [-c SQL] [--consistency LEVEL] [--tls-cert F --tls-key F --tls-ca F] DATABASE
      a SQL shell on the cluster's leader; -c runs one statement (or dot command) and exits
      (1 on an error). --consistency linearizable|local|bounded:MS|session:INDEX reads (single
      read-only statements) from the first server's own copy at that level, even when it does
      not lead (tqlite only; without it every statement runs on the leader).
      History in ~/.tqlite_history (TQLITE_HISTORY overrides).`,
  run: async (args) => {
    const options = parseShellArgs(args)
    if (typeof options === "string") return usageError("shell", options)
    const terminal = options.command === null && process.stdin.isTTY === true
    await runProgram(runShell(options, processIo, process.stdin, terminal))
    // stdin may keep the event loop alive after an interactive session.
    if (terminal) process.stdin.pause()
  }
}
