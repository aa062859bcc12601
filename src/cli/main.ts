#!/usr/bin/env node
// The `tqlite` command: dispatches to a subcommand (src/cli/commands); no subcommand prints help.
// No top-level await: the bundle is CommonJS, so the launcher can run it with V8's code cache
// (scripts/tqlite.mjs).
import { commands } from "./commands/index.ts"
import { route } from "./route.ts"

const main = async (): Promise<void> => {
  const decided = route(commands, process.argv.slice(2))
  switch (decided._tag) {
    case "Print":
      process.stdout.write(decided.text)
      break
    case "UsageError":
      process.stderr.write(decided.text)
      process.exitCode = decided.exitCode
      break
    case "Run":
      try {
        await decided.command.run(decided.args)
      } catch (error) {
        // parseArgs rejects unknown or malformed flags by throwing.
        process.stderr.write(`tqlite ${decided.command.name}: ${error instanceof Error ? error.message : String(error)}\n`)
        process.exitCode = 2
      }
  }
}

void main()
