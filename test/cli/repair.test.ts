// `tqlite repair` as a process: registered (listed by `tqlite help`), bad arguments are a usage
// error (exit 2), and a directory that is not a node's is refused (exit 1) without being created.
// The repair itself runs in-process against a live cluster in test/node/repair.live.test.ts.
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { describe, expect, it } from "vitest"
import { tqlite } from "./harness.ts"

describe("tqlite repair, the command", () => {
  it("is listed, checks its arguments, and refuses what is not a data directory", async () => {
    const base = fs.mkdtempSync(path.join(os.tmpdir(), "tqlite-repair-cli-"))
    const missing = path.join(base, "nowhere")
    // Three processes at once: each spends seconds loading.
    const [help, usage, refused] = await Promise.all([
      tqlite(["help"], 60_000),
      tqlite(["repair", "--servers", "127.0.0.1:1"], 60_000),
      tqlite(["repair", "--data-dir", missing], 60_000)
    ])
    expect(help.out).toContain("tqlite repair --data-dir DIR [--servers ADDR,...]")
    expect(usage.code).toBe(2)
    expect(usage.err).toContain("tqlite repair: --data-dir is required")
    expect(refused.code).toBe(1)
    expect(refused.err).toContain(`${missing} is not a tqlite data directory: it does not exist`)
    expect(fs.existsSync(missing)).toBe(false)
    fs.rmSync(base, { recursive: true, force: true })
  }, 90_000)
})
