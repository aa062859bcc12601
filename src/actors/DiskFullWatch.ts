// Which parts of a node cannot write for a full disk (ENOSPC / EDQUOT), since when, and where.
// The part that hits it reports it and retries on its own; the watch turns the episode into one
// WARN line when it starts and one INFO line when space is back (never a line per retry), and lets
// the Raft actor (refuse writes, step down), /health and /metrics read the current picture.
import type { Effect as EffectType } from "effect"
import { Clock, Effect } from "effect"

/** The parts that write to the data directory on their own. */
export type DiskPart = "log" | "snapshots" | "state machine"

export interface DiskFullEpisode {
  readonly part: DiskPart
  /** The file or directory the failing call was on. */
  readonly path: string
  /** The failing call (write, fdatasync, open…). */
  readonly op: string
  /** Clock ms when the episode started. */
  readonly sinceMs: number
  /** Failed attempts in this episode, the first included. */
  readonly attempts: number
}

export interface DiskFullWatch {
  /** `part` failed for a full disk; logs WARN only for the first failure of an episode. */
  readonly report: (part: DiskPart, where: { readonly path: string; readonly op: string }) => EffectType.Effect<void>
  /** `part` wrote successfully; logs INFO when that ends an episode. */
  readonly clear: (part: DiskPart) => EffectType.Effect<void>
  /** The open episodes (read synchronously, on hot paths). */
  readonly episodes: () => ReadonlyArray<DiskFullEpisode>
  /** True while `part` has an open episode. */
  readonly isFull: (part: DiskPart) => boolean
}

export const make = (): DiskFullWatch => {
  const open = new Map<DiskPart, DiskFullEpisode>()
  let snapshot: ReadonlyArray<DiskFullEpisode> = []
  const publish = () => {
    snapshot = [...open.values()]
  }
  return {
    report: (part, where) =>
      Effect.flatMap(Clock.currentTimeMillis, (nowMs) =>
        Effect.suspend(() => {
          const episode = open.get(part)
          if (episode !== undefined) {
            open.set(part, { ...episode, attempts: episode.attempts + 1 })
            publish()
            return Effect.void
          }
          open.set(part, { part, path: where.path, op: where.op, sinceMs: nowMs, attempts: 1 })
          publish()
          return Effect.logWarning(`disk full: the ${part} cannot write (${where.op} ${where.path}); retrying until space is freed`)
        })),
    // Cheap when nothing is open (called after every successful write of some parts).
    clear: (part) =>
      Effect.suspend(() => {
        const episode = open.get(part)
        if (episode === undefined) return Effect.void
        open.delete(part)
        publish()
        return Effect.flatMap(Clock.currentTimeMillis, (nowMs) =>
          Effect.logInfo(
            `disk space is back: the ${part} writes again (${episode.path}; full for ${nowMs - episode.sinceMs} ms, ${episode.attempts} failed attempts)`
          ))
      }),
    episodes: () => snapshot,
    isFull: (part) => open.has(part)
  }
}

/** The backoff between attempts while the disk is full: 50 ms doubling to 2 s. */
export const diskFullBackoffMsMin = 50
export const diskFullBackoffMsMax = 2_000

export const nextBackoffMs = (previousMs: number | null): number =>
  previousMs === null ? diskFullBackoffMsMin : Math.min(diskFullBackoffMsMax, previousMs * 2)

/** Codes that say "no space": errno ENOSPC / EDQUOT, SQLite's SQLITE_FULL (a database or WAL
 * file could not grow) and SQLITE_IOERR_SHMSIZE (the WAL index, `-shm`, could not be sized: what
 * opening a database in WAL mode on a full file system fails with). */
const diskFullCodes: ReadonlySet<unknown> = new Set(["ENOSPC", "EDQUOT", "SQLITE_FULL", "SQLITE_IOERR_SHMSIZE"])

/** True when `error` (or the `cause` chain under it, a few levels deep) is a full disk: the
 * storage layer's `DiskFull` or one of `diskFullCodes`. */
export function isDiskFull(error: unknown): boolean {
  let current: unknown = error
  for (let depth = 0; depth < 8 && typeof current === "object" && current !== null; depth++) {
    const record = current as { readonly _tag?: unknown; readonly code?: unknown; readonly cause?: unknown }
    if (record._tag === "DiskFull") return true
    if (diskFullCodes.has(record.code)) return true
    current = record.cause
  }
  return false
}

/** Where a full-disk error happened, for the log line: its `path` / `op` when it says. */
export function whereOf(error: unknown, fallbackPath: string): { readonly path: string; readonly op: string } {
  let current: unknown = error
  for (let depth = 0; depth < 8 && typeof current === "object" && current !== null; depth++) {
    const record = current as { readonly path?: unknown; readonly op?: unknown; readonly operation?: unknown; readonly syscall?: unknown; readonly cause?: unknown }
    if (typeof record.path === "string") {
      const op = typeof record.op === "string" ? record.op : typeof record.operation === "string" ? record.operation : typeof record.syscall === "string" ? record.syscall : "write"
      return { path: record.path, op }
    }
    current = record.cause
  }
  return { path: fallbackPath, op: "write" }
}
