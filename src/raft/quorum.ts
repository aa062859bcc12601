// Majority arithmetic, pure and separately tested.
import type { LogIndex, NodeId } from "./types.ts"

export function quorumSize(voterCount: number): number {
  return Math.floor(voterCount / 2) + 1
}

/** The highest index that a majority of voters has. `matchOf` gives each voter's match. */
export function committedIndex(voterIds: ReadonlyArray<NodeId>, matchOf: (id: NodeId) => LogIndex): LogIndex {
  if (voterIds.length === 0) return 0
  const matches = voterIds.map(matchOf).sort((a, b) => b - a)
  return matches[quorumSize(voterIds.length) - 1] ?? 0
}

export type VoteResult = "won" | "lost" | "pending"

/** Tally of an election among `voterIds`: granted and rejected votes by id. */
export function voteResult(voterIds: ReadonlyArray<NodeId>, votes: ReadonlyMap<NodeId, boolean>): VoteResult {
  const needed = quorumSize(voterIds.length)
  let granted = 0
  let rejected = 0
  for (const id of voterIds) {
    const vote = votes.get(id)
    if (vote === true) granted++
    else if (vote === false) rejected++
  }
  if (granted >= needed) return "won"
  if (rejected > voterIds.length - needed) return "lost"
  return "pending"
}
