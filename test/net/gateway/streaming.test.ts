// Result sets and DUMP stream out of the gateway (issue 12 item 4, issue 17): one real node (Raft
// actor, SQLite state machine, reads in worker threads) behind its TCP gateway, driven through
// the wire by the TypeScript client, a raw protocol connection and the real `dqlite` shell.
// - A SELECT of ~24 MiB comes complete and in order while the leader holds a few batches of it
//   (the reader pool's counter of streamed bytes on the main thread), not the result.
// - A client that stops reading pauses the query (its reader produces nothing more) with bounded
//   bytes in flight; its disconnect releases the reader, which then serves the next read.
// - INTERRUPT mid-stream stops it (EMPTY, reader released), and the connection keeps serving.
// - DUMP of a database many chunks large returns exactly the checkpointed file, read a chunk at a
//   time; the real shell's `.dump` and a large SELECT work.
import { execFile } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { describe, expect, it } from "@effect/vitest"
import Database from "better-sqlite3"
import type { Scope } from "effect"
import { Effect, Exit, Stream } from "effect"
import { noSnapshotIo } from "../../../src/actors/snapshotData.ts"
import * as RaftActor from "../../../src/actors/RaftActor.ts"
import { make as makeClient } from "../../../src/net/client/Client.ts"
import { makeClientHandlerSlot } from "../../../src/net/gateway/Gateway.ts"
import type { DatabaseImage } from "../../../src/net/gateway/Gateway.ts"
import { gatewayLimitsDefault } from "../../../src/net/gateway/limits.ts"
import { makeTcp } from "../../../src/net/peers/PeerTransport.ts"
import { decodeResponse } from "../../../src/net/protocol/responses.ts"
import { makeRaftClusterControl } from "../../../src/node/raftClusterControl.ts"
import { defaultRaftConfig } from "../../../src/raft/config.ts"
import { bootstrap } from "../../../src/raft/core.ts"
import type { ReadersStats } from "../../../src/sqlite/readPool/ReadPool.ts"
import { streamBatchBytesDefault } from "../../../src/sqlite/readPool/ReadPool.ts"
import * as Replicated from "../../../src/sqlite/ReplicatedDatabases.ts"
import type { SqliteApplyResult } from "../../../src/sqlite/SqliteMachine.ts"
import { SqliteMachine } from "../../../src/sqlite/SqliteMachine.ts"
import { makeMemoryLogStore } from "../../../src/storage/LogStore.ts"
import type { SqliteLimits } from "../../../src/sqlite/limits.ts"
import { SqlBusy } from "../../../src/sqlite/Sql.ts"
import { makeFakeCluster } from "./fixture/fakeCluster.ts"
import { makeSqliteFixture } from "./fixture/sqliteFixture.ts"
import { execSql, findDqliteShell, listenForClients, querySql, rawConnect } from "./harness.ts"

const dqliteBinary = findDqliteShell()
const tickMs = 10
/** One row: an integer and a 1,000-character text, ~1 KiB. */
const rowBytes = 1_030
const rows = 24_000

interface Node {
  readonly address: string
  readonly databasePath: string
  readonly databases: Replicated.ReplicatedDatabases
  /** Lengths of the chunks DUMP read, in order. */
  readonly dumpReads: Array<number>
  readonly readers: () => ReadersStats
}

const startNode = (directory: string, limits: Partial<SqliteLimits> = {}): Effect.Effect<Node, never, Scope.Scope> =>
  Effect.gen(function*() {
    const slot = makeClientHandlerSlot()
    const transport = yield* Effect.orDie(makeTcp({ nodeId: 1, clusterId: "streaming", listen: "127.0.0.1:0", onClientConnection: slot.handler }))
    const log = makeMemoryLogStore()
    const boot = bootstrap({ members: [{ id: 1, address: transport.address, role: "voter" }] })
    yield* Effect.orDie(log.persist([{ hardState: boot.hardState, entries: boot.entries }]))
    const machine = yield* SqliteMachine.open({ dataDir: directory, nodeId: 1, pageSize: 4096, fsync: "off", bootSnapshot: null })
    yield* Effect.addFinalizer(() => Effect.sync(() => machine.close()))
    const raft = yield* RaftActor.make<SqliteApplyResult, SqliteMachine>({
      config: { ...defaultRaftConfig(1, 7919) },
      recovered: boot,
      stateMachine: machine,
      io: { persist: log.persist, ...noSnapshotIo, send: transport.send },
      tickMs,
      snapshotEveryEntries: 1_000_000,
      mailboxCapacity: 4096,
      batchMax: 256,
      requestTimeoutMs: 3000
    })
    yield* transport.serve(raft.deliver)
    const databases = yield* Replicated.make({ raft, machine, pollMs: tickMs, limits })
    const dumpReads: Array<number> = []
    slot.bind({
      databases,
      cluster: yield* makeRaftClusterControl({ node: raft }),
      dumper: {
        dump: (name) =>
          Effect.map(databases.committedImage(name), (image): DatabaseImage | null =>
            image === null ? null : {
              sizeBytes: image.sizeBytes,
              read: (offsetBytes, out) => Effect.zipRight(Effect.sync(() => dumpReads.push(out.length)), image.read(offsetBytes, out))
            })
      }
    })
    const deadline = Date.now() + 15_000
    while ((yield* raft.status).role !== "leader") {
      if (Date.now() > deadline) return yield* Effect.dieMessage("no leader within 15 s")
      yield* Effect.sleep("20 millis")
    }
    return {
      address: transport.address,
      databasePath: machine.databasePath("test"),
      databases,
      dumpReads,
      readers: () => databases.writer("test")!.database.readersStats()
    }
  })

const tempDir = Effect.acquireRelease(
  Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "tqlite-streaming-"))),
  (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
)

/** Creates `t` with `rows` rows of ~1 KiB, in transactions well under the size bound. */
const fill = (node: Node) =>
  Effect.gen(function*() {
    const client = yield* makeClient({ servers: [node.address], database: "test", retryBaseMs: 20, retryCapMs: 500, retriesMax: 30 })
    yield* client.exec("CREATE TABLE t (n INTEGER PRIMARY KEY, s TEXT)")
    for (let from = 0; from < rows; from += 6_000) {
      yield* client.exec(
        `WITH RECURSIVE k(n) AS (SELECT ${from + 1} UNION ALL SELECT n + 1 FROM k WHERE n < ${from + 6_000}) INSERT INTO t SELECT n, printf('%06d', n) || substr(hex(randomblob(500)), 1, 994) FROM k`
      )
    }
    return client
  })

/** A filled node and a raw connection that has asked for the whole table, its answer unread. */
const streamingQuery = (limits: Partial<SqliteLimits> = {}) =>
  Effect.gen(function*() {
    const node = yield* startNode(yield* tempDir, limits)
    yield* fill(node)
    const raw = yield* rawConnect(node.address)
    yield* raw.open()
    yield* raw.send(querySql("SELECT n, s FROM t ORDER BY n"))
    return { node, raw }
  })

/** Polls `check` every 20 ms for up to `ms`. */
const waitUntil = (check: () => boolean, what: string, ms = 10_000) =>
  Effect.gen(function*() {
    const deadline = Date.now() + ms
    while (!check()) {
      if (Date.now() > deadline) return yield* Effect.dieMessage(`timed out waiting for ${what}`)
      yield* Effect.sleep("20 millis")
    }
  })

/** A few batches: the one being written, one waiting, each within the bound plus one row. */
const heldBytesBound = 3 * (streamBatchBytesDefault + rowBytes)

const shell = (args: ReadonlyArray<string>, cwd?: string) =>
  Effect.async<string>((resume) => {
    const child = execFile(dqliteBinary ?? "dqlite", [...args], { timeout: 60_000, maxBuffer: 256 * 1024 * 1024, ...(cwd === undefined ? {} : { cwd }) }, (error, stdout, stderr) =>
      resume(error === null ? Effect.succeed(stdout) : Effect.dieMessage(`dqlite ${args.join(" ")}: ${String(error)}\n${stdout}${stderr}`)))
    return Effect.sync(() => void child.kill("SIGKILL"))
  })

describe("gateway: result sets and DUMP stream", () => {
  it.scopedLive("a SELECT of ~24 MiB arrives complete and in order while the leader holds only a few batches of it", () =>
    Effect.gen(function*() {
      const node = yield* startNode(yield* tempDir)
      const client = yield* fill(node)
      let expected = 1
      const count = yield* client.stream("SELECT n, s FROM t ORDER BY n").pipe(
        Stream.runFold(0, (seen, row) => {
          expect(row[0]).toBe(expected)
          expect((row[1] as string).slice(0, 6)).toBe(String(expected).padStart(6, "0"))
          expect((row[1] as string).length).toBe(1_000)
          expected++
          return seen + 1
        })
      )
      expect(count).toBe(rows)
      const stats = node.readers()
      expect(stats.streamBatches).toBeGreaterThan((rows * rowBytes) / streamBatchBytesDefault / 2)
      expect(stats.streamBytesHeldMax).toBeGreaterThan(0)
      expect(stats.streamBytesHeldMax).toBeLessThanOrEqual(heldBytesBound)
      expect(stats.streams).toBe(0)
      // The whole-result path still answers the same (the client gathers every batch).
      const whole = yield* client.query("SELECT count(*), sum(length(s)) FROM t")
      expect(whole.rows).toEqual([[rows, rows * 1_000]])
    }), 120_000)

  it.scopedLive("a client that stops reading pauses the query with bounded bytes in flight; its disconnect releases the reader", () =>
    Effect.gen(function*() {
      const { node, raw } = yield* streamingQuery()
      const first = decodeResponse((yield* raw.receiveFrame)!)
      expect(first.kind === "rows" && first.end).toBe("part")
      // Reads nothing more: the socket buffers fill, the session's write waits, and the reader
      // stops being asked for batches.
      let last = -1
      let stableSince = Date.now()
      yield* waitUntil(() => {
        const batches = node.readers().streamBatches
        if (batches !== last) {
          last = batches
          stableSince = Date.now()
        }
        return Date.now() - stableSince >= 500
      }, "the stream to pause", 20_000)
      const paused = node.readers()
      expect(paused.streams).toBe(1)
      expect(paused.busy).toBe(1)
      expect(paused.streamBytesHeld).toBeLessThanOrEqual(heldBytesBound)
      // Far from the whole result: what went out is what the socket buffers hold.
      expect(paused.streamBatches * streamBatchBytesDefault).toBeLessThan((rows * rowBytes) / 2)
      // The client goes away: the stream ends, the reader is free and serves the next read.
      raw.socket.destroy()
      yield* waitUntil(() => node.readers().streams === 0 && node.readers().busy === 0, "the reader to be released")
      expect(node.readers().streamBytesHeld).toBe(0)
      const client = yield* makeClient({ servers: [node.address], database: "test", retryBaseMs: 20, retryCapMs: 500, retriesMax: 30 })
      expect((yield* client.query("SELECT count(*) FROM t")).rows).toEqual([[rows]])
    }), 120_000)

  it.scopedLive("INTERRUPT mid-stream answers EMPTY, releases the reader, and the connection keeps serving", () =>
    Effect.gen(function*() {
      const { node, raw } = yield* streamingQuery()
      for (let i = 0; i < 3; i++) expect(decodeResponse((yield* raw.receiveFrame)!).kind).toBe("rows")
      yield* raw.send({ kind: "interrupt", dbId: 0n })
      // ROWS already on their way are fine; then EMPTY, and nothing like the whole result.
      let rowsMessages = 0
      for (;;) {
        const response = decodeResponse((yield* raw.receiveFrame)!)
        if (response.kind === "empty") break
        expect(response.kind).toBe("rows")
        rowsMessages++
      }
      expect(rowsMessages * 4096).toBeLessThan((rows * rowBytes) / 2)
      yield* waitUntil(() => node.readers().streams === 0 && node.readers().busy === 0, "the reader to be released")
      expect(yield* raw.call(querySql("SELECT count(*) FROM t"))).toMatchObject({ kind: "rows", end: "done" })
      expect(yield* raw.call(execSql("INSERT INTO t (s) VALUES ('after')"))).toMatchObject({ kind: "result", rowsAffected: 1n })
    }), 120_000)

  it.scopedLive("a stream that outlives its time limit while the client pauses ends with a lone FAILURE after the ROWS sent", () =>
    Effect.gen(function*() {
      const { node, raw } = yield* streamingQuery({ queryTimeoutMs: 1_500 })
      expect(decodeResponse((yield* raw.receiveFrame)!).kind).toBe("rows")
      // Paused past the limit: the reader lets go of its snapshot without waiting for the client
      // (whose answer still waits for the socket to drain: the stream's scope is open).
      yield* waitUntil(() => node.readers().busy === 0, "the time limit to free the reader", 15_000)
      expect(node.readers().streams).toBe(1)
      expect(node.readers().streamBytesHeld).toBeLessThanOrEqual(heldBytesBound)
      let rowsMessages = 1
      for (;;) {
        const response = decodeResponse((yield* raw.receiveFrame)!)
        if (response.kind === "rows") {
          expect(response.end).toBe("part")
          rowsMessages++
          continue
        }
        expect(response).toMatchObject({ kind: "failure", code: 9 })
        expect(response.kind === "failure" && response.message).toMatch(/queryTimeoutMs = 1500 ms/)
        break
      }
      expect(rowsMessages * 4096).toBeLessThan((rows * rowBytes) / 2)
      yield* waitUntil(() => node.readers().streams === 0, "the stream's scope to close")
      // The connection keeps serving.
      expect(yield* raw.call(querySql("SELECT count(*) FROM t"))).toMatchObject({ kind: "rows", end: "done" })
    }), 120_000)

  it.scopedLive("a DUMP whose image cannot be read to the end, or that outlives dumpTimeoutMs, closes the connection (nothing can follow an announced size)", () =>
    Effect.gen(function*() {
      const fixture = yield* makeSqliteFixture()
      const cluster = makeFakeCluster({ self: 1, members: [], leader: null })
      let reads = 0
      const sizeBytes = 64 * 1024 * 1024
      const server = yield* listenForClients({
        databases: fixture.databases,
        cluster,
        dumper: {
          dump: (name) =>
            Effect.succeed({
              sizeBytes,
              read: (_offset: number, out: Uint8Array) =>
                name === "fails" && ++reads === 3 ? Effect.fail(new SqlBusy({ message: "the database was closed" })) : Effect.sync(() => out.fill(7))
            })
        }
      }, { dumpTimeoutMs: 500 })
      const failing = yield* rawConnect(server.address)
      yield* failing.send({ kind: "dump", database: "fails" })
      const cut = yield* Effect.exit(failing.io.readFrame)
      // The stream ends inside the announced message.
      expect(Exit.isFailure(cut) || (Exit.isSuccess(cut) && cut.value === null)).toBe(true)
      expect(reads).toBe(3)
      // A client that reads nothing: past dumpTimeoutMs the server closes.
      const stalled = yield* rawConnect(server.address)
      yield* stalled.send({ kind: "dump", database: "slow" })
      const started = Date.now()
      // Served, then dropped by the server (the listener counts the connections it serves).
      yield* Effect.sleep("100 millis")
      expect((yield* server.stats).connections).toBe(1)
      const deadline = Date.now() + 10_000
      while ((yield* server.stats).connections > 0) {
        if (Date.now() > deadline) return yield* Effect.dieMessage("the stalled DUMP was not closed")
        yield* Effect.sleep("20 millis")
      }
      expect(Date.now() - started).toBeGreaterThanOrEqual(400)
    }), 60_000)

  it.scopedLive("DUMP of a database many chunks large returns exactly the checkpointed file, a chunk at a time; the dqlite shell's .dump and a large SELECT work", () =>
    Effect.gen(function*() {
      const directory = yield* tempDir
      // No checkpoint: most of the database is in the WAL's committed frames, over the main file.
      const node = yield* startNode(directory, { walCheckpointBytes: 512 * 1024 * 1024 })
      const client = yield* fill(node)
      yield* client.exec("UPDATE t SET s = 'changed' WHERE n % 7 = 0")
      expect(fs.statSync(`${node.databasePath}-wal`).size).toBeGreaterThan(20 * 1024 * 1024)
      const raw = yield* rawConnect(node.address)
      const files = yield* raw.call({ kind: "dump", database: "test" })
      if (files.kind !== "files") return yield* Effect.dieMessage(`DUMP answered ${JSON.stringify(files)}`)
      expect(files.files.map((f) => f.name)).toEqual(["test", "test-wal"])
      expect(files.files[1]!.data.byteLength).toBe(0)
      const image = files.files[0]!.data
      // Read from the files in chunks, never as one buffer.
      const chunk = gatewayLimitsDefault.dumpChunkBytes
      expect(image.byteLength).toBeGreaterThan(20 * chunk)
      expect(node.dumpReads.length).toBe(Math.ceil(image.byteLength / chunk))
      expect(Math.max(...node.dumpReads)).toBe(chunk)
      // The reference: a copy of the files, checkpointed by SQLite.
      const copy = path.join(directory, "copy.db")
      fs.copyFileSync(node.databasePath, copy)
      fs.copyFileSync(`${node.databasePath}-wal`, `${copy}-wal`)
      const db = new Database(copy)
      db.pragma("wal_checkpoint(TRUNCATE)")
      db.close()
      expect(Buffer.from(image).equals(fs.readFileSync(copy))).toBe(true)
      // The image is a database with every committed change.
      const dumped = path.join(directory, "dumped.db")
      fs.writeFileSync(dumped, image)
      const check = new Database(dumped, { readonly: true })
      expect(check.prepare("SELECT count(*) AS c, sum(s = 'changed') AS k FROM t").get()).toEqual({ c: rows, k: Math.floor(rows / 7) })
      check.close()
      if (dqliteBinary !== null) {
        const out = path.join(directory, "shell")
        fs.mkdirSync(out)
        expect(yield* shell(["-s", node.address, "test", `.dump ${node.address} test`], out)).toBe("OK\n")
        expect(fs.readFileSync(path.join(out, "test")).equals(Buffer.from(image))).toBe(true)
        const lines = (yield* shell(["-s", node.address, "test", "SELECT n, s FROM t ORDER BY n"])).split("\n")
        expect(lines.length).toBe(rows + 1)
        expect(lines[rows - 1]!.startsWith(`${rows}|`)).toBe(true)
      }
    }), 120_000)
})
