// A leader paused with SIGSTOP, three real `tqlite start` processes on loopback:
// - the TypeScript client's write to the paused leader fails with ServerUnresponsive (unknown
//   outcome) well before its request timeout, and its next write lands on the new leader;
// - once resumed, the old leader finds it was deposed and closes the client connections opened
//   on it at once, rather than answering them later.
import * as fs from "node:fs"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { Effect, Exit } from "effect"
import { afterAll, describe, expect, it } from "vitest"
import { make as makeClient } from "../../src/net/client/Client.ts"
import { encodeProtocolVersion } from "../../src/net/protocol/framing.ts"
import { encodeRequest } from "../../src/net/protocol/requests.ts"
import { eventually, freePort, killAll, leaderAddress, rolesOf, startNode } from "./harness.ts"

afterAll(killAll)

function openSession(address: string): Promise<{ readonly socket: net.Socket; readonly closedAt: () => number | null }> {
  return new Promise((resolve, reject) => {
    const port = Number(address.slice(address.lastIndexOf(":") + 1))
    let closedAt: number | null = null
    // Served for sure before the pause: the answer to a LEADER request has come back.
    const socket = net.connect({ host: "127.0.0.1", port }, () => {
      socket.write(encodeProtocolVersion("v1"))
      socket.write(encodeRequest({ kind: "leader" }))
    })
    socket.once("data", () => resolve({ socket, closedAt: () => closedAt }))
    socket.on("error", reject)
    socket.on("close", () => void (closedAt = Date.now()))
  })
}

describe("a leader paused with SIGSTOP", () => {
  it("its client's write fails fast as unknown; resumed, it closes its client connections at once", async () => {
    const base = fs.mkdtempSync(path.join(os.tmpdir(), "tqlite-pause-"))
    const servers = [`127.0.0.1:${await freePort()}`, `127.0.0.1:${await freePort()}`, `127.0.0.1:${await freePort()}`]
    const nodes = [startNode(servers[0]!, path.join(base, "n1"), [])]
    await eventually("the founder to lead", () => leaderAddress(servers.slice(0, 1)))
    nodes.push(startNode(servers[1]!, path.join(base, "n2"), [servers[0]!]), startNode(servers[2]!, path.join(base, "n3"), [servers[0]!]))
    await eventually("three voters", async () => ([...(await rolesOf(servers)).values()].filter((r) => r === "voter").length === 3 ? true : null), 60_000)
    const leader = await eventually("a leader", () => leaderAddress(servers))
    const paused = nodes[servers.indexOf(leader)]!
    try {
      await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
        // Default client options: the request timeout (10 s) is not what ends the wait.
        const client = yield* makeClient({ servers, database: "paused" })
        yield* client.exec("CREATE TABLE IF NOT EXISTS t (x)")
        const session = yield* Effect.promise(() => openSession(leader))

        paused.child.kill("SIGSTOP")
        const pausedAt = Date.now()
        const write = yield* Effect.exit(client.exec("INSERT INTO t VALUES (1)"))
        const failedAfterMs = Date.now() - pausedAt
        expect(Exit.isFailure(write) && write.cause._tag === "Fail" ? write.cause.error._tag : "not a failure").toBe("ServerUnresponsive")
        expect(failedAfterMs).toBeLessThan(5_000)
        // The next write finds the new leader (the other two elect one within about a second).
        expect(yield* client.exec("INSERT INTO t VALUES (2)")).toMatchObject({ rowsAffected: 1n })
        const newLeader = yield* Effect.promise(() => eventually("a new leader", async () => {
          const named = await leaderAddress(servers.filter((s) => s !== leader))
          return named !== null && named !== leader ? named : null
        }))
        expect(newLeader).not.toBe(leader)
        expect(session.closedAt()).toBeNull()

        paused.child.kill("SIGCONT")
        const resumedAt = Date.now()
        const closedAt = yield* Effect.promise(() => eventually("the resumed leader to close its client connection", async () => session.closedAt(), 5_000))
        // It hears the new term from the new leader at once, and the gateway polls the role
        // every tick (50 ms).
        expect(closedAt - resumedAt).toBeLessThan(2_000)
        process.stdout.write(`paused leader: the write failed ServerUnresponsive after ${failedAfterMs} ms; resumed, it closed its client connection after ${closedAt - resumedAt} ms\n`)
        session.socket.destroy()
      })))
    } catch (error) {
      process.stderr.write(`paused node's output:\n${paused.output().slice(-6000)}\n`)
      throw error
    } finally {
      paused.child.kill("SIGCONT")
      killAll()
      fs.rmSync(base, { recursive: true, force: true })
    }
  }, 120_000)
})
