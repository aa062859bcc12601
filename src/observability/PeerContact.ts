// When this node last heard from each peer (any Raft message), by Effect's Clock. The node wiring
// records every inbound envelope; health reads it to tell a follower that still hears its leader
// from one cut off, and a leader that still hears a quorum from one about to step down.
import { Clock, Effect } from "effect"
import type { NodeId } from "../raft/types.ts"

/** Distinct senders remembered; peers are the configuration's members, so this is never reached
 * in practice, and forgetting everyone only makes health stricter until the next heartbeat. */
export const sendersMax = 1024

export interface PeerContact {
  readonly heard: (from: NodeId) => Effect.Effect<void>
  /** The same in plain code, at `nowMs` of the node's clock. */
  readonly heardAt: (from: NodeId, nowMs: number) => void
  /** Clock time (ms) of the last message from `peer`, or null if none arrived. */
  readonly lastHeardMs: (peer: NodeId) => number | null
}

export const make = (): PeerContact => {
  const last = new Map<NodeId, number>()
  const heardAt = (from: NodeId, now: number) => {
    if (last.size >= sendersMax && !last.has(from)) last.clear()
    last.set(from, now)
  }
  return {
    heard: (from) => Effect.map(Clock.currentTimeMillis, (now) => heardAt(from, now)),
    heardAt,
    lastHeardMs: (peer) => last.get(peer) ?? null
  }
}
