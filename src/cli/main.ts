#!/usr/bin/env node
// The `tqlite` command: `start` runs a node, `demo` a local three-node cluster in one process.
import { NodeRuntime } from "@effect/platform-node"
import { Effect } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { parseArgs } from "node:util"
import * as SqlNode from "../node/SqlNode.ts"
import { Disk } from "../storage/Disk.ts"
import { runDemo } from "./demo.ts"

const version = "0.1.0"
const usage = `usage:
  tqlite start [--address HOST:PORT] [--data-dir DIR] [--join ADDR,...]
               [--tls-cert FILE --tls-key FILE --tls-ca FILE]
      runs a node: with an empty data dir and no --join it founds a new cluster; with --join it
      asks a member to add it; with an existing data dir it rejoins as the same node.
      Defaults: --address 127.0.0.1:9001 --data-dir .tqlite/<port>
  tqlite demo [--data-dir DIR] [--nodes N]
      a local cluster of N nodes (default 3) in one process, writing a counter
  tqlite version
`

const [command, ...rest] = process.argv.slice(2)

switch (command) {
  case "version":
  case "--version":
    process.stdout.write(`tqlite ${version}\n`)
    break
  case "start":
  case undefined: {
    const { values } = parseArgs({
      args: rest,
      options: {
        address: { type: "string" },
        "data-dir": { type: "string" },
        join: { type: "string" },
        "tls-cert": { type: "string" },
        "tls-key": { type: "string" },
        "tls-ca": { type: "string" }
      }
    })
    const tlsFiles = [values["tls-cert"], values["tls-key"], values["tls-ca"]]
    if (tlsFiles.some((f) => f !== undefined) && tlsFiles.some((f) => f === undefined)) {
      process.stderr.write("tqlite start: --tls-cert, --tls-key and --tls-ca go together\n")
      process.exit(2)
    }
    const tls = values["tls-cert"] !== undefined && values["tls-key"] !== undefined && values["tls-ca"] !== undefined
      ? { cert: fs.readFileSync(values["tls-cert"]), key: fs.readFileSync(values["tls-key"]), ca: fs.readFileSync(values["tls-ca"]) }
      : undefined
    const address = values.address ?? "127.0.0.1:9001"
    const port = address.split(":").at(-1) ?? "9001"
    const dataDir = path.resolve(values["data-dir"] ?? path.join(".tqlite", port))
    const join = (values.join ?? "").split(",").map((s) => s.trim()).filter((s) => s.length > 0)
    const program = Effect.gen(function*() {
      const { node } = yield* SqlNode.start({ dataDir, address, join, ...(tls !== undefined ? { tls } : {}) })
      const self = node.identity
      process.stdout.write(
        `tqlite ${version}: node ${self.nodeId} of cluster ${self.clusterId}\n` +
          `  listening on ${self.address} (dqlite wire protocol v1 and peers), data in ${dataDir}\n` +
          `  connect:   dqlite -s ${self.address} mydb\n` +
          `  add nodes: npx tqlite start --address 127.0.0.1:${Number(port) + 1} --join ${self.address}\n`
      )
      yield* Effect.raceFirst(Effect.never, node.raft.failed)
    })
    NodeRuntime.runMain(Effect.scoped(program).pipe(Effect.provide(Disk.layerNode)))
    break
  }
  case "demo": {
    const { values } = parseArgs({ args: rest, options: { "data-dir": { type: "string" }, nodes: { type: "string" } } })
    const dataDir = path.resolve(values["data-dir"] ?? ".tqlite/demo")
    const nodes = Number(values.nodes ?? 3)
    if (!Number.isSafeInteger(nodes) || nodes < 1 || nodes > 7) {
      process.stderr.write("tqlite demo: --nodes must be between 1 and 7\n")
      process.exit(2)
    }
    NodeRuntime.runMain(Effect.scoped(runDemo({ dataDir, nodes })))
    break
  }
  case "help":
  case "--help":
    process.stdout.write(usage)
    break
  default:
    process.stderr.write(`tqlite: unknown command '${command}'\n${usage}`)
    process.exitCode = 2
}
