// A full disk under a real `tqlite start` process (issue 13). The first node (the leader) keeps
// its data directory on a small tmpfs mounted in a mount namespace of its own (`unshare -m`);
// the test fills that file system through /proc/<pid>/root, then frees it. Wanted: the cluster
// goes on acknowledging writes through the other two nodes, the full node says "disk full" in its
// log and on /health (503) and neither dies nor wedges, and once space is back it resumes without
// a restart, catching up with every acknowledged write. Needs root (CI runs as root) and unshare.
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Effect } from "effect"
import { afterAll, describe, expect, it } from "vitest"
import type { TqliteProcess } from "./harness.ts"
import { canUnshare, eventually, freePort, killAll, leaderAddress, rolesOf, root, spawnTracked, tqlite, withClient } from "./harness.ts"
import { cliArgs } from "../bundle.ts"

afterAll(() => killAll())

const tmpfsMiB = 24

/** `tqlite start` in a mount namespace of its own with `dataDir` on a fresh tmpfs. */
function startOnTmpfs(address: string, dataDir: string, metrics: string): TqliteProcess {
  const node = [process.execPath, ...cliArgs, "start", "--address", address, "--data-dir", dataDir, "--metrics", metrics]
  const quoted = node.map((arg) => `'${arg}'`).join(" ")
  // `unshare` without --fork execs sh, which execs node: the pid we hold is the node process's.
  return spawnTracked("unshare", ["-m", "sh", "-c", `mount -t tmpfs -o size=${tmpfsMiB}M tmpfs '${dataDir}' && exec ${quoted}`])
}

/** The last /health answer seen per endpoint, printed when the test fails. */
const lastHealth = new Map<string, string>()

async function health(metrics: string): Promise<{ readonly code: number; readonly body: { readonly status: string; readonly reason: string | null; readonly appliedIndex: number; readonly commitIndex: number; readonly role: string } }> {
  const response = await fetch(`http://${metrics}/health`)
  const body = (await response.json()) as never
  lastHealth.set(metrics, `${response.status} ${JSON.stringify(body)}`)
  return { code: response.status, body }
}

/** Fills the file system behind `dir` (as the process sees it) until ENOSPC, appending to
 * `name`; returns the file. Run again to take whatever the node freed meanwhile. */
function fill(dir: string, name = "filler"): string {
  const filler = path.join(dir, name)
  const fd = fs.openSync(filler, "a")
  const chunk = Buffer.alloc(256 * 1024, 1)
  try {
    for (;;) fs.writeSync(fd, chunk)
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ENOSPC") throw error
  }
  // Whatever is left is smaller than a chunk: take it too.
  const small = Buffer.alloc(4096, 1)
  try {
    for (;;) fs.writeSync(fd, small)
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ENOSPC") throw error
  }
  fs.closeSync(fd)
  return filler
}

describe.skipIf(!canUnshare)("a full disk under a real node", () => {
  it("the full leader steps down, the cluster writes on, and the node resumes by itself once space is freed", async () => {
    const base = fs.mkdtempSync(path.join(os.tmpdir(), "tqlite-diskfull-"))
    const addresses = [`127.0.0.1:${await freePort()}`, `127.0.0.1:${await freePort()}`, `127.0.0.1:${await freePort()}`]
    const metrics = [`127.0.0.1:${await freePort()}`, `127.0.0.1:${await freePort()}`, `127.0.0.1:${await freePort()}`]
    const dirs = addresses.map((_, i) => path.join(base, `node${i + 1}`))
    for (const dir of dirs) fs.mkdirSync(dir)
    const first = startOnTmpfs(addresses[0]!, dirs[0]!, metrics[0]!)
    let keepFull: ReturnType<typeof setInterval> | undefined
    try {
      await eventually("the first node to lead", async () => ((await health(metrics[0]!)).code === 200 ? true : null))
      const others = [1, 2].map((i) => tqlite(["start", "--address", addresses[i]!, "--data-dir", dirs[i]!, "--metrics", metrics[i]!, "--join", addresses[0]!]))
      await eventually("three voters", async () => {
        const roles = await rolesOf(addresses)
        return [...roles.values()].filter((r) => r === "voter").length === 3 ? true : null
      }, 60_000)
      expect(await leaderAddress(addresses)).toBe(addresses[0])

      const acknowledged: number[] = []
      const write = (value: number) =>
        withClient(addresses, (client) => client.exec("INSERT INTO t (v) VALUES (?)", [value])).then(
          () => void acknowledged.push(value),
          () => undefined
        )
      await withClient(addresses, (client) => client.exec("CREATE TABLE t (v INTEGER)"))
      for (let v = 1; v <= 20; v++) await write(v)
      expect(acknowledged.length).toBe(20)

      // The node's own view of its data directory: the tmpfs in its mount namespace.
      const seen = `/proc/${first.child.pid}/root${dirs[0]}`
      const filler = fill(seen)
      // The node frees a little by itself (a stepped-down leader cuts its WAL): take that too, so
      // the disk stays full until the test frees it.
      // Stops by itself once the node is gone (its /proc entry with it): the failure is then
      // the node's exit, reported once below, not one ENOENT per tick.
      keepFull = setInterval(() => {
        try {
          fill(seen)
        } catch (error) {
          clearInterval(keepFull)
          console.error(`filling stopped: ${String(error)} (node 1 exit code ${first.child.exitCode})`)
        }
      }, 50)
      const fullAtMs = Date.now()
      let next = 21
      // Writes go on through the others: the first acknowledged one after the disk filled.
      await eventually("a write acknowledged by the cluster without the full node", async () => {
        const before = acknowledged.length
        await write(next++)
        return acknowledged.length > before && (await leaderAddress(addresses)) !== addresses[0] ? true : null
      }, 30_000)
      const firstWriteAfterMs = Date.now() - fullAtMs
      const full = await eventually("/health to say disk full", async () => {
        const h = await health(metrics[0]!)
        return h.code === 503 && h.body.reason?.startsWith("disk full") === true ? h : null
      }, 15_000)
      expect(full.body.role).not.toBe("leader")
      for (let i = 0; i < 10; i++) await write(next++)
      expect(first.child.exitCode).toBeNull()
      expect(first.output()).toMatch(/disk full: the (log|state machine|snapshots) cannot write/)

      expect((await health(metrics[0]!)).body.reason).toMatch(/^disk full/)
      // Space is back: no restart, the node catches up and says so.
      clearInterval(keepFull)
      fs.rmSync(filler)
      const freedAtMs = Date.now()
      await eventually("the node to be healthy again", async () => ((await health(metrics[0]!)).code === 200 ? true : null), 30_000)
      const healthyAfterMs = Date.now() - freedAtMs
      expect(first.output()).toMatch(/disk space is back/)
      // One WARN per episode and part, not one per retry.
      expect((first.output().match(/disk full: the log cannot write/g) ?? []).length).toBeLessThanOrEqual(1)
      for (let i = 0; i < 5; i++) await write(next++)

      // Every node applied the same, and every acknowledged write is there.
      await eventually("every node applied the last commit", async () => {
        const all = await Promise.all(metrics.map(health))
        const commit = Math.max(...all.map((h) => h.body.commitIndex))
        return all.every((h) => h.code === 200 && h.body.appliedIndex === commit) ? true : null
      }, 30_000)
      // Read on the formerly full node: make it leader again, then read there.
      const firstId = await withClient(addresses, (client) =>
        Effect.map(client.cluster, (members) => members.find((m) => m.address === addresses[0])!.id))
      await eventually("the formerly full node to lead again", async () => {
        await withClient(addresses, (client) => client.transfer(firstId)).catch(() => undefined)
        return (await leaderAddress(addresses)) === addresses[0] ? true : null
      }, 30_000)
      const values = await withClient([addresses[0]!], (client) => Effect.map(client.query("SELECT v FROM t ORDER BY v"), (r) => r.rows.map((row) => Number(row[0]))))
      for (const v of acknowledged) expect(values).toContain(v)
      expect(first.child.exitCode).toBeNull()
      console.log(`disk full: first write acknowledged ${firstWriteAfterMs} ms after the disk filled; healthy ${healthyAfterMs} ms after space was freed; ${acknowledged.length} writes acknowledged`)
      for (const p of [first, ...others]) p.child.kill("SIGKILL")
    } catch (error) {
      clearInterval(keepFull)
      // The full node's own account is what explains a failure here.
      console.error(`last /health answers: ${JSON.stringify([...lastHealth])}\nnode 1 output:\n${first.output().split("\n").slice(-80).join("\n")}`)
      throw error
    }
  }, 240_000)
})
