#!/usr/bin/env node
// The `tqlite` command. For now: `start` (a local demo cluster, see demo.ts) and `version`.
import { NodeRuntime } from "@effect/platform-node"
import { Effect } from "effect"
import * as path from "node:path"
import { parseArgs } from "node:util"
import { runDemo } from "./demo.ts"

const version = "0.1.0"
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
      options: { "data-dir": { type: "string" }, nodes: { type: "string" } }
    })
    const dataDir = path.resolve(values["data-dir"] ?? ".tqlite/demo")
    const nodes = Number(values.nodes ?? 3)
    if (!Number.isSafeInteger(nodes) || nodes < 1 || nodes > 7) {
      process.stderr.write("tqlite start: --nodes must be between 1 and 7\n")
      process.exit(2)
    }
    NodeRuntime.runMain(Effect.scoped(runDemo({ dataDir, nodes })))
    break
  }
  default:
    process.stderr.write(`tqlite: unknown command '${command}'\nusage: tqlite start [--data-dir DIR] [--nodes N] | tqlite version\n`)
    process.exitCode = 2
}
