import { describe, expect, it } from "vitest"
import { AssertionError } from "../../src/assert.ts"
import {
  append,
  compactTo,
  entryAt,
  firstIndexOfTerm,
  lastIndex,
  lastIndexOfTerm,
  lastTerm,
  makeLog,
  matchTerm,
  restore,
  slice,
  termAt,
  truncateFrom
} from "../../src/raft/log.ts"
import type { RaftLog } from "../../src/raft/log.ts"
import type { Entry } from "../../src/raft/types.ts"
import { entryHeaderBytes } from "../../src/raft/types.ts"

/** A log whose entries base+1.. have the given terms; each command carries `bytes` of payload. */
function logOf(terms: number[], base = { index: 0, term: 0 }, bytes = 0): RaftLog {
  const entries: Entry[] = terms.map((term, i) => ({ kind: "command", term, index: base.index + 1 + i, data: new Uint8Array(bytes) }))
  return makeLog(base, entries, 0)
}

describe("RaftLog positions", () => {
  it("an empty log", () => {
    const log = logOf([])
    expect([lastIndex(log), lastTerm(log), termAt(log, 0), termAt(log, 1)]).toEqual([0, 0, 0, undefined])
  })

  it("a compacted log answers for its base and nothing below", () => {
    const log = logOf([3, 3, 4], { index: 10, term: 2 })
    expect([lastIndex(log), lastTerm(log)]).toEqual([13, 4])
    expect([9, 10, 11, 13, 14].map((i) => termAt(log, i))).toEqual([undefined, 2, 3, 4, undefined])
    expect(entryAt(log, 10)).toBeUndefined()
    expect(entryAt(log, 11)?.index).toBe(11)
    expect(matchTerm(log, 10, 2)).toBe(true)
    expect(matchTerm(log, 9, 2)).toBe(false)
  })

  it("makeLog starts fully durable, clamps commit into the log and refuses gaps", () => {
    const log = makeLog({ index: 0, term: 0 }, [{ kind: "barrier", term: 1, index: 1 }], 5)
    expect([log.stable, log.committed, log.applied]).toEqual([1, 1, 0])
    expect(() => makeLog({ index: 0, term: 0 }, [{ kind: "barrier", term: 1, index: 2 }], 0)).toThrow(AssertionError)
  })
})

describe("firstIndexOfTerm / lastIndexOfTerm", () => {
  //            1  2  3  4  5  6  7
  const log = logOf([1, 1, 2, 2, 2, 4, 4])
  it.each([
    [5, 2, 3],
    [3, 2, 3],
    [2, 1, 1],
    [7, 4, 6]
  ])("first index of the run containing %i (term %i) is %i", (index, term, first) => {
    expect(firstIndexOfTerm(log, index, term)).toBe(first)
  })
  it("stops at the compacted base", () => {
    expect(firstIndexOfTerm(logOf([2, 2, 2], { index: 4, term: 2 }), 7, 2)).toBe(5)
  })
  it.each([
    [1, 2],
    [2, 5],
    [3, undefined],
    [4, 7],
    [5, undefined]
  ])("last index of term %i is %s", (term, last) => {
    expect(lastIndexOfTerm(log, term)).toBe(last)
  })
})

describe("slice", () => {
  const log = logOf([1, 1, 1, 1, 1], { index: 0, term: 0 }, 100)
  const size = entryHeaderBytes + 100
  it.each([
    { lo: 1, hi: 5, count: 10, bytes: 1e9, expected: [1, 2, 3, 4, 5] },
    { lo: 2, hi: 4, count: 10, bytes: 1e9, expected: [2, 3, 4] },
    { lo: 1, hi: 5, count: 2, bytes: 1e9, expected: [1, 2] },
    { lo: 1, hi: 5, count: 10, bytes: 2 * size, expected: [1, 2] },
    { lo: 1, hi: 5, count: 10, bytes: 2 * size - 1, expected: [1] },
    // One entry always goes, even when it alone exceeds the bound.
    { lo: 3, hi: 5, count: 10, bytes: 1, expected: [3] },
    { lo: 4, hi: 3, count: 10, bytes: 1e9, expected: [] }
  ])("$lo..$hi, count ≤ $count, bytes ≤ $bytes → $expected", ({ lo, hi, count, bytes, expected }) => {
    expect(slice(log, lo, hi, count, bytes).map((e) => e.index)).toEqual(expected)
  })
  it("refuses to slice below the base", () => {
    expect(() => slice(logOf([1], { index: 3, term: 1 }), 3, 4, 10, 1e9)).toThrow(AssertionError)
  })
})

describe("append / truncateFrom / compactTo / restore", () => {
  it("append checks position and term order", () => {
    const log = logOf([1, 2])
    append(log, { kind: "barrier", term: 3, index: 3 })
    expect(lastIndex(log)).toBe(3)
    expect(() => append(log, { kind: "barrier", term: 3, index: 5 })).toThrow(/append at 5 after last 3/)
    expect(() => append(log, { kind: "barrier", term: 2, index: 4 })).toThrow(/term goes backwards/)
  })

  it("truncateFrom drops the suffix and pulls stable back, never below commit", () => {
    const log = logOf([1, 1, 2, 2, 2])
    log.committed = 2
    truncateFrom(log, 4)
    expect([lastIndex(log), log.stable]).toEqual([3, 3])
    expect(() => truncateFrom(log, 2)).toThrow(/truncating committed entry 2/)
  })

  it("compactTo keeps the term of the new base and refuses to pass applied", () => {
    const log = logOf([1, 2, 2, 3, 3])
    log.committed = 5
    log.applied = 4
    compactTo(log, 3)
    expect(log.base).toEqual({ index: 3, term: 2 })
    expect(log.entries.map((e) => e.index)).toEqual([4, 5])
    compactTo(log, 2) // below the base: nothing to do
    expect(log.base.index).toBe(3)
    expect(() => compactTo(log, 5)).toThrow(/past applied/)
  })

  it("restore replaces the log with the snapshot's position", () => {
    const log = logOf([1, 1, 2])
    log.committed = 1
    restore(log, 10, 4)
    expect([log.base, lastIndex(log), lastTerm(log), log.stable, log.committed, log.applied]).toEqual([{ index: 10, term: 4 }, 10, 4, 10, 10, 10])
    expect(() => restore(log, 10, 4)).toThrow(/at or below commit/)
  })
})
