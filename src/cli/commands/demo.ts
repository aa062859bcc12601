// `tqlite demo`: a real local three-node cluster in one process — three SqlNodes (SQLite, Raft,
// the dqlite wire protocol) on 127.0.0.1, consecutive ports from --base-port — that prints how to
// connect and then who leads, whenever that or the roles change. Ctrl-C shuts it down gracefully;
// run it again and the nodes come back from their data directories.
import { Duration, Effect, Schedule } from "effect"
import * as path from "node:path"
import { parseArgs } from "node:util"
import type { SqlNode } from "../../node/SqlNode.ts"
import * as SqlNodeModule from "../../node/SqlNode.ts"
import { Disk } from "../../storage/Disk.ts"
import { reportFailure } from "../failureText.ts"
import type { Command } from "./command.ts"
import { usageError, version } from "./command.ts"
import { runUntilSignal } from "./signals.ts"

export interface DemoOptions {
  readonly dataDir: string
  readonly basePort: number
  readonly nodes: number
}

/** One line saying who leads and every member's role, as the first live node sees it. */
const clusterLine = (nodes: ReadonlyArray<SqlNode>) =>
  Effect.gen(function*() {
    for (const n of nodes) {
      const status = yield* n.node.raft.status
      const leaderId = status.role === "leader" ? status.id : status.leader
      if (leaderId === null) continue
      const leader = status.membership.members.find((m) => m.id === leaderId)
      const roles = status.membership.members.map((m) => `${m.address} ${m.role}`).join(", ")
      return `leader ${leader?.address ?? leaderId} (term ${status.term}); members: ${roles}`
    }
    return "no leader yet"
  })

export const runDemo = (options: DemoOptions) =>
  Effect.gen(function*() {
    const addresses = Array.from({ length: options.nodes }, (_, i) => `127.0.0.1:${options.basePort + i}`)
    const nodes: SqlNode[] = []
    for (const [i, address] of addresses.entries()) {
      // The first node founds the cluster; the others join it (ignored once they are members).
      const join = i === 0 ? [] : [addresses[0]!]
      nodes.push(yield* SqlNodeModule.start({ dataDir: path.join(options.dataDir, `node-${i + 1}`), address, join }))
    }
    const servers = addresses.join(",")
    process.stdout.write(
      `tqlite ${version} demo: ${options.nodes} nodes on ${servers}, data in ${options.dataDir}\n` +
        `  connect:  dqlite -s ${servers} mydb\n` +
        `            tqlite shell --servers ${servers}\n` +
        `  Ctrl-C stops the cluster gracefully (twice: at once)\n`
    )
    let last = ""
    const report = Effect.gen(function*() {
      const line = yield* clusterLine(nodes)
      if (line === last) return
      last = line
      process.stdout.write(`${new Date().toISOString().slice(11, 19)} ${line}\n`)
    })
    // The first node whose actor gives up stops the demo (exit 1, one line). Each racer succeeds
    // with its node's failure: `raceAll` alone waits for a success and would ignore one failed node.
    const anyFailed = Effect.raceAll(nodes.map((n) => Effect.flip(n.node.raft.failed))).pipe(Effect.flatMap(Effect.fail))
    yield* Effect.raceFirst(report.pipe(Effect.repeat(Schedule.spaced(Duration.millis(500)))), anyFailed)
  })

export const demo: Command = {
  name: "demo",
  usage: `tqlite demo [--base-port PORT] [--data-dir DIR] [--nodes N]
      a local cluster of N real nodes (default 3) in one process on 127.0.0.1:PORT.. (default
      9001), printing who leads; connect with dqlite or tqlite shell. Ctrl-C stops it gracefully`,
  run: (args) => {
    const { values } = parseArgs({ args: [...args], options: { "data-dir": { type: "string" }, nodes: { type: "string" }, "base-port": { type: "string" } } })
    const dataDir = path.resolve(values["data-dir"] ?? ".tqlite/demo")
    const nodes = Number(values.nodes ?? 3)
    if (!Number.isSafeInteger(nodes) || nodes < 1 || nodes > 7) return usageError("demo", "--nodes must be between 1 and 7")
    const basePort = Number(values["base-port"] ?? 9001)
    if (!Number.isSafeInteger(basePort) || basePort < 1 || basePort + nodes - 1 > 65_535) return usageError("demo", "--base-port must leave room for every node below 65536")
    const program = Effect.scoped(runDemo({ dataDir, basePort, nodes })).pipe(
      reportFailure("demo", dataDir),
      Effect.provide(Disk.layerNode)
    )
    runUntilSignal(program, { disableErrorReporting: true })
  }
}
