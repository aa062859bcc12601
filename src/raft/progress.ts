// What a leader knows about each follower it replicates to, and the bounded window of
// AppendEntries in flight to it (pipelining).
import type { LogIndex } from "./types.ts"

export type ProgressState = "probe" | "replicate" | "snapshot"

export interface Inflight {
  readonly last: LogIndex
  readonly bytes: number
}

export interface Progress {
  /** Highest index known to match the leader's log. */
  match: LogIndex
  /** Next index to send. */
  next: LogIndex
  /** probe: one AppendEntries at a time until the match point is found; replicate: pipeline;
   * snapshot: an InstallSnapshot is on its way, send nothing else. */
  state: ProgressState
  /** In probe: an AppendEntries is out and unanswered, so hold the next one. */
  probeSent: boolean
  inflights: Inflight[]
  inflightBytes: number
  /** Heard from since the last check-quorum round. */
  recentActive: boolean
  /** Leader ticks since this follower last answered: how long it has been out of touch, for
   * whoever manages roles (check-quorum's recentActive only covers the current round). */
  silentTicks: number
  /** Leader tick at which the newest heartbeat round this follower acknowledged was sent
   * (−1 when none this term): the follower refuses votes until an election timeout after it. */
  leaseTick: number
  /** In snapshot state: index of the snapshot sent and ticks since it was sent. */
  snapshotIndex: LogIndex
  snapshotElapsed: number
  /** The highest commit index the messages sent to it let it adopt (an append's commit up to
   * its last entry, a heartbeat's): below min(next − 1, commit) the leader owes it the commit. */
  commitSent: LogIndex
}

export function makeProgress(next: LogIndex): Progress {
  return {
    match: 0,
    next,
    state: "probe",
    probeSent: false,
    inflights: [],
    inflightBytes: 0,
    recentActive: true,
    silentTicks: 0,
    leaseTick: -1,
    snapshotIndex: 0,
    snapshotElapsed: 0,
    commitSent: 0
  }
}

export function inflightFull(pr: Progress, countMax: number, bytesMax: number): boolean {
  return pr.inflights.length >= countMax || pr.inflightBytes >= bytesMax
}

export function addInflight(pr: Progress, last: LogIndex, bytes: number): void {
  pr.inflights.push({ last, bytes })
  pr.inflightBytes += bytes
}

/** Frees every in-flight append acknowledged by a match up to `index`. */
export function freeInflightsUpTo(pr: Progress, index: LogIndex): void {
  let n = 0
  while (n < pr.inflights.length && (pr.inflights[n]?.last ?? Infinity) <= index) {
    pr.inflightBytes -= pr.inflights[n]?.bytes ?? 0
    n++
  }
  if (n > 0) pr.inflights.splice(0, n)
}

export function freeFirstInflight(pr: Progress): void {
  const first = pr.inflights.shift()
  if (first !== undefined) pr.inflightBytes -= first.bytes
}

export function becomeProbe(pr: Progress): void {
  pr.state = "probe"
  pr.next = pr.match + 1
  pr.probeSent = false
  pr.inflights = []
  pr.inflightBytes = 0
}

export function becomeReplicate(pr: Progress): void {
  pr.state = "replicate"
  pr.next = pr.match + 1
  pr.probeSent = false
  pr.inflights = []
  pr.inflightBytes = 0
}

export function becomeSnapshot(pr: Progress, snapshotIndex: LogIndex): void {
  pr.state = "snapshot"
  pr.snapshotIndex = snapshotIndex
  pr.snapshotElapsed = 0
  pr.probeSent = false
  pr.inflights = []
  pr.inflightBytes = 0
}
