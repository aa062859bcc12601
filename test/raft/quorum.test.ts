import { describe, expect, it } from "vitest"
import { committedIndex, quorumSize, voteResult } from "../../src/raft/quorum.ts"
import type { NodeId } from "../../src/raft/types.ts"

describe("quorumSize", () => {
  it.each([
    [1, 1],
    [2, 2],
    [3, 2],
    [4, 3],
    [5, 3],
    [6, 4],
    [7, 4]
  ])("%i voters need %i", (voterCount, needed) => {
    expect(quorumSize(voterCount)).toBe(needed)
  })
})

describe("committedIndex", () => {
  const cases: Array<{ matches: number[]; committed: number }> = [
    { matches: [], committed: 0 },
    { matches: [7], committed: 7 },
    { matches: [5, 3], committed: 3 },
    { matches: [5, 3, 1], committed: 3 },
    { matches: [1, 5, 3], committed: 3 },
    { matches: [9, 9, 0], committed: 9 },
    { matches: [9, 0, 0], committed: 0 },
    { matches: [4, 4, 4, 1], committed: 4 },
    { matches: [4, 3, 2, 1], committed: 2 },
    { matches: [10, 8, 6, 4, 2], committed: 6 },
    { matches: [2, 4, 6, 8, 10], committed: 6 }
  ]
  it.each(cases)("$matches → $committed", ({ matches, committed }) => {
    const ids = matches.map((_, i) => i + 1)
    expect(committedIndex(ids, (id) => matches[id - 1] ?? -1)).toBe(committed)
  })

  it("asks only about the voters it is given", () => {
    const asked: NodeId[] = []
    committedIndex([2, 4], (id) => {
      asked.push(id)
      return id
    })
    expect(asked.sort()).toEqual([2, 4])
  })
})

describe("voteResult", () => {
  const cases: Array<{ voters: number; granted: number[]; rejected: number[]; result: string }> = [
    { voters: 1, granted: [1], rejected: [], result: "won" },
    { voters: 1, granted: [], rejected: [], result: "pending" },
    { voters: 3, granted: [1], rejected: [], result: "pending" },
    { voters: 3, granted: [1, 2], rejected: [], result: "won" },
    { voters: 3, granted: [1], rejected: [2], result: "pending" },
    { voters: 3, granted: [1], rejected: [2, 3], result: "lost" },
    { voters: 4, granted: [1, 2], rejected: [3], result: "pending" },
    { voters: 4, granted: [1], rejected: [2, 3], result: "lost" },
    { voters: 4, granted: [1, 2, 3], rejected: [4], result: "won" },
    { voters: 5, granted: [1, 2], rejected: [3, 4], result: "pending" },
    { voters: 5, granted: [1, 2], rejected: [3, 4, 5], result: "lost" }
  ]
  it.each(cases)("$voters voters, granted $granted, rejected $rejected → $result", ({ voters, granted, rejected, result }) => {
    const votes = new Map<NodeId, boolean>([...granted.map((id) => [id, true] as const), ...rejected.map((id) => [id, false] as const)])
    const ids = Array.from({ length: voters }, (_, i) => i + 1)
    expect(voteResult(ids, votes)).toBe(result)
  })

  it("ignores votes from nodes that are not voters", () => {
    const votes = new Map<NodeId, boolean>([
      [1, true],
      [7, true],
      [8, true]
    ])
    expect(voteResult([1, 2, 3], votes)).toBe("pending")
    const rejections = new Map<NodeId, boolean>([
      [1, true],
      [7, false],
      [8, false]
    ])
    expect(voteResult([1, 2, 3], rejections)).toBe("pending")
  })
})
