// `tqlite start`: runs one node until a signal. With an empty data dir and no --join it founds a
// new cluster; with --join it asks a member to add it; with an existing data dir it rejoins.
import { NodeRuntime } from "@effect/platform-node"
import { Effect } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { parseArgs } from "node:util"
import * as SqlNode from "../../node/SqlNode.ts"
import { Disk } from "../../storage/Disk.ts"
import type { Command } from "./command.ts"
import { usageError, version } from "./command.ts"

export const start: Command = {
  name: "start",
  usage: `tqlite start [--address HOST:PORT] [--data-dir DIR] [--join ADDR,...]
               [--tls-cert FILE --tls-key FILE --tls-ca FILE]
      runs a node: with an empty data dir and no --join it founds a new cluster; with --join it
      asks a member to add it; with an existing data dir it rejoins as the same node.
      Defaults: --address 127.0.0.1:9001 --data-dir .tqlite/<port>`,
  run: (args) => {
    const { values } = parseArgs({
      args: [...args],
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
      return usageError("start", "--tls-cert, --tls-key and --tls-ca go together")
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
  }
}
