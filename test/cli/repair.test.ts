// `tqlite repair` as a command: registered for `tqlite help` and dispatch, and through the binary
// a directory that is not a node's is refused (exit 1) without being created. Arguments are
// checked in test/node/repair.test.ts; the repair itself runs in-process against a live cluster
// in test/node/repair.live.test.ts.
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { describe, expect, it } from "vitest"
import { commands } from "../../src/cli/commands/index.ts"
import { tqlite } from "./harness.ts"

describe("tqlite repair, the command", () => {
  it("is registered with its usage", () => {
    const repair = commands.find((c) => c.name === "repair")
    expect(repair?.usage).toContain("tqlite repair --data-dir DIR [--servers ADDR,...]")
  })

  it("refuses, through the binary, what is not a data directory, without creating it", async () => {
    const base = fs.mkdtempSync(path.join(os.tmpdir(), "tqlite-repair-cli-"))
    const missing = path.join(base, "nowhere")
    // One process: loading the CLI takes seconds on a busy machine.
    const refused = await tqlite(["repair", "--data-dir", missing], 80_000)
    expect(refused.code).toBe(1)
    expect(refused.err).toContain(`${missing} is not a tqlite data directory: it does not exist`)
    expect(fs.existsSync(missing)).toBe(false)
    fs.rmSync(base, { recursive: true, force: true })
  }, 90_000)
})
