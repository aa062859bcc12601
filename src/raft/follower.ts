// What a follower does with its leader's messages: append with the consistency check, truncate
// a conflicting suffix, follow the commit index, install snapshots.
import { assert } from "../assert.ts"
import { firstIndexOfTerm, lastIndex, matchTerm, restore, termAt, truncateFrom } from "./log.ts"
import type { AppendEntries, Heartbeat, InstallSnapshot } from "./messages.ts"
import { appendEntry } from "./roles.ts"
import type { Step } from "./state.ts"
import { refreshMembership, send } from "./state.ts"
import type { LogIndex } from "./types.ts"

export function handleAppendEntries(step: Step, m: AppendEntries): void {
  const s = step.s
  s.electionElapsed = 0
  s.leader = m.from
  const reply = (success: boolean, index: LogIndex, hintIndex = 0, hintTerm = 0) =>
    send(step, {
      _tag: "AppendEntriesResponse",
      from: s.config.id,
      to: m.from,
      term: s.term,
      success,
      index,
      hintIndex,
      hintTerm
    })
  if (m.prevIndex < s.log.committed) {
    // Everything up to commit already matches: say so, and the leader moves on from there.
    reply(true, s.log.committed)
    return
  }
  if (!matchTerm(s.log, m.prevIndex, m.prevTerm)) {
    const last = lastIndex(s.log)
    if (m.prevIndex > last) {
      reply(false, m.prevIndex, last + 1, 0)
    } else {
      const term = termAt(s.log, m.prevIndex)
      assert(term !== undefined, "prevIndex at or above commit is in the log")
      reply(false, m.prevIndex, firstIndexOfTerm(s.log, m.prevIndex, term), term)
    }
    return
  }
  let i = 0
  for (; i < m.entries.length; i++) {
    const entry = m.entries[i]
    if (entry === undefined || termAt(s.log, entry.index) !== entry.term) break
  }
  if (i < m.entries.length) {
    const first = m.entries[i]
    assert(first !== undefined, "conflict entry present")
    if (first.index <= lastIndex(s.log)) truncateSuffix(step, first.index)
    for (; i < m.entries.length; i++) {
      const entry = m.entries[i]
      if (entry !== undefined) appendEntry(step, entry)
    }
  }
  const lastNew = m.prevIndex + m.entries.length
  commitTo(step, Math.min(m.commit, lastNew))
  reply(true, lastNew)
}

export function handleHeartbeat(step: Step, m: Heartbeat): void {
  const s = step.s
  s.electionElapsed = 0
  s.leader = m.from
  // The leader sends min(our match, its commit), which is always in our log.
  commitTo(step, Math.min(m.commit, lastIndex(s.log)))
  send(step, { _tag: "HeartbeatResponse", from: s.config.id, to: m.from, term: s.term, context: m.context })
}

export function handleInstallSnapshot(step: Step, m: InstallSnapshot): void {
  const s = step.s
  s.electionElapsed = 0
  s.leader = m.from
  const meta = m.meta
  const reply = (index: LogIndex) =>
    send(step, { _tag: "InstallSnapshotResponse", from: s.config.id, to: m.from, term: s.term, index })
  if (meta.index <= s.log.committed) {
    reply(s.log.committed)
    return
  }
  if (matchTerm(s.log, meta.index, meta.term)) {
    // We already hold the entries the snapshot covers: just follow the commit.
    commitTo(step, meta.index)
    reply(meta.index)
    return
  }
  assert(step.out.entries.length === 0 && step.out.truncateFrom === null, "snapshot restore mixed with appends in one step")
  restore(s.log, meta.index, meta.term)
  s.snapshot = meta
  s.configs = []
  refreshMembership(s)
  step.out.snapshot = meta
  reply(meta.index)
}

function commitTo(step: Step, index: LogIndex): void {
  if (index > step.s.log.committed) step.s.log.committed = index
}

function truncateSuffix(step: Step, index: LogIndex): void {
  const s = step.s
  assert(step.out.entries.length === 0, "truncation after appends in one step")
  truncateFrom(s.log, index)
  s.configs = s.configs.filter((c) => c.index < index)
  refreshMembership(s)
  step.out.truncateFrom = step.out.truncateFrom === null ? index : Math.min(step.out.truncateFrom, index)
}
