// Runs one instance of the notes service (NotesService.ts). See README.md.
import { NodeRuntime } from "@effect/platform-node"
import { Layer } from "effect"
import * as path from "node:path"
import { parseArgs } from "node:util"
import { NotesService } from "./NotesService.ts"

const { values } = parseArgs({
  options: {
    address: { type: "string", default: "127.0.0.1:9001" },
    join: { type: "string", default: "" },
    "data-dir": { type: "string" },
    "http-host": { type: "string", default: "127.0.0.1" },
    "http-port": { type: "string", default: "8080" }
  }
})

const httpPort = Number(values["http-port"])
if (!Number.isInteger(httpPort) || httpPort < 0 || httpPort > 65535) {
  process.stderr.write(`--http-port: expected a port number, got ${values["http-port"]}\n`)
  process.exit(2)
}
const port = values.address.split(":").at(-1) ?? "9001"

NodeRuntime.runMain(Layer.launch(NotesService({
  address: values.address,
  join: values.join.split(",").map((s) => s.trim()).filter((s) => s.length > 0),
  dataDir: path.resolve(values["data-dir"] ?? path.join(".notes-data", port)),
  httpHost: values["http-host"],
  httpPort
})))
