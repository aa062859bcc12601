// Large results: ROWS batches of about 4 KiB each ending in PART, the last in DONE; a big blob in
// one message; integer edge values both ways; INTERRUPT in the middle of a stream.
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { headerBytes, rowsBatchBytesTarget } from "../../../src/net/protocol/codes.ts"
import type { RowsResponse } from "../../../src/net/protocol/responses.ts"
import { decodeResponse } from "../../../src/net/protocol/responses.ts"
import type { Value } from "../../../src/net/protocol/values.ts"
import { Values, int64Max, int64Min } from "../../../src/net/protocol/values.ts"
import { execSql, querySql, rawConnect, startGateway } from "./harness.ts"

/** Reads ROWS messages until DONE; returns each message's size and decoded form. */
const readAllBatches = (c: { readonly receiveFrame: Effect.Effect<import("../../../src/net/protocol/framing.ts").Frame | null> }) =>
  Effect.gen(function*() {
    const batches: Array<{ readonly bytes: number; readonly rows: RowsResponse }> = []
    for (;;) {
      const frame = yield* c.receiveFrame
      if (frame === null) throw new Error("connection closed mid-stream")
      const response = decodeResponse(frame)
      if (response.kind !== "rows") throw new Error(`expected ROWS, got ${JSON.stringify(response)}`)
      batches.push({ bytes: headerBytes + frame.body.byteLength, rows: response })
      if (response.end === "done") return batches
    }
  })

describe("gateway: paging", () => {
  it.scopedLive("10,000 rows arrive complete and in order through many ROWS parts of about 4 KiB", () =>
    Effect.gen(function*() {
      const gateway = yield* startGateway()
      const c = yield* rawConnect(gateway.address)
      yield* c.open()
      yield* c.call(execSql("CREATE TABLE t (n INTEGER, s TEXT)"))
      yield* c.call(execSql("WITH RECURSIVE k(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM k WHERE n < 10000) INSERT INTO t SELECT n, 'row ' || n FROM k"))
      yield* c.send(querySql("SELECT n, s FROM t ORDER BY n"))
      const batches = yield* readAllBatches(c)
      expect(batches.length).toBeGreaterThan(10)
      const rows = batches.flatMap((b) => b.rows.rows)
      expect(rows.length).toBe(10_000)
      rows.forEach((row, index) => expect(row).toEqual([Values.integer(index + 1), Values.text(`row ${index + 1}`)]))
      for (const [index, batch] of batches.entries()) {
        // Every batch repeats the column names; all but the last end in PART.
        expect(batch.rows.columns).toEqual(["n", "s"])
        expect(batch.rows.end).toBe(index === batches.length - 1 ? "done" : "part")
        // A batch stops once it reached the target, so it exceeds it by less than one row (+ marker).
        expect(batch.bytes).toBeLessThan(rowsBatchBytesTarget + 64)
        if (index < batches.length - 1) expect(batch.bytes).toBeGreaterThanOrEqual(rowsBatchBytesTarget)
      }
      // The connection is ready for the next request.
      expect(yield* c.call(querySql("SELECT count(*) FROM t"))).toMatchObject({ rows: [[Values.integer(10_000)]], end: "done" })
    }))

  it.scopedLive("a 3 MiB blob goes whole in one message, both ways", () =>
    Effect.gen(function*() {
      const gateway = yield* startGateway()
      const c = yield* rawConnect(gateway.address)
      yield* c.open()
      const blob = new Uint8Array(3 * 1024 * 1024 + 3)
      for (let i = 0; i < blob.length; i++) blob[i] = (i * 7 + (i >> 10)) & 0xff
      yield* c.call(execSql("CREATE TABLE b (x BLOB)"))
      expect(yield* c.call(execSql("INSERT INTO b VALUES (?)", [Values.blob(blob)]))).toMatchObject({ kind: "result", rowsAffected: 1n })
      yield* c.call(execSql("INSERT INTO b VALUES (x'01')"))
      yield* c.send(querySql("SELECT x, length(x) FROM b ORDER BY rowid"))
      const batches = yield* readAllBatches(c)
      // The big row ends its batch at once; the small row follows in the next one.
      expect(batches.map((b) => b.rows.rows.length)).toEqual([1, 1])
      const [big, length] = batches[0]!.rows.rows[0]!
      // Buffer.equals: a deep toEqual over 3 MiB element by element takes seconds.
      expect(big?.kind === "blob" && Buffer.from(big.value).equals(Buffer.from(blob))).toBe(true)
      expect(length).toEqual(Values.integer(blob.length))
      expect(batches[1]!.rows.rows[0]).toEqual([Values.blob(new Uint8Array([1])), Values.integer(1)])
    }))

  it.scopedLive("integer edge values round-trip as parameters and as rows", () =>
    Effect.gen(function*() {
      const gateway = yield* startGateway()
      const c = yield* rawConnect(gateway.address)
      yield* c.open()
      const edges: Array<bigint> = [int64Min, int64Min + 1n, -(2n ** 53n) - 1n, -(2n ** 53n) + 1n, -1n, 0n, 1n, 2n ** 53n - 1n, 2n ** 53n, 2n ** 53n + 1n, int64Max - 1n, int64Max]
      yield* c.call(execSql("CREATE TABLE i (v INTEGER)"))
      for (const edge of edges) yield* c.call(execSql("INSERT INTO i VALUES (?)", [Values.integer(edge)]))
      const response = yield* c.call(querySql("SELECT v, typeof(v), v = ? FROM i ORDER BY rowid", [Values.integer(int64Max)]))
      if (response.kind !== "rows") throw new Error(JSON.stringify(response))
      expect(response.rows.map((row) => row[0])).toEqual(edges.map((e) => Values.integer(e)))
      expect(response.rows.every((row) => (row[1] as Value & { value: string }).value === "integer")).toBe(true)
      expect(response.rows.map((row) => row[2])).toEqual(edges.map((e) => Values.integer(e === int64Max ? 1 : 0)))
      // Floats: the extremes of a double keep their bits.
      const floats = [Number.MIN_VALUE, -Number.MAX_VALUE, 0.1, 1e300]
      const f = yield* c.call(querySql("SELECT ?, ?, ?, ?", floats.map(Values.float)))
      expect(f).toMatchObject({ rows: [floats.map(Values.float)] })
    }))

  it.scopedLive("INTERRUPT during a stream stops it with EMPTY; the connection keeps serving", () =>
    Effect.gen(function*() {
      const gateway = yield* startGateway({ limits: { writeTimeoutMs: 5_000 } })
      const c = yield* rawConnect(gateway.address)
      yield* c.open()
      yield* c.call(execSql("CREATE TABLE t (n INTEGER, s TEXT)"))
      yield* c.call(execSql("WITH RECURSIVE k(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM k WHERE n < 100000) INSERT INTO t SELECT n, hex(randomblob(20)) FROM k"))
      yield* c.send(querySql("SELECT n, s FROM t"))
      const first = decodeResponse((yield* c.receiveFrame)!)
      expect(first).toMatchObject({ kind: "rows", end: "part" })
      yield* c.send({ kind: "interrupt", dbId: 0n })
      // As go-dqlite does: discard everything until EMPTY.
      let discarded = 0
      for (;;) {
        const response = decodeResponse((yield* c.receiveFrame)!)
        if (response.kind === "empty") break
        expect(response.kind).toBe("rows")
        discarded++
      }
      // 100,000 rows are ~1,200 batches: the stream stopped long before the end.
      expect(discarded).toBeLessThan(1000)
      expect(yield* c.call(querySql("SELECT count(*) FROM t"))).toMatchObject({ rows: [[Values.integer(100_000)]] })
      // INTERRUPT with nothing running: EMPTY.
      expect(yield* c.call({ kind: "interrupt", dbId: 0n })).toEqual({ kind: "empty" })
    }))
})
