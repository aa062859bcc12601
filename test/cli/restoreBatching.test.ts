// The restore's batching without a cluster: rows become multi-row INSERTs within their bounds,
// and a transaction the cluster refuses as too big is split until its parts fit.
import { Effect } from "effect"
import { describe, expect, it } from "vitest"
import type { RestoreLimits } from "../../src/cli/commands/restore.ts"
import { insertStatements, restoreLimitsDefault, sendSplittingTooBig, validateRestoreLimits } from "../../src/cli/commands/restore.ts"
import type { ParamValue } from "../../src/net/client/values.ts"

const rowsOf = (count: number, width = 3): Array<Array<ParamValue>> =>
  Array.from({ length: count }, (_, i) => Array.from({ length: width }, (_, j) => i * width + j))

describe("restore batching", () => {
  it("packs rows into INSERTs bounded by rows, parameters and bytes per statement", () => {
    const limits: RestoreLimits = { ...restoreLimitsDefault, rowsPerStatementMax: 4, paramsPerStatementMax: 9 }
    const statements = insertStatements(rowsOf(10), (n) => `INSERT ${n}`, limits)
    // 9 parameters / 3 columns: 3 rows per statement.
    expect(statements.map((s) => s.sql)).toEqual(["INSERT 3", "INSERT 3", "INSERT 3", "INSERT 1"])
    expect(statements.flatMap((s) => s.params)).toEqual(rowsOf(10).flat())
    const blobs = [[new Uint8Array(600)], [new Uint8Array(600)], [new Uint8Array(10)]]
    const bySize = insertStatements(blobs, (n) => `INSERT ${n}`, { ...restoreLimitsDefault, bytesPerStatementMax: 1000 })
    expect(bySize.map((s) => s.sql)).toEqual(["INSERT 2", "INSERT 1"])
  })

  it("splits a transaction refused as too big into halves until each fits", async () => {
    const sent: Array<number> = []
    const splits: Array<number> = []
    // A cluster that takes at most 3 rows per transaction.
    const send = (rows: ReadonlyArray<ReadonlyArray<ParamValue>>) =>
      rows.length > 3 ? Effect.fail("too big" as const) : Effect.sync(() => void sent.push(...rows.map((r) => r[0] as number)))
    const transactions = await Effect.runPromise(sendSplittingTooBig(rowsOf(10, 1), send, (e) => e === "too big", (n) => splits.push(n)))
    expect(sent).toEqual(rowsOf(10, 1).flat()) // every row once, in order
    expect(splits).toEqual([10, 5, 5])
    expect(transactions).toBe(4) // 3 + 2 + 3 + 2
  })

  it("gives up on a single row that is too big, and never splits other failures", async () => {
    const tooBig = sendSplittingTooBig(rowsOf(4, 1), () => Effect.fail("too big" as const), (e) => e === "too big", () => {})
    expect(await Effect.runPromise(Effect.flip(tooBig))).toBe("too big")
    let attempts = 0
    const other = sendSplittingTooBig(rowsOf(4, 1), () => Effect.suspend(() => (attempts++, Effect.fail("busy" as const))), (e) => e === "too big" as string, () => {})
    expect(await Effect.runPromise(Effect.flip(other))).toBe("busy")
    expect(attempts).toBe(1)
  })

  it("keeps transactions well below the cluster's transaction bound", () => {
    expect(validateRestoreLimits(restoreLimitsDefault)).toBeNull()
    expect(validateRestoreLimits({ ...restoreLimitsDefault, bytesPerTransactionMax: 20 * 1024 * 1024 })).toMatch(/bytesPerTransactionMax must stay below a third/)
    expect(validateRestoreLimits({ ...restoreLimitsDefault, rowsPerTransactionMax: 0 })).toBe("rowsPerTransactionMax must be a positive integer")
  })
})
