// What every `tqlite` subcommand is: a name, its usage text, and a runner over its arguments
// (everything after the subcommand's name). Runners own their process exit: long-lived ones hand
// an Effect to NodeRuntime.runMain, short ones set process.exitCode.
export const version = "0.1.0"

export interface Command {
  readonly name: string
  readonly usage: string
  readonly run: (args: ReadonlyArray<string>) => void | Promise<void>
}

/** Bad arguments: say why on stderr and exit 2, like the tools it sits beside. */
export const usageError = (command: string, why: string): void => {
  process.stderr.write(`tqlite ${command}: ${why}\n`)
  process.exitCode = 2
}
