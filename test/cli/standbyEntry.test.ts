// Any member that knows the leader is an entry point (issue: "a standby is a dead end"): four
// nodes, so the role manager keeps three voters and one standby; a client given only the standby
// finds the leader through it — the real `dqlite` shell and `tqlite shell` alike.
import { execFile } from "node:child_process"
import { Effect } from "effect"
import { describe, expect, it } from "vitest"
import { runShell } from "../../src/cli/commands/shell.ts"
import { leaderOf } from "../../src/node/raftClusterControl.ts"
import { findDqliteShell } from "../net/gateway/harness.ts"
import { clusterForFile, runCaptured } from "./harness.ts"

const cluster = clusterForFile(4)

/** The node the role manager made a standby (the fourth joiner: it waits as a spare until a
 * role round stages it), with its status once it knows the leader; bounded wait. */
const standby = async () => {
  const deadline = Date.now() + 20_000
  for (;;) {
    for (const node of cluster().nodes) {
      const status = await Effect.runPromise(node.node.raft.status)
      if (status.membership.members.find((m) => m.id === status.id)?.role === "standby" && status.leader !== null) return { node, status }
    }
    if (Date.now() > deadline) throw new Error("no standby that knows the leader among four nodes within 20 s")
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

describe("a standby is an entry point", () => {
  it("answers LEADER with the leader it follows", async () => {
    const { status } = await standby()
    expect(status.leader).not.toBeNull()
    const leader = status.membership.members.find((m) => m.id === status.leader)!
    expect(leaderOf(status)).toEqual({ id: leader.id, address: leader.address })
  })

  it("tqlite shell given only the standby runs SQL on the leader", async () => {
    const { node } = await standby()
    const run = await Effect.runPromise(runCaptured((io) => runShell({ servers: [node.node.identity.address], database: "entry", format: "csv", command: "CREATE TABLE IF NOT EXISTS t (x); INSERT INTO t VALUES (41 + 1); SELECT x FROM t" }, io)))
    expect(run.err).toBe("")
    expect(run.out).toContain("42")
    expect(run.code).toBe(0)
  })

  it("the real dqlite shell given only the standby runs SQL on the leader", async () => {
    const binary = findDqliteShell()
    expect(binary, "the dqlite shell (apt-get install go-dqlite; .ci/run installs it)").not.toBeNull()
    const { node } = await standby()
    const out = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) =>
      execFile(binary!, ["-s", node.node.identity.address, "entry", "SELECT 6 * 7"], { timeout: 30_000 }, (error, stdout, stderr) =>
        resolve({ code: error === null ? 0 : typeof error.code === "number" ? error.code : -1, stdout, stderr })))
    expect(out).toMatchObject({ code: 0, stdout: "42\n" })
  }, 40_000)
})
