// `tqlite repair`: rebuilds a stopped node whose log or snapshot is damaged (src/node/repair.ts):
// the leader makes it a spare (committed), its damaged state moves into DIR/damaged-<time>/, and
// started again it refetches everything from the cluster and is promoted back.
import type { Scope } from "effect"
import { Effect } from "effect"
import * as path from "node:path"
import type { PeerTlsOptions } from "../../net/peers/sockets.ts"
import type { RepairResult } from "../../node/repair.ts"
import { repairNode, repairTimeoutMsDefault } from "../../node/repair.ts"
import { Disk } from "../../storage/Disk.ts"
import type { CliIo } from "../common.ts"
import { exitCodes, parseCommandLine, parseServers, parseTlsFlags, processIo, runProgram, tlsFlags } from "../common.ts"
import type { Command } from "./command.ts"
import { usageError } from "./command.ts"

export interface RepairArgs {
  readonly dataDir: string
  readonly servers: ReadonlyArray<string>
  readonly tls: PeerTlsOptions | null
  readonly timeoutMs: number
}

export function parseRepairArgs(args: ReadonlyArray<string>): RepairArgs | string {
  const parsed = parseCommandLine(args, {
    "data-dir": { type: "string" },
    servers: { type: "string", short: "s" },
    "timeout-ms": { type: "string" },
    ...tlsFlags
  })
  if (typeof parsed === "string") return parsed
  const { values, positionals } = parsed
  if (positionals.length > 0) return `unexpected argument '${positionals[0]}'`
  if (values["data-dir"] === undefined) return "--data-dir is required"
  let servers: ReadonlyArray<string> = []
  if (values.servers !== undefined) {
    const checked = parseServers(values.servers)
    if ("error" in checked) return checked.error
    servers = checked.servers
  }
  const tls = parseTlsFlags(values)
  if ("error" in tls) return tls.error
  const timeoutMs = Number(values["timeout-ms"] ?? repairTimeoutMsDefault)
  if (!Number.isSafeInteger(timeoutMs) || timeoutMs < 100 || timeoutMs > 3_600_000) return "--timeout-ms must be an integer from 100 to 3600000"
  return { dataDir: path.resolve(values["data-dir"]), servers, tls: tls.tls, timeoutMs }
}

/** The one line saying what was done and what comes next. */
export function repairSummary(result: RepairResult): string {
  const how = result.spare._tag === "Demoted" ? `made a spare (was a ${result.spare.from})` : result.spare._tag === "Added" ? "added back as a spare" : "confirmed a spare"
  const moved = result.moved.length === 0 ? "nothing to move" : `moved ${result.moved.join(", ")} to ${result.damagedDir}`
  return `node ${result.identity.nodeId} ${how}; ${moved}. Next: tqlite start --address ${result.identity.address} ` +
    `--data-dir ${path.dirname(result.damagedDir)} (with your usual options): it rejoins as a spare with an empty log, ` +
    `refetches the data from the leader, and the leader's role manager promotes it again\n`
}

export const runRepair = (options: RepairArgs, io: CliIo): Effect.Effect<number, never, Scope.Scope> =>
  repairNode({
    dataDir: options.dataDir,
    servers: options.servers,
    tls: options.tls,
    timeoutMs: options.timeoutMs,
    log: (line) => Effect.sync(() => io.err(`${line}\n`))
  }).pipe(
    Effect.map((result) => {
      io.out(repairSummary(result))
      return exitCodes.ok
    }),
    Effect.catchAll((error) => Effect.sync(() => (io.err(`tqlite repair: ${error.message}\n`), exitCodes.failed))),
    Effect.provide(Disk.layerNode)
  )

export const repair: Command = {
  name: "repair",
  usage: `tqlite repair --data-dir DIR [--servers ADDR,...] [--tls-cert FILE --tls-key FILE --tls-ca FILE]
               [--timeout-ms 30000]
      rebuilds a stopped node whose log or snapshot is damaged: the leader makes it a spare (it
      must not vote with lost data), its log, snapshots and SQLite files move to
      DIR/damaged-<UTC time>/ (nothing is deleted), and started again it refetches the data from
      the cluster and is promoted back. --servers defaults to the members its intact data names.`,
  run: async (args) => {
    const options = parseRepairArgs(args)
    if (typeof options === "string") return usageError("repair", options)
    await runProgram(runRepair(options, processIo))
  }
}
