// Read-backs for the entry cache (log.ts keeps the data of at most entryCacheBytesMax bytes of
// entries). The core stays pure: when a follower or the applier needs entries whose data was
// evicted, it asks its driver for them in the Ready (`loads`), one read-back at a time; the
// driver reads them from the log store and steps them in (EntriesLoaded). They are used in that
// step — sent in AppendEntries, handed to the applier — and dropped when it ends, so memory holds
// at most the cache plus one read-back (entryLoadBytesMax) plus what is in flight.
import { assert } from "../assert.ts"
import { replicateTo } from "./leader.ts"
import { lastIndex, slotAt } from "./log.ts"
import { inflightFull } from "./progress.ts"
import type { Step } from "./state.ts"
import type { Entry, LogIndex } from "./types.ts"
import { entrySizeBytes } from "./types.ts"

/** The driver's answer to read-back `seq`: the entries that still match the log (index, term and
 * size; by Log Matching an entry with the index and term of ours is ours) are usable for the rest
 * of this step. Anything else — a stale answer, entries truncated or compacted meanwhile, a short
 * or failed read — is dropped, and the need is asked for again (after a tick, if it came back
 * empty). */
export function entriesLoaded(st: Step, seq: number, entries: ReadonlyArray<Entry>): void {
  const s = st.s
  const load = s.entryLoad
  if (load === null || load.seq !== seq) return
  s.entryLoad = null
  const valid: Entry[] = []
  for (const entry of entries) {
    const index = load.lo + valid.length
    if (index > load.hi || entry.index !== index) break
    const slot = slotAt(s.log, index)
    if (slot === undefined || slot.term !== entry.term) break
    if (slot.kind === "evicted" ? entry.kind !== "command" || entrySizeBytes(entry) !== slot.sizeBytes : slot.kind !== entry.kind) break
    valid.push(entry)
  }
  if (valid.length === 0) {
    s.entryLoadHeld = true
    return
  }
  s.log.loaded = { lo: load.lo, entries: valid }
  // Followers whose next entries just arrived get them now; the applier takes its share when the
  // step finishes.
  if (s.role === "leader") for (const id of s.progress.keys()) replicateTo(st, id, false)
}

/** Called on every tick: a read-back unanswered for too long is presumed lost. */
export function tickEntryLoad(st: Step): void {
  const s = st.s
  s.entryLoadHeld = false
  if (s.entryLoad === null) return
  s.entryLoad.elapsedTicks++
  if (s.entryLoad.elapsedTicks >= s.config.entryLoadTimeoutTicks) s.entryLoad = null
}

/** At the end of a step, when no read-back is in flight: asks for the evicted entries someone is
 * waiting for — the applier first (everything else waits on it), then the follower furthest
 * behind among those with room in their pipeline. */
export function scheduleEntryLoad(st: Step): void {
  const s = st.s
  if (s.entryLoad !== null || s.entryLoadHeld) return
  const log = s.log
  let need: LogIndex | null = null
  const applyTo = Math.min(log.committed, log.stable)
  // Only when the applier can take them (the bound `finish` hands out by): else they were read,
  // dropped at the step's end unused, and asked for again at once, a loop that held a follower's
  // event loop while its applier took a 4 GiB snapshot (issue 17). Its next progress report
  // (Applied) is a step, which asks then.
  const applierHasRoom = s.applyInflightBytes === 0 || s.applyInflightBytes < s.config.applyInflightBytesMax
  if (applyTo > log.applied && applierHasRoom && isEvicted(st, log.applied + 1)) need = log.applied + 1
  if (need === null && s.role === "leader") {
    const last = lastIndex(log)
    for (const pr of s.progress.values()) {
      const ready = pr.state === "replicate"
        ? !inflightFull(pr, s.config.inflightAppendsMax, s.config.inflightBytesMax)
        : pr.state === "probe" && !pr.probeSent
      if (!ready || pr.next > last || pr.next <= log.base.index || !isEvicted(st, pr.next)) continue
      if (need === null || pr.next < need) need = pr.next
    }
  }
  if (need === null) return
  requestLoad(st, need)
}

function isEvicted(st: Step, index: LogIndex): boolean {
  return slotAt(st.s.log, index)?.kind === "evicted"
}

/** Asks for the evicted entries from `lo` on, up to entryLoadBytesMax bytes (at least one entry),
 * stopping at the cache (whose entries are in memory anyway). */
function requestLoad(st: Step, lo: LogIndex): void {
  const s = st.s
  const log = s.log
  assert(lo > log.base.index && lo < log.residentFrom, `read-back from ${lo} outside the evicted range (${log.base.index}, ${log.residentFrom})`)
  let hi = lo
  let bytes = 0
  for (let i = lo; i < log.residentFrom; i++) {
    const slot = slotAt(log, i)
    assert(slot !== undefined, `slot ${i} missing below residentFrom`)
    const size = slot.kind === "evicted" ? slot.sizeBytes : entrySizeBytes(slot)
    if (i > lo && bytes + size > s.config.entryLoadBytesMax) break
    bytes += size
    hi = i
  }
  assert(hi <= log.stable, `read-back up to ${hi} beyond the durable log (${log.stable})`)
  s.entryLoadSeq++
  s.entryLoad = { seq: s.entryLoadSeq, lo, hi, elapsedTicks: 0 }
  st.out.loads.push({ seq: s.entryLoadSeq, lo, hi })
}
