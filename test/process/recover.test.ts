// `tqlite recover` as a command: malformed --members is a usage error (exit 2, says why), and a
// directory that is not a node's data directory is refused (exit 1). The recovery itself is
// tested in-process in test/node/recover.test.ts.
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, describe, expect, it } from "vitest"
import { killAll, tqlite } from "./harness.ts"

afterAll(killAll)

describe("tqlite recover", () => {
  it("rejects malformed --members and a directory that is not a node's", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tqlite-recover-cli-"))
    const malformed = tqlite(["recover", "--data-dir", dir, "--members", "12@127.0.0.1"])
    expect((await malformed.exited).code).toBe(2)
    expect(malformed.output()).toContain("the address must be HOST:PORT")
    const empty = tqlite(["recover", "--data-dir", dir, "--members", "12@127.0.0.1:9001"])
    expect((await empty.exited).code).toBe(1)
    expect(empty.output()).toContain("is not a tqlite data directory")
    fs.rmSync(dir, { recursive: true, force: true })
  }, 60_000)
})
