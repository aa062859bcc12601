// `tqlite`, `tqlite help [COMMAND]` and `tqlite COMMAND --help|-h`: usage on stdout, exit 0, and
// nothing run (no node started, no data dir written).
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { describe, expect, it } from "vitest"
import { commands } from "../../src/cli/commands/index.ts"
import { route } from "../../src/cli/route.ts"
import { tqlite } from "./harness.ts"

describe("tqlite help", () => {
  it("every subcommand answers --help and -h with its own usage, even beside other flags", () => {
    for (const command of commands) {
      for (const flag of ["--help", "-h"]) {
        const decided = route(commands, [command.name, "--servers", "h:1", flag])
        expect(decided._tag).toBe("Print")
        if (decided._tag === "Print") expect(decided.text).toBe(`usage: ${command.usage}\n`)
      }
      const viaHelp = route(commands, ["help", command.name])
      expect(viaHelp).toMatchObject({ _tag: "Print", text: `usage: ${command.usage}\n` })
    }
  })

  it("no command prints the tool's usage instead of starting a node; an unknown one is a usage error", () => {
    const none = route(commands, [])
    expect(none._tag).toBe("Print")
    if (none._tag === "Print") for (const command of commands) expect(none.text).toContain(command.usage)
    expect(route(commands, ["frobnicate"])).toMatchObject({ _tag: "UsageError", exitCode: 2 })
    // After `--`, `-h` is an argument of the command, not a request for help.
    expect(route(commands, ["shell", "--", "-h"])).toMatchObject({ _tag: "Run", args: ["--", "-h"] })
    expect(route(commands, ["version"])).toMatchObject({ _tag: "Print", text: expect.stringMatching(/^tqlite \d+\.\d+\.\d+\n$/) })
  })

  it("through the binary: `tqlite start --help` exits 0 and writes nothing to the data dir", async () => {
    const cwd = fs.mkdtempSync(path.join(os.tmpdir(), "tqlite-help-"))
    const dataDir = path.join(cwd, "data")
    const help = await tqlite(["start", "--data-dir", dataDir, "--help"], 60_000)
    expect(help.code).toBe(0)
    expect(help.out).toMatch(/^usage: tqlite start /)
    expect(fs.existsSync(dataDir)).toBe(false)
    const bare = await tqlite([], 60_000)
    expect(bare.code).toBe(0)
    expect(bare.out).toMatch(/^usage:\n/)
    const unknown = await tqlite(["nope"], 60_000)
    expect(unknown.code).toBe(2)
    expect(unknown.err).toMatch(/unknown command 'nope'/)
  }, 180_000)
})
