// Three `tqlite start` processes on loopback driven by the real `dqlite` shell (go-dqlite
// 1.11.5): two nodes join the first (as spares; the leader's role manager promotes them), SQL with random() and datetime('now') goes through any
// node, the leader is killed with SIGKILL and the shell's next statements succeed on the new
// leader, the killed node restarts from its data directory and rejoins, and `.remove` removes a
// node. CI installs the shell (.ci/run); without it the test says so and is skipped.
import { type ChildProcess, execFile, execFileSync, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, describe, expect, it } from "vitest"
import { findDqliteShell } from "../net/gateway/harness.ts"
import { freePort } from "./harness.ts"
import { cliArgs } from "../bundle.ts"

const dqlite = findDqliteShell()
const root = path.resolve(import.meta.dirname, "../..")
const children = new Set<ChildProcess>()

afterAll(() => {
  for (const child of children) child.kill("SIGKILL")
})

function startNode(address: string, dataDir: string, join: ReadonlyArray<string>, tlsArgs: ReadonlyArray<string> = []): ChildProcess {
  const args = [...cliArgs, "start", "--address", address, "--data-dir", dataDir, ...tlsArgs]
  if (join.length > 0) args.push("--join", join.join(","))
  const child = spawn(process.execPath, args, { cwd: root, stdio: ["ignore", "pipe", "pipe"] })
  let output = ""
  child.stdout?.on("data", (chunk: Buffer) => (output += chunk.toString()))
  child.stderr?.on("data", (chunk: Buffer) => (output += chunk.toString()))
  child.on("exit", () => children.delete(child))
  Object.defineProperty(child, "output", { get: () => output })
  children.add(child)
  return child
}

/** A `tqlite` client tool as a process: its exit code and output. */
function tqliteTool(args: ReadonlyArray<string>): Promise<{ code: number; out: string; err: string }> {
  return new Promise((resolve) =>
    execFile(process.execPath, [...cliArgs, ...args], { cwd: root, timeout: 60_000 }, (error, stdout, stderr) =>
      resolve({ code: error === null ? 0 : typeof error.code === "number" ? error.code : -1, out: stdout, err: stderr })))
}

function shell(servers: ReadonlyArray<string>, ...command: ReadonlyArray<string>): Promise<{ code: number; out: string }> {
  return shellWith([], servers, ...command)
}

function shellWith(flags: ReadonlyArray<string>, servers: ReadonlyArray<string>, ...command: ReadonlyArray<string>): Promise<{ code: number; out: string }> {
  return shellFor(15_000, flags, servers, ...command)
}

/** The shell, killed after `timeoutMs`: go-dqlite's shell keeps retrying a server it cannot
 * talk to, so a refusal shows as a shell that got nothing before it was stopped. */
function shellFor(timeoutMs: number, flags: ReadonlyArray<string>, servers: ReadonlyArray<string>, ...command: ReadonlyArray<string>): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    execFile(dqlite ?? "dqlite", [...flags, "-s", servers.join(","), "mydb", ...command], { timeout: timeoutMs }, (error, stdout, stderr) =>
      resolve({ code: error === null ? 0 : typeof error.code === "number" ? error.code : 1, out: `${stdout}${stderr}` }))
  })
}

/** Retries `check` (real time) until it returns true or the deadline passes. */
async function eventually(what: string, check: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    if (await check()) return
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 200))
  }
}

describe.skipIf(dqlite === null)("a three-process cluster and the real dqlite shell", () => {
  it("joins, replicates, fails over after kill -9, rejoins after restart, and removes a node", async () => {
    const base = fs.mkdtempSync(path.join(os.tmpdir(), "tqlite-process-"))
    const addresses = [`127.0.0.1:${await freePort()}`, `127.0.0.1:${await freePort()}`, `127.0.0.1:${await freePort()}`]
    const dirs = addresses.map((_, i) => path.join(base, `node${i + 1}`))
    const nodes: ChildProcess[] = [startNode(addresses[0]!, dirs[0]!, [])]
    await eventually("the founder to serve", async () => (await shell([addresses[0]!], ".leader")).out.trim() === addresses[0])
    nodes.push(startNode(addresses[1]!, dirs[1]!, [addresses[0]!]))
    nodes.push(startNode(addresses[2]!, dirs[2]!, [addresses[0]!]))
    // Joiners come in as spares; the leader's role manager promotes them a round or two later.
    await eventually("three voters", async () => ((await shell(addresses, ".cluster")).out.match(/\|voter/g) ?? []).length === 3, 90_000)

    expect(await shell([addresses[1]!], "CREATE TABLE t (id INTEGER PRIMARY KEY, r INTEGER, at TEXT)")).toEqual({ code: 0, out: "" })
    expect((await shell([addresses[2]!], "INSERT INTO t (r, at) VALUES (random(), datetime('now'))")).code).toBe(0)
    // The shell prints rows as id|r|at (its -f json shapes only dot commands).
    const select = await shell(addresses, "SELECT id, r, at FROM t")
    expect(select.code).toBe(0)
    const [rowId, r, at] = select.out.trim().split("|")
    expect(rowId).toBe("1")
    expect(Number.isSafeInteger(Number(r)) || /^-?\d+$/.test(r ?? "")).toBe(true)
    expect(Math.abs(Date.parse(`${(at ?? "").replace(" ", "T")}Z`) - Date.now())).toBeLessThan(120_000)
    const members = JSON.parse((await shell(addresses, "-f", "json", ".cluster")).out) as Array<Record<string, unknown>>
    expect(members.map((m) => m["Address"]).sort()).toEqual([...addresses].sort())

    const leader = (await shell(addresses, ".leader")).out.trim()
    const killed = addresses.indexOf(leader)
    expect(killed).toBeGreaterThanOrEqual(0)
    nodes[killed]!.kill("SIGKILL")
    const survivors = addresses.filter((a) => a !== leader)
    await eventually("a new leader", async () => {
      const now = (await shell(survivors, ".leader")).out.trim()
      return now !== "" && now !== leader
    })
    expect((await shell(addresses, "INSERT INTO t (r, at) VALUES (random(), datetime('now'))")).code).toBe(0)
    expect((await shell(addresses, "SELECT count(*) FROM t")).out.trim()).toBe("2")

    // The killed node comes back from its data directory as the same member (a voter again: if
    // the role manager demoted it while it was away, it promotes it back once caught up).
    nodes[killed] = startNode(leader, dirs[killed]!, [])
    await eventually("the restarted node to answer", async () => (await shell([leader], ".leader")).out.trim() !== "")
    await eventually("three voters again", async () => ((await shell(addresses, ".cluster")).out.match(/\|voter/g) ?? []).length === 3, 60_000)
    expect((await shell(addresses, ".cluster")).out).toContain(leader)

    // .remove (by address, as the shell takes it) takes the restarted node out of the configuration.
    // Two members keep one voter (the other a standby): two voters would only add ways to lose quorum.
    expect((await shell(addresses, `.remove ${leader}`)).code).toBe(0)
    await eventually("two members", async () => ((await shell(survivors, ".cluster")).out.match(/\|(voter|stand-by|spare)/g) ?? []).length === 2)
    await eventually("one voter and one standby", async () => {
      const now = (await shell(survivors, ".cluster")).out
      return (now.match(/\|voter/g) ?? []).length === 1 && (now.match(/\|stand-by/g) ?? []).length === 1
    })
    expect((await shell(survivors, "SELECT count(*) FROM t")).out.trim()).toBe("2")
    for (const node of nodes) node.kill("SIGKILL")
    fs.rmSync(base, { recursive: true, force: true })
  }, 240_000)
})

describe.skipIf(dqlite === null)("TLS", () => {
  it("a node joins over mutual TLS; the shell with the cluster certificate works, one without TLS gets nothing", async () => {
    const base = fs.mkdtempSync(path.join(os.tmpdir(), "tqlite-process-tls-"))
    // go-dqlite's shell uses one self-signed certificate as the cluster's certificate and CA and
    // wants a DNS name in it.
    execFileSync("openssl", [
      "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
      "-keyout", path.join(base, "cluster.key"), "-out", path.join(base, "cluster.crt"),
      "-subj", "/CN=tqlite", "-addext", "subjectAltName=DNS:tqlite,IP:127.0.0.1"
    ], { stdio: "ignore" })
    const cert = path.join(base, "cluster.crt")
    const key = path.join(base, "cluster.key")
    const tlsArgs = ["--tls-cert", cert, "--tls-key", key, "--tls-ca", cert]
    const addresses = [`127.0.0.1:${await freePort()}`, `127.0.0.1:${await freePort()}`]
    const nodes = [startNode(addresses[0]!, path.join(base, "n1"), [], tlsArgs)]
    const secure = ["-c", cert, "-k", key]
    await eventually("the founder to serve over TLS", async () => (await shellWith(secure, [addresses[0]!], ".leader")).out.trim() === addresses[0])
    nodes.push(startNode(addresses[1]!, path.join(base, "n2"), [addresses[0]!], tlsArgs))
    // A two-node cluster keeps one voter; the joiner becomes a standby (it replicates).
    await eventually("a voter and a standby", async () => {
      const now = (await shellWith(secure, addresses, ".cluster")).out
      return (now.match(/\|voter/g) ?? []).length === 1 && (now.match(/\|stand-by/g) ?? []).length === 1
    })
    expect((await shellWith(secure, addresses, "CREATE TABLE t (x)")).code).toBe(0)
    expect((await shellWith(secure, addresses, "INSERT INTO t VALUES (42)")).code).toBe(0)
    expect((await shellWith(secure, addresses, "SELECT x FROM t")).out.trim()).toBe("42")
    // Without TLS the shell retries until stopped; 4 s is far beyond a loopback round trip.
    const plain = await shellFor(4_000, [], addresses, "SELECT x FROM t")
    expect(plain.code).not.toBe(0)
    expect(plain.out).not.toContain("42")
    // tqlite's own tools take the same flags, and find the leader through the standby alone.
    const standbyOnly = ["--servers", addresses[1]!]
    const viaTls = await tqliteTool(["shell", ...standbyOnly, ...tlsArgs, "--format", "csv", "-c", "SELECT x FROM t", "mydb"])
    expect(viaTls).toEqual({ code: 0, out: "x\r\n42\r\n", err: "" })
    const listed = await tqliteTool(["cluster", ...standbyOnly, ...tlsArgs, "--format", "json", "list"])
    expect(listed.code).toBe(0)
    expect((JSON.parse(listed.out) as Array<{ role: string }>).map((m) => m.role).sort()).toEqual(["standby", "voter"])
    const withoutTls = await tqliteTool(["shell", ...standbyOnly, "-c", "SELECT x FROM t", "mydb"])
    expect(withoutTls.code).toBe(1)
    expect(withoutTls.out).not.toContain("42")
    for (const node of nodes) node.kill("SIGKILL")
    fs.rmSync(base, { recursive: true, force: true })
  }, 150_000)
})

if (dqlite === null) {
  it("needs the dqlite shell (apt-get install go-dqlite; .ci/run installs it)", () => {
    expect(dqlite).toBeNull()
  })
}
