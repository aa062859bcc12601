// The largest Raft entry a node's state machine proposes, checked against every bound it must
// pass through, once, when the node starts (issue 17: a 20 MiB transaction never committed, and
// nothing said which bound it met). The bounds stay where they live (src/sqlite/limits.ts,
// src/raft/config.ts, src/net/peers/limits.ts, src/storage/LogStore.ts); only their relation to
// the entry is asserted here, the one place that sees them all.
import { assert } from "../assert.ts"
import type { PeerLimits } from "../net/peers/limits.ts"
import type { RaftConfig } from "../raft/config.ts"
import { entryHeaderBytes } from "../raft/types.ts"
import { persistBytesMax } from "../storage/LogStore.ts"

/** Throws an AssertionError naming the first bound that one entry of `entryBytesMax` bytes of
 * data (e.g. SQLite's `writeEntryBytesMax`: a transaction of `transactionBytesMax` with its
 * header) would not pass: the entry would be refused, dropped or never sent, again and again. */
export function assertEntryBounds(entryBytesMax: number, raft: RaftConfig, peers: PeerLimits): void {
  const entry = entryBytesMax + entryHeaderBytes
  const fits = (bound: number, name: string, why: string) =>
    assert(entry <= bound, `an entry of ${entry} bytes (the largest transaction) exceeds ${name} (${bound}): ${why}`)
  fits(persistBytesMax, "the log's persistBytesMax", "the log writer could never make it durable")
  fits(peers.frameBytesMax, "the peers' frameBytesMax", "a link would drop it as too large for a frame, at every retry")
  fits(peers.outboundBytesMax, "the peers' outboundBytesMax", "it could not wait in a link's queue beside anything else")
  fits(raft.inflightBytesMax, "Raft's inflightBytesMax", "a follower's pipeline could not hold it")
  fits(raft.entryCacheBytesMax, "Raft's entryCacheBytesMax", "it would be evicted as soon as durable and read back for every follower")
  fits(raft.applyInflightBytesMax, "Raft's applyInflightBytesMax", "the applier could hold it only alone")
  fits(raft.uncommittedBytesMax, "Raft's uncommittedBytesMax", "the leader would refuse it as overload")
  // A link's queue holds a follower's whole window and one more entry: Raft's own traffic to a
  // peer that reads is never dropped by the queue (only by a peer that stopped reading, which
  // stallTimeoutMs ends with a reconnect).
  assert(
    raft.inflightBytesMax + entry <= peers.outboundBytesMax,
    `the peers' outboundBytesMax (${peers.outboundBytesMax}) holds Raft's inflightBytesMax (${raft.inflightBytesMax}) plus the largest entry (${entry})`
  )
}
