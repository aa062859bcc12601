// A failure of a long-lived command (start, demo) as one line for a person: what went wrong, in
// the library's own words, and what to do about it. The full cause (stack traces and all) is for
// the debug log, not for this line.
import { Cause, Effect, Option } from "effect"
import { ActorFailed, describeActorFailed } from "../runtime/errors.ts"

/** What an operator does about a failure, by its tag; the `dataDir` the command used. */
const remedies: Record<string, (dataDir: string) => string> = {
  IdentityMismatch: () => "start it with the address it was created with, or use another --data-dir",
  IdentityCorrupted: () => "restore the data dir from a backup, or remove it and --join the cluster as a new node",
  DataDirInUse: () => "stop that process first, or use another --data-dir",
  ListenFailed: () => "choose another --address, or stop what listens there",
  MetricsServerFailed: () => "choose another --metrics address",
  DiscoveryFailed: () => "check the --join addresses and that those members run (--join-timeout waits longer)",
  LogCorrupted: (dataDir) => `run: tqlite repair --data-dir ${dataDir}`,
  SnapshotCorrupted: (dataDir) => `run: tqlite repair --data-dir ${dataDir}`,
  SnapshotMissing: (dataDir) => `run: tqlite repair --data-dir ${dataDir}`,
  RepairUnfinished: (dataDir) => `run: tqlite repair --data-dir ${dataDir} (it finishes the move)`,
  ClusterIdMismatch: () => "this data dir belongs to another cluster: use another --data-dir",
  UnknownFormatVersion: () => "run the tqlite version that wrote this data dir",
  JoinOtherCluster: () => "use another --data-dir to join that cluster, or start without --join to run this node in its own",
  DiskFull: () => "free space on the data dir's file system, then start again"
}

/** "reason — what to do" for the cause's first failure (or defect). */
export function failureLine(cause: Cause.Cause<unknown>, dataDir: string): string {
  const error = Option.getOrElse(Cause.failureOption(cause), () => Option.getOrUndefined(Cause.dieOption(cause)))
  // An actor that gave up: the node stops on purpose rather than serve on as a zombie.
  if (error instanceof ActorFailed) return `node stopped: ${describeActorFailed(error)}; exiting with status 1`
  const reason = describe(error)
  const tag = typeof error === "object" && error !== null && "_tag" in error ? String(error._tag) : ""
  const remedy = remedies[tag]
  return remedy === undefined ? reason : `${reason} — ${remedy(dataDir)}`
}

const defaultMessage = "An error has occurred"

/** An error's own words: its message when it has one, else its detail or reason, else its cause's. */
export function describe(error: unknown, depth = 0): string {
  if (typeof error !== "object" || error === null) return String(error)
  const fields = error as { readonly message?: unknown; readonly detail?: unknown; readonly reason?: unknown; readonly cause?: unknown; readonly _tag?: unknown }
  if (typeof fields.message === "string" && fields.message.length > 0 && fields.message !== defaultMessage) return fields.message
  for (const text of [fields.detail, fields.reason]) if (typeof text === "string" && text.length > 0) return text
  const tag = typeof fields._tag === "string" ? fields._tag : "error"
  if (fields.cause !== undefined && depth < 4) return `${tag}: ${describe(fields.cause, depth + 1)}`
  return tag
}

/** For a long-lived command's program: on failure, one line on stderr (`tqlite COMMAND: …`) and
 * the whole cause at debug level only; an interruption (a signal) says nothing. */
export const reportFailure = (command: string, dataDir: string) => <A, E, R>(program: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.tapErrorCause(program, (cause) =>
    Cause.isInterruptedOnly(cause)
      ? Effect.void
      : Effect.zipRight(
        Effect.logDebug(`${command} stopped on an error`, cause),
        Effect.sync(() => void process.stderr.write(`tqlite ${command}: ${failureLine(cause, dataDir)}\n`))
      ))
