#!/usr/bin/env node
// The `tqlite` command: dispatches to a subcommand (src/cli/commands); no subcommand is `start`.
import { commands } from "./commands/index.ts"
import { version } from "./commands/command.ts"

const usage = () => `usage:\n${commands.map((c) => `  ${c.usage}`).join("\n")}\n  tqlite version\n  tqlite help\n`

const [name, ...rest] = process.argv.slice(2)

if (name === "version" || name === "--version") {
  process.stdout.write(`tqlite ${version}\n`)
} else if (name === "help" || name === "--help" || name === "-h") {
  process.stdout.write(usage())
} else {
  const command = commands.find((c) => c.name === (name ?? "start"))
  if (command === undefined) {
    process.stderr.write(`tqlite: unknown command '${name}'\n${usage()}`)
    process.exitCode = 2
  } else {
    try {
      await command.run(rest)
    } catch (error) {
      // parseArgs rejects unknown or malformed flags by throwing.
      process.stderr.write(`tqlite ${command.name}: ${error instanceof Error ? error.message : String(error)}\n`)
      process.exitCode = 2
    }
  }
}
