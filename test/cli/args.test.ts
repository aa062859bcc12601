// The subcommands' argument parsing: what each accepts and how it says what is wrong.
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { describe, expect, it } from "vitest"
import { parseBenchArgs } from "../../src/cli/commands/bench.ts"
import { parseClusterArgs } from "../../src/cli/commands/cluster.ts"
import { parseDumpArgs } from "../../src/cli/commands/dump.ts"
import { parseRestoreArgs } from "../../src/cli/commands/restore.ts"
import { parseShellArgs } from "../../src/cli/commands/shell.ts"
import { parseServers } from "../../src/cli/common.ts"

describe("CLI arguments", () => {
  it("--servers: HOST:PORT lists, deduplicated; anything else is refused", () => {
    expect(parseServers("127.0.0.1:9001, node-2.example:9002,127.0.0.1:9001")).toEqual({ servers: ["127.0.0.1:9001", "node-2.example:9002"] })
    expect(parseServers("[::1]:9001")).toEqual({ servers: ["[::1]:9001"] })
    expect(parseServers(undefined)).toEqual({ error: "--servers HOST:PORT[,HOST:PORT...] is required" })
    expect(parseServers(" , ")).toEqual({ error: "--servers names no server" })
    expect(parseServers("127.0.0.1")).toEqual({ error: "--servers: '127.0.0.1' is not HOST:PORT" })
    expect(parseServers("h:70000")).toEqual({ error: "--servers: 'h:70000' is not HOST:PORT" })
  })

  it("shell", () => {
    expect(parseShellArgs(["-s", "h:1", "-f", "csv", "-c", "SELECT 1", "db"])).toEqual({ servers: ["h:1"], database: "db", format: "csv", command: "SELECT 1" })
    expect(parseShellArgs(["--servers", "h:1", "db"])).toEqual({ servers: ["h:1"], database: "db", format: "table", command: null })
    expect(parseShellArgs(["--servers", "h:1", "--format", "xml", "db"])).toBe("--format must be one of table, json, csv")
    expect(parseShellArgs(["--servers", "h:1"])).toBe("give one DATABASE name")
    expect(parseShellArgs(["--servers", "h:1", "--bogus", "db"])).toMatch(/Unknown option '--bogus'/)
    expect(parseShellArgs(["--servers", "h:1", "--consistency", "bounded:250", "db"])).toMatchObject({ consistency: { level: "bounded", maxLagMs: 250 } })
    expect(parseShellArgs(["--servers", "h:1", "--consistency", "bounded:0", "db"])).toMatch(/^--consistency: /)
  })

  it("cluster", () => {
    expect(parseClusterArgs(["--servers", "h:1", "--format", "json", "list"])).toEqual({ servers: ["h:1"], format: "json", action: { _tag: "List" } })
    expect(parseClusterArgs(["--servers", "h:1", "transfer", "7"])).toEqual({ servers: ["h:1"], format: "table", action: { _tag: "Transfer", id: 7n } })
    expect(parseClusterArgs(["--servers", "h:1"])).toBe("give an action: list, add, remove, assign, transfer, describe")
    // Ids in decimal (as tqlite prints them) or hex with 0x (the dqlite shell prints bare hex).
    expect(parseClusterArgs(["--servers", "h:1", "transfer", "0x2e9cdd8f67cd"])).toMatchObject({ action: { _tag: "Transfer", id: 0x2e9cdd8f67cdn } })
    expect(parseClusterArgs(["--servers", "h:1", "assign", "0X1F", "spare"])).toMatchObject({ action: { _tag: "Assign", id: 31n, role: "spare" } })
    expect(parseClusterArgs(["--servers", "h:1", "remove", "2e9cdd8f67cd"])).toBe("node id '2e9cdd8f67cd' looks like hex as the dqlite shell prints it: write it as 0x2e9cdd8f67cd")
    expect(parseClusterArgs(["--servers", "h:1", "remove", "0"])).toMatch(/out of range/)
    expect(parseClusterArgs(["--servers", "h:1", "remove", "0x10000000000000000"])).toMatch(/not a decimal or 0x-hex/)
  })

  it("dump and restore", () => {
    expect(parseDumpArgs(["--servers", "h:1", "db", "out.db"])).toEqual({ servers: ["h:1"], database: "db", file: path.resolve("out.db"), timeoutMs: 600_000, idleTimeoutMs: 30_000 })
    expect(parseDumpArgs(["--servers", "h:1", "--idle-timeout-ms", "500", "db", "out.db"])).toMatchObject({ idleTimeoutMs: 500 })
    expect(parseDumpArgs(["--servers", "h:1", "--idle-timeout-ms", "x", "db", "out.db"])).toBe("--idle-timeout-ms must be a positive integer")
    expect(parseDumpArgs(["--servers", "h:1", "--timeout-ms", "0", "db", "out.db"])).toBe("--timeout-ms must be a positive integer")
    expect(parseDumpArgs(["--servers", "h:1", "db"])).toBe("give DATABASE and FILE")
    expect(parseRestoreArgs(["--servers", "h:1", "--force", "--rows-per-transaction", "50", "db", "in.db"])).toEqual({
      servers: ["h:1"], database: "db", file: path.resolve("in.db"), force: true, limits: { rowsPerTransactionMax: 50 }
    })
    expect(parseRestoreArgs(["--servers", "h:1", "db", "in.db"])).toMatchObject({ force: false, limits: {} })
    expect(parseRestoreArgs(["--servers", "h:1", "--bytes-per-transaction", "31457280", "db", "in.db"])).toMatch(/must stay below a third/)
    expect(parseRestoreArgs(["--servers", "h:1", "--rows-per-transaction", "many", "db", "in.db"])).toBe("rowsPerTransactionMax must be a positive integer")
  })

  it("--tls-cert/--tls-key/--tls-ca: all three or none, read from their files, on every client tool", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tqlite-tls-args-"))
    for (const name of ["c.pem", "k.pem", "ca.pem"]) fs.writeFileSync(path.join(dir, name), name)
    const flags = ["--tls-cert", path.join(dir, "c.pem"), "--tls-key", path.join(dir, "k.pem"), "--tls-ca", path.join(dir, "ca.pem")]
    const tls = { cert: Buffer.from("c.pem"), key: Buffer.from("k.pem"), ca: Buffer.from("ca.pem") }
    expect(parseShellArgs(["-s", "h:1", ...flags, "db"])).toMatchObject({ tls })
    expect(parseClusterArgs(["-s", "h:1", ...flags, "list"])).toMatchObject({ tls })
    expect(parseDumpArgs(["-s", "h:1", ...flags, "db", "out.db"])).toMatchObject({ tls })
    expect(parseRestoreArgs(["-s", "h:1", ...flags, "db", "in.db"])).toMatchObject({ tls })
    expect(parseBenchArgs(["--servers", "h:1", ...flags])).toMatchObject({ tls })
    expect(parseShellArgs(["-s", "h:1", "--tls-cert", path.join(dir, "c.pem"), "db"])).toBe("--tls-cert, --tls-key and --tls-ca go together")
    expect(parseClusterArgs(["-s", "h:1", ...flags.slice(0, 4), "--tls-ca", path.join(dir, "missing.pem"), "list"])).toMatch(/^cannot read .*missing\.pem/)
    // Without the flags the options carry no tls at all.
    expect(parseShellArgs(["-s", "h:1", "db"])).not.toHaveProperty("tls")
  })
})
