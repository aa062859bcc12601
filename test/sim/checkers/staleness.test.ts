import { describe, expect, it } from "vitest"
import type { Entry } from "../../../src/raft/types.ts"
import { encodeCommand } from "../kv.ts"
import { checkLevelReads, effectiveWrites } from "./staleness.ts"

const command = (index: number, c: Parameters<typeof encodeCommand>[0]): Entry => ({ kind: "command", term: 1, index, data: encodeCommand(c) })

// k=a at 1, k=b at 3 (a cas that applies), a failed cas at 4 (expects a), k=c at 5.
const log = new Map<number, Entry>([
  [1, command(1, { op: 1, kind: "write", key: "k", value: "a" })],
  [2, { kind: "barrier", term: 2, index: 2 }],
  [3, command(3, { op: 3, kind: "cas", key: "k", expected: "a", value: "b" })],
  [4, command(4, { op: 4, kind: "cas", key: "k", expected: "a", value: "x" })],
  [5, command(5, { op: 5, kind: "write", key: "k", value: "c" })]
])

describe("the staleness checkers", () => {
  it("place every value at the index of the write that set it, skipping failed compare-and-sets", () => {
    expect(effectiveWrites(log).get("k")).toEqual([
      { value: "a", index: 1 },
      { value: "b", index: 3 },
      { value: "c", index: 5 }
    ])
  })

  it("a session read older than the session's index is flagged; at or after it is not", () => {
    const writes = effectiveWrites(log)
    const read = (value: string | null, sessionIndex: number) => ({ client: 1, key: "k", value, level: "session" as const, invokedTick: 10, sessionIndex, boundTicks: 0 })
    expect(checkLevelReads([read("b", 4), read("c", 4), read("a", 2), read(null, 0)], [], writes)).toEqual([])
    const stale = checkLevelReads([read("a", 4), read(null, 1)], [], writes)
    expect(stale.map((v) => v.invariant)).toEqual(["session", "session"])
  })

  it("a bounded read missing a write acknowledged more than its bound before it is flagged", () => {
    const writes = effectiveWrites(log)
    const acked = [{ key: "k", value: "b", index: 3, ackedTick: 20 }]
    const read = (value: string, invokedTick: number) => ({ client: 2, key: "k", value, level: "bounded" as const, invokedTick, sessionIndex: 0, boundTicks: 5 })
    // Within the bound (acknowledged 4 ticks before), or reflecting it: fine.
    expect(checkLevelReads([read("a", 24), read("b", 40), read("c", 40)], acked, writes)).toEqual([])
    expect(checkLevelReads([read("a", 25)], acked, writes).map((v) => v.invariant)).toEqual(["bounded-staleness"])
  })
})
