// Graceful shutdown of real `tqlite start` processes. SIGTERM to the leader of a three-voter
// cluster: it hands leadership to a caught-up voter (TimeoutNow), so the new leader is there one
// term later and sooner than any election timeout could produce one, and the process exits 0
// within the shutdown bound. Then a shutdown made slow on purpose (the peers are frozen with
// SIGSTOP, so the hand-over waits) is cut short by a second SIGTERM: exit 143 at once.
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Effect } from "effect"
import { afterAll, describe, expect, it } from "vitest"
import type { TqliteProcess } from "./harness.ts"
import { defaultTickMs } from "../../src/node/Node.ts"
import { eventually, freePort, killAll, leaderAddress, loggedAt, rolesOf, startNode, withClient } from "./harness.ts"

afterAll(killAll)

/** The smallest election timeout a node can draw: electionTicks (10) × the default tick. */
const electionTimeoutMinMs = 10 * defaultTickMs
const shutdownBoundMs = 10_000

describe("graceful shutdown", () => {
  it("the leader hands over on SIGTERM and exits 0; a second SIGTERM exits at once", async () => {
    const base = fs.mkdtempSync(path.join(os.tmpdir(), "tqlite-shutdown-"))
    const addresses = [`127.0.0.1:${await freePort()}`, `127.0.0.1:${await freePort()}`, `127.0.0.1:${await freePort()}`]
    const nodes = new Map<string, TqliteProcess>()
    nodes.set(addresses[0]!, startNode(addresses[0]!, path.join(base, "n1"), []))
    // Generous waits: starting a process (tsx) takes seconds, more on a loaded machine.
    await eventually("the founder to lead", async () => ((await leaderAddress([addresses[0]!])) === addresses[0] ? true : null), 60_000)
    for (const [i, address] of addresses.slice(1).entries()) nodes.set(address, startNode(address, path.join(base, `n${i + 2}`), [addresses[0]!]))
    await eventually("three voters", async () => ([...(await rolesOf(addresses)).values()].filter((r) => r === "voter").length === 3 ? true : null), 90_000)
    await withClient(addresses, (client) => Effect.zipRight(client.exec("CREATE TABLE t (x INTEGER)"), client.exec("INSERT INTO t VALUES (1)")))

    // 1. SIGTERM the leader.
    const leader = await eventually("a leader", () => leaderAddress(addresses))
    const leaving = nodes.get(leader)!
    const term = Number(await eventually("the leader's log line", async () => /leads the cluster \(term (\d+)\)/.exec(leaving.output())?.[1] ?? null, 5_000))
    expect(term).toBeGreaterThan(0)
    const signalledAt = Date.now()
    leaving.child.kill("SIGTERM")
    const exit = await leaving.exited
    expect(exit.code).toBe(0)
    expect(exit.atMs - signalledAt).toBeLessThan(shutdownBoundMs)
    const out = leaving.output()
    expect(out).toMatch(new RegExp(`leadership handed over to node \\d+ \\(term ${term} → ${term + 1}\\)`))
    const survivors = addresses.filter((a) => a !== leader)
    const next = await eventually("a new leader", async () => {
      const now = await leaderAddress(survivors)
      return now !== null && now !== leader ? now : null
    })
    // The new leader won term + 1 (one election, started by TimeoutNow), and won it sooner after
    // the hand-over began than a follower's election timeout could have fired.
    // The node logs "leads the cluster" from a poll of its status every tick (50 ms), so the line
    // can trail the LEADER answer a little.
    const won = `leads the cluster (term ${term + 1})`
    const nextOut = await eventually("the new leader's log line", async () => (nodes.get(next)!.output().includes(won) ? nodes.get(next)!.output() : null), 5_000)
    expect(nextOut).toContain(won)
    const handOverAt = loggedAt(out, /shutting down: handing leadership over/)
    const wonAt = loggedAt(nextOut, new RegExp(`leads the cluster \\(term ${term + 1}\\)`))
    expect(handOverAt).not.toBeNull()
    expect(wonAt).not.toBeNull()
    expect(wonAt! - handOverAt!).toBeLessThan(electionTimeoutMinMs)
    console.log(`hand-over: new leader ${wonAt! - handOverAt!} ms after it began; process exited ${exit.atMs - signalledAt} ms after SIGTERM`)
    await withClient(survivors, (client) => client.exec("INSERT INTO t VALUES (2)"))
    expect(await withClient(survivors, (client) => Effect.map(client.query("SELECT count(*) FROM t"), (r) => r.rows[0]?.[0]))).toBe(2)

    // 2. A slow shutdown: freeze the other survivor, so the leader's hand-over cannot complete;
    // the second SIGTERM ends the process at once.
    const slowLeader = next
    const frozen = survivors.find((a) => a !== slowLeader)!
    nodes.get(frozen)!.child.kill("SIGSTOP")
    const slow = nodes.get(slowLeader)!
    slow.child.kill("SIGTERM")
    await eventually("the shutdown to begin", async () => (/shutting down: handing leadership over/.test(slow.output()) ? true : null), 3_000)
    expect(slow.output()).not.toMatch(/hand-over before shutdown failed|handed over to/)
    const secondAt = Date.now()
    slow.child.kill("SIGTERM")
    const slowExit = await slow.exited
    expect(slowExit.code).toBe(143)
    expect(slowExit.atMs - secondAt).toBeLessThan(500)
    nodes.get(frozen)!.child.kill("SIGCONT")
    killAll()
    fs.rmSync(base, { recursive: true, force: true })
  }, 240_000)
})
