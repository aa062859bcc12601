// A read consistency level on the wire. dqlite's protocol has no field for one, so tqlite's own
// client puts it in OPEN's `vfs` text, which dqlite clients send empty (go-dqlite) or as a VFS
// name tqlite ignores: `tqlite-read:linearizable`, `tqlite-read:local`,
// `tqlite-read:bounded:<maxLagMs>`, `tqlite-read:session:<raftIndex>`. A connection opened so
// may be served single read-only statements (QUERY_SQL) by a node that does not lead, from its
// own copy at that level; everything else on it is as on any connection (a follower answers
// "not leader"). Any other `vfs` text: no level, dqlite's behaviour.
import type { ReadConsistency } from "../../actors/RaftActor.ts"

const prefix = "tqlite-read:"

export function readLevelText(consistency: ReadConsistency): string {
  switch (consistency.level) {
    case "linearizable":
    case "local":
      return `${prefix}${consistency.level}`
    case "bounded":
      return `${prefix}bounded:${consistency.maxLagMs}`
    case "session":
      return `${prefix}session:${consistency.index}`
  }
}

/** The level an OPEN's `vfs` asks for; null when it names none; a string saying what is wrong
 * when it starts like one but is malformed. */
export function parseReadLevel(vfs: string): ReadConsistency | null | string {
  if (!vfs.startsWith(prefix)) return null
  const [level = "", argument, ...rest] = vfs.slice(prefix.length).split(":")
  if (rest.length > 0) return `malformed read level "${vfs}"`
  const number = argument === undefined || !/^[0-9]+(\.[0-9]+)?$/.test(argument) ? NaN : Number(argument)
  switch (level) {
    case "linearizable":
    case "local":
      return argument === undefined ? { level } : `read level ${level} takes no argument`
    case "bounded":
      return number > 0 ? { level, maxLagMs: number } : `read level bounded needs maxLagMs > 0 ("${vfs}")`
    case "session":
      return Number.isSafeInteger(number) ? { level, index: number } : `read level session needs a Raft index ("${vfs}")`
    default:
      return `unknown read level "${level}"`
  }
}

/** The shell's and the CLI's spelling: `linearizable`, `local`, `bounded:<ms>`, `session:<index>`. */
export function parseReadLevelFlag(text: string): ReadConsistency | string {
  const parsed = parseReadLevel(`${prefix}${text}`)
  return parsed === null ? `unknown read level "${text}"` : parsed
}
