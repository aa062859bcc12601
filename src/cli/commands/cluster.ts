// `tqlite cluster`: the membership of a running cluster through the client's cluster requests
// (LEADER, CLUSTER, ADD, ASSIGN, REMOVE, TRANSFER, DESCRIBE), all sent to the leader except
// DESCRIBE, which asks the named server.
import type { Scope } from "effect"
import { Duration, Effect, Schedule } from "effect"
import type { DqliteClientService, ServerInfo, ServerRole } from "../../net/client/Client.ts"
import { make as makeClient } from "../../net/client/Client.ts"
import type { ClientError } from "../../net/client/errors.ts"
import type { CliIo } from "../common.ts"
import { clientErrorText, exitCodes, parseCommandLine, parseServers, parseTlsFlags, processIo, runProgram, tlsFlags, withTls } from "../common.ts"
import type { PeerTlsOptions } from "../../net/peers/sockets.ts"
import type { OutputFormat } from "../format.ts"
import { formatRows, isOutputFormat, jsonValue, outputFormats } from "../format.ts"
import type { Command } from "./command.ts"
import { usageError } from "./command.ts"
import { parseNodeIdText } from "../../node/nodeIdText.ts"

export type ClusterAction =
  | { readonly _tag: "List" }
  | { readonly _tag: "Add"; readonly id: bigint; readonly address: string }
  | { readonly _tag: "Remove"; readonly id: bigint }
  | { readonly _tag: "Assign"; readonly id: bigint; readonly role: ServerRole }
  | { readonly _tag: "Transfer"; readonly id: bigint | null }
  | { readonly _tag: "Describe"; readonly address: string }

const roles: ReadonlyArray<ServerRole> = ["voter", "standby", "spare"]

/** How long `transfer` waits to see another server lead. */
const transferSettleMs = 5_000

/** The members, marking the leader. */
export function formatServers(format: OutputFormat, servers: ReadonlyArray<ServerInfo>, leaderId: bigint | null): string {
  if (format === "json") {
    const objects = servers.map((s) => jsonValue({ id: s.id, address: s.address, role: s.role, leader: s.id === leaderId }))
    return `[${objects.join(",")}]\n`
  }
  const rows = servers.map((s) => [s.id, s.address, s.role, s.id === leaderId ? "yes" : "no"])
  return formatRows(format, ["id", "address", "role", "leader"], rows)
}

function parseId(text: string | undefined): bigint | string {
  return text === undefined ? "give a node id" : parseNodeIdText(text)
}

/** The action named by the positional arguments, or why they name none. */
export function parseClusterAction(args: ReadonlyArray<string>): ClusterAction | string {
  const [verb, ...rest] = args
  const arity = (n: number, usage: string) => rest.length === n ? null : `usage: cluster ${usage}`
  const withId = <A extends ClusterAction>(text: string | undefined, make: (id: bigint) => A): A | string => {
    const id = parseId(text)
    return typeof id === "string" ? id : make(id)
  }
  switch (verb) {
    case "list":
      return arity(0, "list") ?? { _tag: "List" }
    case "add":
      return arity(2, "add ID ADDRESS") ?? withId(rest[0], (id) => ({ _tag: "Add", id, address: rest[1]! }))
    case "remove":
      return arity(1, "remove ID") ?? withId(rest[0], (id) => ({ _tag: "Remove", id }))
    case "assign": {
      const usage = arity(2, "assign ID voter|standby|spare")
      if (usage !== null) return usage
      const role = roles.find((r) => r === rest[1])
      if (role === undefined) return `role '${rest[1]}' is not one of ${roles.join(", ")}`
      return withId(rest[0], (id) => ({ _tag: "Assign", id, role }))
    }
    case "transfer":
      if (rest.length > 1) return "usage: cluster transfer [ID]"
      return rest.length === 0 ? { _tag: "Transfer", id: null } : withId(rest[0], (id) => ({ _tag: "Transfer", id }))
    case "describe":
      return arity(1, "describe ADDRESS") ?? { _tag: "Describe", address: rest[0]! }
    default:
      return verb === undefined ? "give an action: list, add, remove, assign, transfer, describe" : `unknown action '${verb}'`
  }
}

/** Without an id the leader picks: TRANSFER with id 0 makes it choose its most caught-up voter
 * (it alone knows how far each one's log matches); we only check that there is another voter. */
const transfer = (client: DqliteClientService, id: bigint | null, io: CliIo) =>
  Effect.gen(function*() {
    const before = yield* client.leader
    if (id === null) {
      const servers = yield* client.cluster
      const candidates = servers.filter((s) => s.role === "voter" && s.id !== before?.id)
      if (candidates.length === 0) {
        io.err("Error: no other voter to hand leadership to\n")
        return exitCodes.failed
      }
    }
    yield* client.transfer(id ?? 0n)
    // The old leader answers once it stepped down; the new one may take an election round.
    const after = yield* client.leader.pipe(
      Effect.filterOrFail((leader) => leader !== null && leader.id !== before?.id, () => "not yet" as const),
      Effect.retry(Schedule.spaced(Duration.millis(50)).pipe(Schedule.upTo(Duration.millis(transferSettleMs)))),
      Effect.option
    )
    if (after._tag === "Some" && after.value !== null) io.out(`leader: ${after.value.id} at ${after.value.address}\n`)
    else io.out(`leadership left ${before?.address ?? "the old leader"}; no new leader confirmed within ${transferSettleMs} ms\n`)
    return exitCodes.ok
  })

const perform = (client: DqliteClientService, action: ClusterAction, format: OutputFormat, io: CliIo): Effect.Effect<number, ClientError> => {
  const done = (text: string) => Effect.sync(() => (io.out(text), exitCodes.ok))
  switch (action._tag) {
    case "List":
      return Effect.flatMap(Effect.zip(client.cluster, client.leader), ([servers, leader]) => done(formatServers(format, servers, leader?.id ?? null)))
    case "Add":
      return Effect.zipRight(client.add(action.id, action.address), done(`added node ${action.id} at ${action.address} as a spare\n`))
    case "Remove":
      return Effect.zipRight(client.remove(action.id), done(`removed node ${action.id}\n`))
    case "Assign":
      return Effect.zipRight(client.assign(action.id, action.role), done(`node ${action.id} is now a ${action.role}\n`))
    case "Transfer":
      return transfer(client, action.id, io)
    case "Describe":
      return Effect.flatMap(client.describe(action.address), (d) =>
        done(format === "json"
          ? `${jsonValue({ address: action.address, failureDomain: d.failureDomain, weight: d.weight })}\n`
          : `address: ${action.address}\nfailure domain: ${d.failureDomain}\nweight: ${d.weight}\n`))
  }
}

export const runCluster = (
  options: ClusterOptions,
  io: CliIo
): Effect.Effect<number, never, Scope.Scope> =>
  Effect.gen(function*() {
    // Cluster requests need no particular database; OPEN is sent all the same.
    const client = yield* makeClient({ servers: options.servers, database: "tqlite-control", tls: options.tls ?? null })
    return yield* perform(client, options.action, options.format, io).pipe(
      Effect.catchAll((error) => Effect.sync(() => (io.err(`Error: ${clientErrorText(error)}\n`), exitCodes.failed)))
    )
  })

export interface ClusterOptions {
  readonly servers: ReadonlyArray<string>
  readonly action: ClusterAction
  readonly format: OutputFormat
  readonly tls?: PeerTlsOptions
}

export function parseClusterArgs(args: ReadonlyArray<string>): ClusterOptions | string {
  const parsed = parseCommandLine(args, { servers: { type: "string", short: "s" }, format: { type: "string", short: "f" }, ...tlsFlags })
  if (typeof parsed === "string") return parsed
  const servers = parseServers(parsed.values.servers)
  if ("error" in servers) return servers.error
  const format = parsed.values.format ?? "table"
  if (!isOutputFormat(format)) return `--format must be one of ${outputFormats.join(", ")}`
  const tls = parseTlsFlags(parsed.values)
  if ("error" in tls) return tls.error
  const action = parseClusterAction(parsed.positionals)
  return typeof action === "string" ? action : { servers: servers.servers, action, format, ...withTls(tls.tls) }
}

export const cluster: Command = {
  name: "cluster",
  usage: `tqlite cluster --servers HOST:PORT[,...] [--format table|json|csv] [--tls-cert F --tls-key F --tls-ca F] ACTION
      list | add ID ADDRESS | remove ID | assign ID voter|standby|spare | transfer [ID] |
      describe ADDRESS. transfer without ID lets the leader pick its most caught-up voter.`,
  run: async (args) => {
    const options = parseClusterArgs(args)
    if (typeof options === "string") return usageError("cluster", options)
    await runProgram(runCluster(options, processIo))
  }
}
