// Issue 17: a 20 MiB transaction (20 × 1 MiB blobs in one INSERT) on three real `tqlite start`
// processes commits at its first attempt, and one over transactionBytesMax (31 MiB) is refused
// with SQLITE_TOOBIG, changing nothing, while the cluster goes on serving. Before the fix the
// first never committed: every stage of the entry (capture, encode, log record, msgpack pack per
// follower, receive) held a node's event loop for the whole entry, a 20 MiB frame held every
// heartbeat behind it, and each attempt ended in a new election ("leadership lost", 0 rows).
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Effect, Exit } from "effect"
import { afterAll, describe, expect, it } from "vitest"
import { make as makeClient } from "../../src/net/client/Client.ts"
import { defaultSqliteLimits } from "../../src/sqlite/limits.ts"
import { sqliteTooBigCode } from "../../src/sqlite/sqliteCodes.ts"
import { eventually, freePort, killAll, leaderAddress, rolesOf, startNode } from "./harness.ts"

afterAll(killAll)

const mib = 1024 * 1024
const insertBlobs = (first: number, count: number) =>
  `INSERT INTO blobs (id, b) SELECT ${first} + x, randomblob(${mib}) FROM (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ${count}) SELECT x FROM c)`

describe("large transactions on three processes (issue 17)", () => {
  it("a 20 MiB transaction commits at its first attempt; a 31 MiB one is SQLITE_TOOBIG and the cluster keeps serving", async () => {
    const base = fs.mkdtempSync(path.join(os.tmpdir(), "tqlite-bigtx-"))
    const servers = [`127.0.0.1:${await freePort()}`, `127.0.0.1:${await freePort()}`, `127.0.0.1:${await freePort()}`]
    const nodes = [startNode(servers[0]!, path.join(base, "n1"), [])]
    await eventually("the founder to lead", () => leaderAddress(servers.slice(0, 1)))
    nodes.push(startNode(servers[1]!, path.join(base, "n2"), [servers[0]!]), startNode(servers[2]!, path.join(base, "n3"), [servers[0]!]))
    await eventually("three voters", async () => ([...(await rolesOf(servers)).values()].filter((r) => r === "voter").length === 3 ? true : null), 90_000)
    const overLimitMiB = Math.floor(defaultSqliteLimits.transactionBytesMax / mib) + 1
    try {
      await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
        // One attempt each (no client retry could hide a lost leadership), a generous timeout.
        const client = yield* makeClient({ servers, database: "bigtx", requestTimeoutMs: 60_000, livenessProbeAfterMs: 0, retriesMax: 0 })
        yield* client.exec("CREATE TABLE blobs (id INTEGER PRIMARY KEY, b BLOB)")
        const started = Date.now()
        const big = yield* Effect.exit(client.exec(insertBlobs(0, 20)))
        const bigMs = Date.now() - started
        expect(Exit.isSuccess(big) ? big.value.rowsAffected : Exit.isFailure(big) ? String(big.cause) : null).toBe(20n)

        const tooBig = yield* Effect.exit(client.exec(insertBlobs(100, overLimitMiB)))
        const error = Exit.isFailure(tooBig) && tooBig.cause._tag === "Fail" ? tooBig.cause.error : null
        expect(error?._tag === "ServerFailure" ? error.code : String(error)).toBe(sqliteTooBigCode)
        expect(error?._tag === "ServerFailure" ? error.message : "").toContain("transactionBytesMax")

        // Still serving: a small write, and the blobs are all there, the refused ones not.
        expect((yield* client.exec("INSERT INTO blobs (id, b) VALUES (1000, x'00')")).rowsAffected).toBe(1n)
        const rows = yield* client.query("SELECT count(*), sum(length(b)) FROM blobs")
        expect(rows.rows).toEqual([[21, 20 * mib + 1]])
        process.stdout.write(`20 MiB transaction committed in ${bigMs} ms; ${overLimitMiB} MiB refused with SQLITE_TOOBIG\n`)
      })))
    } catch (error) {
      for (const node of nodes) process.stderr.write(`node output:\n${node.output().slice(-3000)}\n`)
      throw error
    } finally {
      killAll()
      fs.rmSync(base, { recursive: true, force: true })
    }
  }, 240_000)
})
