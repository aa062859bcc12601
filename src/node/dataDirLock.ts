// One process at a time per data directory: a lock file created exclusively, holding the owner's
// pid and host. A lock left by a process that no longer runs (kill -9, power loss) is stale and
// taken over; a live owner — another node, or `tqlite recover` — is a clear refusal.
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import type { Scope } from "effect"
import { Data, Effect } from "effect"

export const lockFileName = "tqlite.lock"

/** Another live process holds the data directory. */
export class DataDirInUse extends Data.TaggedError("DataDirInUse")<{ readonly dir: string; readonly pid: number; readonly host: string }> {
  override get message() {
    return `data directory ${this.dir} is in use by process ${this.pid} on ${this.host}`
  }
}

/** The lock file could not be created or read. */
export class DataDirLockFailed extends Data.TaggedError("DataDirLockFailed")<{ readonly dir: string; readonly cause: unknown }> {
  override get message() {
    return `cannot lock data directory ${this.dir}: ${String(this.cause)}`
  }
}

/** Takes the lock for the caller's scope; closing the scope removes it. */
export const lockDataDir = (dir: string): Effect.Effect<void, DataDirInUse | DataDirLockFailed, Scope.Scope> =>
  Effect.acquireRelease(Effect.suspend(() => tryLock(dir)), (file) => Effect.sync(() => fs.rmSync(file, { force: true })))

function tryLock(dir: string): Effect.Effect<string, DataDirInUse | DataDirLockFailed> {
  const file = path.join(dir, lockFileName)
  const host = os.hostname()
  // Two attempts: the second only after removing a stale lock.
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      fs.mkdirSync(dir, { recursive: true })
      fs.writeFileSync(file, `${process.pid}\n${host}\n`, { flag: "wx" })
      return Effect.succeed(file)
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") return Effect.fail(new DataDirLockFailed({ dir, cause: error }))
    }
    let owner: { pid: number; host: string }
    try {
      const [pidText, ownerHost] = fs.readFileSync(file, "utf8").split("\n")
      owner = { pid: Number(pidText), host: ownerHost ?? "" }
    } catch (error) {
      return Effect.fail(new DataDirLockFailed({ dir, cause: error }))
    }
    // On another host (a shared file system) we cannot tell whether the owner lives: refuse.
    if (owner.host !== host || (Number.isSafeInteger(owner.pid) && owner.pid > 0 && processRuns(owner.pid))) {
      return Effect.fail(new DataDirInUse({ dir, pid: owner.pid, host: owner.host }))
    }
    fs.rmSync(file, { force: true })
  }
  return Effect.fail(new DataDirLockFailed({ dir, cause: "the lock kept coming back" }))
}

function processRuns(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    // EPERM: it exists but belongs to someone else.
    return (error as NodeJS.ErrnoException).code === "EPERM"
  }
}
