// The leader's read lease (check-quorum lease). Why it is safe: a voter that heard from the
// leader refuses votes for an election timeout of its own ticks (core.ts, stepMessage), and a
// voter that just started refuses them for its first election timeout (it may have promised
// before a crash). So if a quorum of voters acknowledged a heartbeat the leader sent at tick a,
// no other leader can be elected before each of them has ticked electionTicks times after
// receiving it, which is later than the leader's tick a + leaseTicks as long as clocks drift
// less than leaseDriftTicks allows. A leader that sent TimeoutNow asked voters to skip that
// rule: its lease ends for the rest of the term. All of it in ticks; the driver checks the same
// lease against its monotonic clock too, since ticks can run late.
import type { RaftConfig } from "./config.ts"
import { termAt } from "./log.ts"
import { committedIndex } from "./quorum.ts"
import type { RaftState } from "./state.ts"
import { voters } from "./types.ts"

/** How many of its own ticks a leader's lease lasts after the heartbeat round that earned it. */
export function leaseTicks(config: RaftConfig): number {
  if (config.bugs?.leaseTooLong === true) return 5 * config.electionTicks
  return config.electionTicks - config.leaseDriftTicks
}

/** The tick at which the heartbeat round that a quorum of voters acknowledged last was sent
 * (the leader counts itself as of now), when this node may serve lease reads at all: lease
 * mode, leader, an entry of its term committed (before that its commit index may be stale), no
 * TimeoutNow sent this term. Null otherwise. The lease holds while ticks − anchor < leaseTicks. */
export function leaseAnchor(s: RaftState): number | null {
  if (s.role !== "leader" || s.config.readMode !== "lease" || s.leaseRevoked) return null
  if (termAt(s.log, s.log.committed) !== s.term) return null
  const self = s.config.id
  const ids = voters(s.membership)
  if (ids.length === 0) return null
  const anchor = committedIndex(ids, (id) => (id === self ? s.ticks : s.progress.get(id)?.leaseTick ?? -1))
  return anchor < 0 ? null : anchor
}

/** This node is the only voter: nobody else can ever be elected while that lasts, so its lease
 * needs no clock (and no heartbeat) at all. */
export function soleVoter(s: RaftState): boolean {
  const ids = voters(s.membership)
  return ids.length === 1 && ids[0] === s.config.id
}

/** The lease holds now, in ticks. */
export function leaseHolds(s: RaftState): boolean {
  const anchor = leaseAnchor(s)
  return anchor !== null && s.ticks - anchor < leaseTicks(s.config)
}

/** Remembers that a heartbeat round `seq` starts now (one record per tick: later rounds of the
 * same tick share it), forgetting rounds too old to earn a lease. */
export function recordHeartbeatRound(s: RaftState, seq: number): void {
  const last = s.heartbeatRounds[s.heartbeatRounds.length - 1]
  if (last === undefined || last.tick !== s.ticks) s.heartbeatRounds.push({ seq, tick: s.ticks })
  const oldest = s.ticks - Math.max(s.config.electionTicks, leaseTicks(s.config))
  while ((s.heartbeatRounds[0]?.tick ?? Infinity) < oldest) s.heartbeatRounds.shift()
}

/** The tick at which round `seq` was sent, if it is recent enough to count. */
export function heartbeatRoundTick(s: RaftState, seq: number): number | undefined {
  for (let i = s.heartbeatRounds.length - 1; i >= 0; i--) {
    const round = s.heartbeatRounds[i]
    if (round !== undefined && round.seq <= seq) return round.tick
  }
  return undefined
}
