// What `tqlite ARGS` asks for, decided before anything runs: a version, help (for the whole tool
// or one subcommand), a subcommand to run, or a usage error. Pure, so it is tested directly.
import type { Command } from "./commands/command.ts"
import { version } from "./commands/command.ts"

export type Route =
  | { readonly _tag: "Print"; readonly text: string; readonly exitCode: 0 }
  | { readonly _tag: "Run"; readonly command: Command; readonly args: ReadonlyArray<string> }
  | { readonly _tag: "UsageError"; readonly text: string; readonly exitCode: 2 }

const helpFlags = new Set(["--help", "-h", "help"])

export const toolUsage = (commands: ReadonlyArray<Command>): string =>
  `usage:\n${commands.map((c) => `  ${c.usage}`).join("\n")}\n  tqlite version\n  tqlite help [COMMAND]\n` +
  `run 'tqlite COMMAND --help' for one command; 'npm start' runs 'tqlite start' with its defaults\n`

export const commandUsage = (command: Command): string => `usage: ${command.usage}\n`

export function route(commands: ReadonlyArray<Command>, argv: ReadonlyArray<string>): Route {
  const [name, ...rest] = argv
  // No command prints help: starting a node (and writing a data dir) is never a default.
  if (name === undefined || helpFlags.has(name)) {
    const about = rest[0] === undefined ? undefined : commands.find((c) => c.name === rest[0])
    return { _tag: "Print", text: about === undefined ? toolUsage(commands) : commandUsage(about), exitCode: 0 }
  }
  if (name === "version" || name === "--version") return { _tag: "Print", text: `tqlite ${version}\n`, exitCode: 0 }
  const command = commands.find((c) => c.name === name)
  if (command === undefined) return { _tag: "UsageError", text: `tqlite: unknown command '${name}'\n${toolUsage(commands)}`, exitCode: 2 }
  // `--help`/`-h` anywhere before a `--` asks for this command's usage, whatever else is given.
  const beforeTerminator = rest.indexOf("--") === -1 ? rest : rest.slice(0, rest.indexOf("--"))
  if (beforeTerminator.some((arg) => arg === "--help" || arg === "-h")) {
    return { _tag: "Print", text: commandUsage(command), exitCode: 0 }
  }
  return { _tag: "Run", command, args: rest }
}
