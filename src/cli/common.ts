// What the client-side subcommands (shell, cluster, dump, restore) share: where output goes, the
// --servers list, how a client error reads, and how a command's program runs as a process.
import type { Scope } from "effect"
import { parseArgs } from "node:util"
import type { ParseArgsConfig } from "node:util"
import { Cause, Effect, Exit, Fiber } from "effect"
import { describeClientError } from "../net/client/errors.ts"
import type { PeerTlsOptions } from "../net/peers/sockets.ts"
import * as fs from "node:fs"

/** Where a command writes; the process's streams in `tqlite`, buffers in tests. */
export interface CliIo {
  readonly out: (text: string) => void
  readonly err: (text: string) => void
  /** Whether stderr is a terminal (progress redraws one line) or not (periodic lines). */
  readonly errIsTty: boolean
}

export const processIo: CliIo = {
  out: (text) => void process.stdout.write(text),
  err: (text) => void process.stderr.write(text),
  errIsTty: process.stderr.isTTY === true
}

/** Exit codes: 0 done, 1 the operation failed (SQL error, cluster refused, …), 2 bad usage,
 * 130 interrupted. */
export const exitCodes = { ok: 0, failed: 1, usage: 2, interrupted: 130 } as const

const serversMax = 64
const addressPattern = /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$/

/** The --servers list ("host:port,host:port"), or why it is not one. */
export function parseServers(text: string | undefined): { readonly servers: ReadonlyArray<string> } | { readonly error: string } {
  if (text === undefined) return { error: "--servers HOST:PORT[,HOST:PORT...] is required" }
  const servers = [...new Set(text.split(",").map((s) => s.trim()).filter((s) => s.length > 0))]
  if (servers.length === 0) return { error: "--servers names no server" }
  if (servers.length > serversMax) return { error: `--servers names more than ${serversMax} servers` }
  const bad = servers.find((s) => !addressPattern.test(s) || Number(s.slice(s.lastIndexOf(":") + 1)) > 65535)
  if (bad !== undefined) return { error: `--servers: '${bad}' is not HOST:PORT` }
  return { servers }
}

/** `--tls-cert/--tls-key/--tls-ca`: every client tool takes them, as `tqlite start` does. */
export const tlsFlags = {
  "tls-cert": { type: "string" },
  "tls-key": { type: "string" },
  "tls-ca": { type: "string" }
} as const

/** The TLS settings the three flags name (read from their files), none when no flag is given,
 * or why they are wrong. */
export function parseTlsFlags(values: { readonly "tls-cert"?: string | undefined; readonly "tls-key"?: string | undefined; readonly "tls-ca"?: string | undefined }): { readonly tls: PeerTlsOptions | null } | { readonly error: string } {
  const files = [values["tls-cert"], values["tls-key"], values["tls-ca"]] as const
  if (files.every((f) => f === undefined)) return { tls: null }
  if (files.some((f) => f === undefined)) return { error: "--tls-cert, --tls-key and --tls-ca go together" }
  const read = (file: string) => {
    try {
      return fs.readFileSync(file)
    } catch (error) {
      return `cannot read ${file}: ${error instanceof Error ? error.message : String(error)}`
    }
  }
  const [cert, key, ca] = files.map((f) => read(f!))
  for (const part of [cert, key, ca]) if (typeof part === "string") return { error: part }
  return { tls: { cert: cert as Buffer, key: key as Buffer, ca: ca as Buffer } }
}

/** Spreads `tls` into an options object only when TLS is on (so plain results stay as they were). */
export const withTls = (tls: PeerTlsOptions | null): { readonly tls?: PeerTlsOptions } => (tls === null ? {} : { tls })

/** A client error as one line for a person (the client's own wording). */
export const clientErrorText = describeClientError

/** Runs a command's program to its exit code. SIGINT/SIGTERM interrupt it (its scope closes:
 * connections close, temporary files go) and the process exits 130. */
export async function runProgram(program: Effect.Effect<number, never, Scope.Scope>, io: CliIo = processIo): Promise<void> {
  const fiber = Effect.runFork(Effect.scoped(program))
  const interrupt = () => void Effect.runFork(Fiber.interrupt(fiber))
  process.once("SIGINT", interrupt)
  process.once("SIGTERM", interrupt)
  try {
    const exit = await Effect.runPromise(Fiber.await(fiber))
    if (Exit.isSuccess(exit)) {
      process.exitCode = exit.value
    } else if (Cause.isInterruptedOnly(exit.cause)) {
      io.err("interrupted\n")
      process.exitCode = exitCodes.interrupted
    } else {
      io.err(`internal error: ${Cause.pretty(exit.cause)}\n`)
      process.exitCode = exitCodes.failed
    }
  } finally {
    process.off("SIGINT", interrupt)
    process.off("SIGTERM", interrupt)
  }
}

/** Byte counts for people: 1536 → "1.5 KiB". */
export function formatBytes(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"]
  let value = bytes
  let unit = 0
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024
    unit++
  }
  return unit === 0 ? `${bytes} B` : `${value.toFixed(1)} ${units[unit]}`
}

type FlagOptions = NonNullable<ParseArgsConfig["options"]>
export type ParsedCommandLine<O extends FlagOptions> = ReturnType<typeof parseArgs<{ args: Array<string>; allowPositionals: true; strict: true; options: O }>>

/** node:util parseArgs with positionals, its throw (unknown or malformed flag) as a message. */
export function parseCommandLine<O extends FlagOptions>(args: ReadonlyArray<string>, options: O): ParsedCommandLine<O> | string {
  try {
    return parseArgs({ args: [...args], allowPositionals: true, strict: true, options })
  } catch (error) {
    return error instanceof Error ? error.message : String(error)
  }
}
