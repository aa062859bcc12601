// Opening a WAL database on a full file system (a real tmpfs, filled): SQLite cannot size the WAL
// index (`-shm`) and fails with SQLITE_IOERR_SHMSIZE, not SQLITE_FULL. A writer's reopen after a
// step-down discard met exactly that in `test/process/diskFull.test.ts` under load, and the
// applier died of it ("PRAGMA journal_mode=WAL failed") instead of waiting for space like every
// other full-disk failure. Needs root and unshare (CI runs as root), as the process test does.
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { describe, expect, it } from "vitest"
import { canUnshare } from "../process/harness.ts"

describe.skipIf(!canUnshare)("opening a database on a full file system", () => {
  it("fails with an error the full-disk path recognises, and opens again once space is freed", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tqlite-openfull-"))
    try {
      const child = path.join(import.meta.dirname, "openFullDisk.child.ts")
      const script = `mount -t tmpfs -o size=1M tmpfs '${dir}' && exec '${process.execPath}' --import tsx '${child}' '${dir}'`
      const out = execFileSync("unshare", ["-m", "sh", "-c", script], { cwd: path.resolve(import.meta.dirname, "../.."), encoding: "utf8" })
      const result = JSON.parse(out.trim().split("\n").at(-1)!) as {
        whileFull: { opened: boolean; causeCode?: unknown; diskFull?: boolean; error?: string }
        afterFreed: { opened: boolean; rows?: number }
      }
      expect(result.whileFull.opened, JSON.stringify(result.whileFull)).toBe(false)
      expect(result.whileFull.causeCode).toBe("SQLITE_IOERR_SHMSIZE")
      expect(result.whileFull.diskFull).toBe(true)
      expect(result.afterFreed).toEqual({ opened: true, rows: 50 })
    } finally {
      fs.rmSync(dir, { recursive: true, force: true })
    }
  })
})
