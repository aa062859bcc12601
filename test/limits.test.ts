// The bounds table (src/limits.ts): the defaults keep every cross-layer relation, each relation
// is caught when one bound breaks it (and only that relation), and a node refuses to start on
// broken bounds, naming the relation, before it opens anything.
import { describe, expect, it } from "@effect/vitest"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Effect, Exit } from "effect"
import type { NodeBoundsOverrides } from "../src/limits.ts"
import { largestAppendFrameBytes, largestWriteEntryBytes, nodeBounds, nodeBoundsDefault, relations, violatedRelations } from "../src/limits.ts"
import * as Node from "../src/node/Node.ts"
import * as SqlNode from "../src/node/SqlNode.ts"
import { Disk } from "../src/storage/Disk.ts"

const mib = 1024 * 1024

/** For each relation, one bound changed so that it alone breaks (others raised where the change
 * would break them too). */
const breaking: ReadonlyArray<readonly [string, NodeBoundsOverrides]> = [
  // A larger transaction also outgrows the in-flight window, the entry cache, the apply window
  // and the link queue: those are raised.
  ["log record holds the largest write entry", { sqlite: { transactionBytesMax: 32 * mib }, raft: { inflightBytesMax: 48 * mib, entryCacheBytesMax: 48 * mib, applyInflightBytesMax: 48 * mib }, peers: { outboundBytesMax: 128 * mib } }],
  ["the SQL surface's copy of the record bound is the log's", { log: { persistBytesMax: 48 * mib } }],
  ["record format holds a persist", { log: { recordPayloadBytesMax: 16 * mib } }],
  ["peer frame holds the largest AppendEntries", { peers: { frameBytesMax: 16 * mib } }],
  ["uncommitted bound holds the largest write entry", { raft: { uncommittedBytesMax: 16 * mib } }],
  ["in-flight window holds the largest write entry", { raft: { inflightBytesMax: 16 * mib } }],
  ["entry cache holds the largest write entry", { raft: { entryCacheBytesMax: 16 * mib } }],
  ["apply in flight holds the largest write entry", { raft: { applyInflightBytesMax: 16 * mib } }],
  ["peer link queue holds the in-flight window plus the largest write entry", { peers: { outboundBytesMax: 48 * mib } }],
  ["commit flush within a tick", { raftActor: { commitFlushMs: 50 } }],
  ["Raft actor batch within its mailbox", { raftActor: { batchMax: 8192 } }],
  ["request timeout outlives an election", { raftActor: { requestTimeoutMs: 6_000, tickMs: 300 } }],
  ["SQL commit wait outlasts Raft's request timeout", { sqlite: { commitTimeoutMs: 5_000 } }],
  ["session read wait within Raft's request timeout", { sqlite: { sessionWaitMs: 10_000 } }]
]

describe("bounds table", () => {
  it("the defaults keep every relation", () => {
    expect(violatedRelations(nodeBoundsDefault)).toEqual([])
    // The numbers the relations weigh: a 30 MiB transaction is a ~30.3 MiB entry, inside the
    // 32 MiB record and the 64 MiB peer frame.
    expect(largestWriteEntryBytes(nodeBoundsDefault)).toBeLessThanOrEqual(nodeBoundsDefault.log.persistBytesMax)
    expect(largestAppendFrameBytes(nodeBoundsDefault)).toBeLessThanOrEqual(nodeBoundsDefault.peers.frameBytesMax)
  })

  it("every relation is proven by one bound that breaks it alone", () => {
    expect(breaking.map(([name]) => name)).toEqual(relations.map((r) => r.name))
    for (const [name, overrides] of breaking) {
      const violated = violatedRelations(nodeBounds(overrides))
      expect(violated.map((v) => v.relation), name).toEqual([name])
      expect(violated[0]!.message).toContain(name)
    }
  })

  it("a node without the SQL surface checks only the relations that do not weigh its bounds", () => {
    const bounds = nodeBounds({ raftActor: { requestTimeoutMs: 3_000, tickMs: 20 } })
    expect(violatedRelations(bounds).map((v) => v.relation)).toEqual(["session read wait within Raft's request timeout"])
    expect(violatedRelations(bounds, { sql: false })).toEqual([])
  })

  it.live("a node refuses to start on broken bounds, naming the relation, before it opens its data dir", () =>
    Effect.gen(function*() {
      const base = fs.mkdtempSync(path.join(os.tmpdir(), "tqlite-bounds-"))
      const dataDir = path.join(base, "node")
      const sql = yield* Effect.exit(Effect.scoped(SqlNode.start({ dataDir, address: "127.0.0.1:0", join: [], sqlite: { transactionBytesMax: 32 * mib } })))
      expect(sql).toMatchObject(Exit.fail({ _tag: "NodeBoundsInvalid", relation: "log record holds the largest write entry" }))
      if (Exit.isFailure(sql)) expect(String((sql.cause as { error?: { message?: string } }).error?.message)).toMatch(/transactionBytesMax 32\.00 MiB.*persistBytesMax 32\.00 MiB/)
      const raw = yield* Effect.exit(Effect.scoped(Node.make({
        dataDir,
        address: "127.0.0.1:0",
        start: { _tag: "Bootstrap" },
        stateMachine: () => Effect.die("not reached"),
        tickMs: 100,
        requestTimeoutMs: 1_000
      })))
      expect(raw).toMatchObject(Exit.fail({ _tag: "NodeBoundsInvalid", relation: "request timeout outlives an election" }))
      expect(fs.existsSync(dataDir)).toBe(false)
      fs.rmSync(base, { recursive: true, force: true })
    }).pipe(Effect.provide(Disk.layerNode)))
})
