// Elections: pre-vote (ask without disturbing anyone), then the real vote.
import { lastIndex, lastTerm } from "./log.ts"
import { isVoter } from "./membership.ts"
import type { RequestVote, RequestVoteResponse } from "./messages.ts"
import { voteResult } from "./quorum.ts"
import { becomeCandidate, becomeFollower, becomeLeader, becomePreCandidate } from "./roles.ts"
import type { Step } from "./state.ts"
import { send } from "./state.ts"
import { voters } from "./types.ts"

export type ElectionKind = "pre" | "real"

export function campaign(step: Step, kind: ElectionKind, transfer: boolean): void {
  const s = step.s
  if (!isVoter(s.membership, s.config.id)) return
  if (kind === "pre") becomePreCandidate(step)
  else becomeCandidate(step)
  const voteTerm = kind === "pre" ? s.term + 1 : s.term
  s.votes.set(s.config.id, true)
  if (tally(step)) return
  for (const id of voters(s.membership)) {
    if (id === s.config.id) continue
    send(step, {
      _tag: "RequestVote",
      from: s.config.id,
      to: id,
      term: voteTerm,
      pre: kind === "pre",
      lastIndex: lastIndex(s.log),
      lastTerm: lastTerm(s.log),
      transfer
    })
  }
}

export function handleVoteRequest(step: Step, m: RequestVote): void {
  const s = step.s
  const canVote = s.vote === m.from || (s.vote === null && s.leader === null) || (m.pre && m.term > s.term)
  const upToDate = m.lastTerm > lastTerm(s.log) || (m.lastTerm === lastTerm(s.log) && m.lastIndex >= lastIndex(s.log))
  const granted = (canVote || (s.config.bugs?.doubleVote === true && !m.pre)) && upToDate
  if (granted && !m.pre) {
    s.vote = m.from
    s.electionElapsed = 0
  }
  send(step, {
    _tag: "RequestVoteResponse",
    from: s.config.id,
    to: m.from,
    // A granted pre-vote answers in the candidate's future term; anything else in ours.
    term: granted ? m.term : s.term,
    pre: m.pre,
    granted
  })
}

export function handleVoteResponse(step: Step, m: RequestVoteResponse): void {
  const s = step.s
  if (m.pre !== (s.role === "preCandidate")) return
  if (s.role !== "preCandidate" && s.role !== "candidate") return
  if (m.pre && m.granted && m.term !== s.term + 1) return // from an earlier pre-vote round
  if (!isVoter(s.membership, m.from)) return
  s.votes.set(m.from, m.granted)
  tally(step)
}

/** Acts on the votes so far; true when the election is decided. */
function tally(step: Step): boolean {
  const s = step.s
  switch (voteResult(voters(s.membership), s.votes)) {
    case "won":
      if (s.role === "preCandidate") campaign(step, "real", false)
      else becomeLeader(step)
      return true
    case "lost":
      becomeFollower(step, s.term, null)
      return true
    case "pending":
      return false
  }
}
