// The chaos checkers on known-good and known-bad histories: each bug the suite claims to catch
// is caught, and unknown outcomes are treated as maybe-applied.
import { describe, expect, it } from "vitest"
import { checkBank, checkList, checkRegister, checkSet, finalClient } from "./checkers.ts"
import type { ChaosOp, OpType, Workload } from "./history.ts"
import { parseOpLine } from "./history.ts"

function op(workload: Workload, client: string, f: string, value: unknown, invokedAt: number, completedAt: number | null, type: OpType = "ok", result?: unknown): ChaosOp {
  return { workload, client, f, value, invokedAt, completedAt: type === "info" ? null : completedAt, type, ...(result !== undefined ? { result } : {}) }
}

const kinds = (violations: ReadonlyArray<{ kind: string }>) => violations.map((v) => v.kind)

describe("set", () => {
  const adds = [
    op("set", "g1", "add", "a", 0, 1),
    op("set", "t1", "add", "b", 0, 2),
    op("set", "g1", "add", "c", 3, null, "info"),
    op("set", "t1", "add", "d", 3, 4, "fail")
  ]
  it("accepts every acknowledged element, with or without the unknown one", () => {
    expect(checkSet([...adds, op("set", finalClient, "read", null, 10, 11, "ok", ["a", "b"])])).toEqual([])
    expect(checkSet([...adds, op("set", finalClient, "read", null, 10, 11, "ok", ["b", "c", "a"])])).toEqual([])
  })
  it("catches a lost acknowledged element", () => {
    expect(kinds(checkSet([...adds, op("set", finalClient, "read", null, 10, 11, "ok", ["a", "c"])]))).toEqual(["lost"])
  })
  it("catches a phantom and a certainly failed add that shows up", () => {
    expect(kinds(checkSet([...adds, op("set", finalClient, "read", null, 10, 11, "ok", ["a", "b", "z"])]))).toEqual(["phantom"])
    expect(kinds(checkSet([...adds, op("set", finalClient, "read", null, 10, 11, "ok", ["a", "b", "d"])]))).toEqual(["failed-applied"])
  })
  it("wants a final read", () => {
    expect(kinds(checkSet(adds))).toEqual(["no-final-read"])
  })
})

describe("register (WGL)", () => {
  const w = (client: string, key: number, value: string, t0: number, t1: number | null, type: OpType = "ok") =>
    op("register", client, "write", { key, value }, t0, t1, type)
  const r = (client: string, key: number, value: string | null, t0: number, t1: number) => op("register", client, "read", { key }, t0, t1, "ok", { value })
  const cas = (client: string, key: number, expected: string | null, value: string, applied: boolean | null, t0: number, t1: number | null) =>
    op("register", client, "cas", { key, expected, value }, t0, t1, applied === null ? "info" : "ok", applied === null ? undefined : { applied })

  it("accepts a linearizable history with cas and an unknown write", () => {
    const ops = [
      w("g1", 1, "a", 0, 10),
      cas("t1", 1, "a", "b", true, 20, 30),
      w("g2", 1, "c", 35, null, "info"),
      r("t2", 1, "b", 40, 50),
      cas("g1", 1, "a", "d", false, 60, 70),
      r("t1", 1, "c", 80, 90)
    ]
    expect(checkRegister(ops).violations).toEqual([])
  })
  it("catches a stale read", () => {
    const ops = [w("g1", 1, "a", 0, 10), w("g1", 1, "b", 20, 30), r("t1", 1, "a", 40, 50)]
    expect(kinds(checkRegister(ops).violations)).toEqual(["not-linearizable"])
  })
  it("catches a cas that succeeded on a value the register no longer held", () => {
    const ops = [w("g1", 1, "a", 0, 10), cas("t1", 1, "a", "b", true, 20, 30), cas("g2", 1, "a", "c", true, 40, 50)]
    expect(kinds(checkRegister(ops).violations)).toEqual(["not-linearizable"])
  })
  it("leaves out certain failures: a failed write never explains a read", () => {
    const ops = [w("g1", 1, "a", 0, 10), w("g2", 1, "x", 20, 30, "fail"), r("t1", 1, "x", 40, 50)]
    expect(kinds(checkRegister(ops).violations)).toEqual(["not-linearizable"])
  })
})

describe("bank", () => {
  const setup = { accounts: 3, total: 300 }
  const read = (client: string, balances: Record<string, number>) => op("bank", client, "read", null, 5, 6, "ok", { balances })
  it("accepts reads with the right total", () => {
    const ops = [op("bank", "g1", "transfer", { from: 0, to: 1, amount: 5 }, 0, 1), read("t1", { 0: 95, 1: 105, 2: 100 }), read(finalClient, { 0: 95, 1: 105, 2: 100 })]
    expect(checkBank(ops, setup)).toEqual([])
  })
  it("catches a read with the wrong total or a missing account", () => {
    expect(kinds(checkBank([read("t1", { 0: 95, 1: 100, 2: 100 }), read(finalClient, { 0: 100, 1: 100, 2: 100 })], setup))).toEqual(["wrong-total"])
    expect(kinds(checkBank([read(finalClient, { 0: 150, 1: 150 })], setup))).toEqual(["wrong-total"])
  })
})

describe("list-append", () => {
  const append = (client: string, value: string, t0: number, t1: number | null, type: OpType = "ok") => op("list", client, "append", { key: 7, value }, t0, t1, type)
  const read = (client: string, values: ReadonlyArray<string>, t0: number) => op("list", client, "read", { key: 7 }, t0, t0 + 1, "ok", { values })
  const appends = [append("g1", "a", 0, 1), append("t1", "b", 2, 3), append("g2", "c", 4, null, "info")]
  it("accepts prefixes of one order, with or without the unknown append", () => {
    expect(checkList([...appends, read("t2", ["a"], 1.5), read("g1", ["a", "b"], 3.5), read(finalClient, ["a", "b", "c"], 10)])).toEqual([])
    expect(checkList([...appends, read(finalClient, ["a", "b"], 10)])).toEqual([])
  })
  it("catches a duplicate", () => {
    expect(kinds(checkList([...appends, read(finalClient, ["a", "b", "a"], 10)]))).toContain("duplicate")
  })
  it("catches a read in another order", () => {
    expect(kinds(checkList([...appends, read("t2", ["b", "a"], 5), read(finalClient, ["a", "b"], 10)]))).toEqual(["order"])
  })
  it("catches a lost acknowledged append and a phantom", () => {
    expect(kinds(checkList([...appends, read(finalClient, ["b"], 10)]))).toEqual(["lost"])
    expect(kinds(checkList([...appends, read(finalClient, ["a", "b", "q"], 10)]))).toEqual(["phantom"])
  })
})

describe("the Go client's lines", () => {
  it("parse into operations, and a line whose completion contradicts its type is refused", () => {
    const parsed = parseOpLine(`{"workload":"set","client":"g1","f":"add","value":"g1-1","invokedAt":1.5,"completedAt":2.5,"type":"ok"}`)
    expect(parsed).toEqual({ workload: "set", client: "g1", f: "add", value: "g1-1", invokedAt: 1.5, completedAt: 2.5, type: "ok" })
    expect(() => parseOpLine(`{"workload":"set","client":"g1","f":"add","value":"x","invokedAt":1,"completedAt":2,"type":"info"}`)).toThrow()
  })
})
