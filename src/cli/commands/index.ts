// Every `tqlite` subcommand, in the order `tqlite help` lists them.
import type { Command } from "./command.ts"
import { bench } from "./bench.ts"
import { demo } from "./demo.ts"
import { recover } from "./recover.ts"
import { start } from "./start.ts"

export const commands: ReadonlyArray<Command> = [
  start,
  recover,
  demo,
  bench
]
