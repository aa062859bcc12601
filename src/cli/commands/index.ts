// Every `tqlite` subcommand, in the order `tqlite help` lists them.
import { bench } from "./bench.ts"
import { cluster } from "./cluster.ts"
import type { Command } from "./command.ts"
import { demo } from "./demo.ts"
import { dump } from "./dump.ts"
import { recover } from "./recover.ts"
import { repair } from "./repair.ts"
import { restore } from "./restore.ts"
import { shell } from "./shell.ts"
import { start } from "./start.ts"

export const commands: ReadonlyArray<Command> = [
  start,
  shell,
  cluster,
  dump,
  restore,
  recover,
  repair,
  demo,
  bench
]
