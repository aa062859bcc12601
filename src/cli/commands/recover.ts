// `tqlite recover`: when a majority of voters is lost for good, rewrite the membership of a
// stopped node's data directory (src/node/recover.ts) so it and the other survivors can form a
// cluster. Run it on every survivor with the same --members, then start them.
import { Effect } from "effect"
import * as path from "node:path"
import { parseArgs } from "node:util"
import { parseMembers, recoverMembership } from "../../node/recover.ts"
import { Disk } from "../../storage/Disk.ts"
import type { Command } from "./command.ts"
import { usageError } from "./command.ts"

export const recover: Command = {
  name: "recover",
  usage: `tqlite recover --data-dir DIR --members ID@HOST:PORT,...
      for a cluster that lost a majority for good: makes the listed survivors its only voters in
      the stopped node's data dir (ids in decimal as tqlite prints them, or hex with 0x).
      Run it on each survivor with the same --members, then start them.`,
  run: async (args) => {
    const { values } = parseArgs({ args: [...args], options: { "data-dir": { type: "string" }, members: { type: "string" } } })
    if (values["data-dir"] === undefined) return usageError("recover", "--data-dir is required")
    if (values.members === undefined) return usageError("recover", "--members is required")
    const membership = parseMembers(values.members)
    if (membership instanceof Error) return usageError("recover", membership.message)
    const dataDir = path.resolve(values["data-dir"])
    const result = await Effect.runPromise(Effect.either(recoverMembership(dataDir, membership).pipe(Effect.provide(Disk.layerNode))))
    if (result._tag === "Left") {
      const error = result.left as { readonly message?: string; readonly _tag?: string }
      process.stderr.write(`tqlite recover: ${error.message ?? String(error)}\n`)
      process.exitCode = 1
      return
    }
    const done = result.right
    const list = (m: typeof done.membership) => m.members.map((x) => `${x.id}@${x.address} (${x.role})`).join(", ") || "none"
    process.stdout.write(
      `node ${done.nodeId}: membership rewritten at log index ${done.index} (term ${done.term})\n` +
        `  before: ${list(done.previous)}\n  after:  ${list(done.membership)}\n` +
        `  now start the node(s); once they elect a leader the new membership is committed\n`
    )
  }
}
