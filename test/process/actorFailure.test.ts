// A node whose log writer gives up (a write error that is not a full disk: the active segment is
// made immutable with `chattr +i`, so the next write fails with EPERM) stops on purpose: exit
// status 1 and one line saying which part gave up and why — not a zombie that goes on answering
// as leader (issue 13). Needs root and a file system with immutable files (ext4, xfs).
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Effect } from "effect"
import { afterAll, describe, expect, it } from "vitest"
import { eventually, freePort, killAll, startNode, withClient } from "./harness.ts"

const base = fs.mkdtempSync(path.join(os.tmpdir(), "tqlite-actor-failure-"))
const immutable: string[] = []

const canMakeImmutable = (() => {
  if (process.getuid?.() !== 0) return false
  const probe = path.join(base, "probe")
  try {
    fs.writeFileSync(probe, "")
    execFileSync("chattr", ["+i", probe], { stdio: "ignore" })
    execFileSync("chattr", ["-i", probe], { stdio: "ignore" })
    return true
  } catch {
    return false
  }
})()

afterAll(() => {
  killAll()
  for (const file of immutable) execFileSync("chattr", ["-i", file], { stdio: "ignore" })
  fs.rmSync(base, { recursive: true, force: true })
})

describe.skipIf(!canMakeImmutable)("an actor that gives up", () => {
  it("stops the node: exit status 1 and one line naming the log writer and the error", async () => {
    const address = `127.0.0.1:${await freePort()}`
    const dataDir = path.join(base, "node")
    const node = startNode(address, dataDir, [])
    await eventually("the node to serve", () => withClient([address], (client) => Effect.map(client.exec("CREATE TABLE t (v INTEGER)"), () => true)))
    const logDir = path.join(dataDir, "log")
    const segment = path.join(logDir, fs.readdirSync(logDir).filter((name) => name.endsWith(".seg")).sort().at(-1)!)
    execFileSync("chattr", ["+i", segment])
    immutable.push(segment)
    // This write reaches the log writer, whose write fails with EPERM.
    await withClient([address], (client) => client.exec("INSERT INTO t VALUES (1)")).catch(() => undefined)
    const exited = await Promise.race([node.exited, new Promise<null>((resolve) => setTimeout(() => resolve(null), 20_000))])
    expect(exited, `still running; output:\n${node.output()}`).not.toBeNull()
    expect(exited!.code).toBe(1)
    const lines = node.output().split("\n").filter((line) => line.includes("node stopped:"))
    expect(lines.length).toBe(1)
    expect(lines[0]).toMatch(/node stopped: actor raft-\d+\/log-writer gave up after 0 restarts \(DiskError: write .*log-\d+\.seg: EPERM\); exiting with status 1/)
  }, 60_000)
})
