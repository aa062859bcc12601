// Shared by the storage tests: deterministic entries, a seeded generator of valid persist calls
// (append, conflict truncation, compaction, snapshot install, hard-state changes, several batches
// per call), the model states a recovered log may legally be in, and a structural comparison.
import { Effect, Layer, Logger, LogLevel } from "effect"
import type { Scope } from "effect"
import type { Entry, HardState, Membership, SnapshotMeta } from "../../src/raft/types.ts"
import { Disk } from "../../src/storage/Disk.ts"
import type { StorageError } from "../../src/storage/errors.ts"
import { LogState } from "../../src/storage/logState.ts"
import { applyOrDie, operationsOf, recoveredOf } from "../../src/storage/LogStore.ts"
import type { LogStoreService, PersistBatch, Recovered } from "../../src/storage/LogStore.ts"
import { SegmentLog } from "../../src/storage/SegmentLog.ts"
import type { SegmentLogOptions } from "../../src/storage/SegmentLog.ts"
import { Prng } from "../sim/Prng.ts"

export const membership: Membership = {
  members: [
    { id: 1, address: "10.0.0.1:9000", role: "voter" },
    { id: 2, address: "10.0.0.2:9000", role: "voter" },
    { id: 3, address: "10.0.0.3:9000", role: "standby" }
  ]
}

/** Bytes that depend only on (index, term, length): a reader can tell a right entry from a wrong one. */
export function payloadFor(index: number, term: number, length: number): Uint8Array {
  const data = new Uint8Array(length)
  let x = (index * 2654435761 + term * 40503) >>> 0
  for (let i = 0; i < length; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0
    data[i] = x >>> 24
  }
  return data
}

export function command(index: number, term: number, length = 16): Entry {
  return { kind: "command", index, term, data: payloadFor(index, term, length) }
}

export const testLogOptions = (dir = "/data/log"): SegmentLogOptions => ({ dir, clusterId: "cluster-test", segmentBytesMax: 4096 })

/** Opens a segment log on `disk` (a fresh "process"). */
export const openLog = (
  disk: Layer.Layer<Disk>,
  options: SegmentLogOptions = testLogOptions()
): Effect.Effect<LogStoreService, StorageError, Scope.Scope> =>
  SegmentLog.open(options).pipe(Effect.provide(disk), quiet)

/** Opens, loads and closes: what a restart finds. */
export const reload = (disk: Layer.Layer<Disk>, options: SegmentLogOptions = testLogOptions()): Effect.Effect<Recovered, StorageError> =>
  Effect.scoped(Effect.flatMap(openLog(disk, options), (store) => store.load))

/** Repairs log a warning; tests keep quiet. */
export const quiet = <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Logger.withMinimumLogLevel(self, LogLevel.Error)

// --- a generator of valid persist calls -------------------------------------------------------

export interface WorkloadOptions {
  readonly seed: number
  readonly calls: number
  readonly payloadBytesMax?: number
}

/** `calls` persist calls, valid in sequence starting from an empty log. */
export function generateWorkload(options: WorkloadOptions): ReadonlyArray<ReadonlyArray<PersistBatch>> {
  const prng = new Prng(options.seed)
  const model = new LogState({ keepEntries: true })
  const payloadBytesMax = options.payloadBytesMax ?? 300
  const calls: Array<ReadonlyArray<PersistBatch>> = []
  for (let c = 0; c < options.calls; c++) {
    const batches: Array<PersistBatch> = []
    const count = prng.chance(0.25) ? prng.int(2, 4) : 1
    for (let b = 0; b < count; b++) {
      const batch = nextBatch(prng, model, payloadBytesMax)
      for (const operation of operationsOf(batch)) applyOrDie(model, operation)
      batches.push(batch)
    }
    calls.push(batches)
  }
  return calls
}

function nextBatch(prng: Prng, model: LogState, payloadBytesMax: number): PersistBatch {
  const hs = model.hardState
  const term = Math.max(hs.term, 1)
  const roll = prng.float()
  let hardState: HardState | undefined
  let currentTerm = term
  if (roll < 0.12 || hs.term === 0) {
    currentTerm = term + 1
    hardState = { term: currentTerm, vote: prng.int(1, 3), commit: hs.commit }
  } else if (roll < 0.3) {
    hardState = { term, vote: hs.vote, commit: prng.int(hs.commit, Math.max(hs.commit, model.lastIndex)) }
  }
  let snapshot: SnapshotMeta | undefined
  let truncateFrom: number | undefined
  const kind = prng.float()
  if (kind < 0.05) {
    // A follower installs a snapshot (ahead of its log or inside it).
    const index = model.lastIndex + prng.int(0, 12)
    snapshot = { index, term: Math.max(model.lastTerm, 1), config: membership }
  } else if (kind < 0.17 && model.lastIndex > model.base.index) {
    truncateFrom = prng.int(model.base.index + 1, model.lastIndex)
  }
  const lastAfter = snapshot !== undefined ? snapshot.index : truncateFrom !== undefined ? truncateFrom - 1 : model.lastIndex
  const entries: Array<Entry> = []
  const n = prng.chance(0.1) ? 0 : prng.int(1, 6)
  for (let i = 0; i < n; i++) {
    const index = lastAfter + 1 + i
    const pick = prng.float()
    if (pick < 0.08) entries.push({ kind: "config", index, term: currentTerm, config: membership })
    else if (pick < 0.14) entries.push({ kind: "barrier", index, term: currentTerm })
    else entries.push(command(index, currentTerm, prng.int(0, payloadBytesMax)))
  }
  const batch: { -readonly [K in keyof PersistBatch]: PersistBatch[K] } = { entries }
  if (hardState !== undefined) batch.hardState = hardState
  if (snapshot !== undefined) batch.snapshot = snapshot
  if (truncateFrom !== undefined) batch.truncateFrom = truncateFrom
  const lastIndex = lastAfter + n
  const base = snapshot !== undefined ? snapshot.index : model.base.index
  if (prng.chance(0.15) && lastIndex > base) {
    const index = prng.int(base + 1, lastIndex)
    const entry = entries.find((e) => e.index === index)
    const compactTerm = entry !== undefined ? entry.term : model.termAt(index)!
    batch.compactUpTo = { index, term: compactTerm }
  }
  return batch
}

// --- what a recovered log may be ---------------------------------------------------------------

/** The states a log may recover to after `acked` calls returned and the next (if any) was in
 * flight: the state after the acked calls, plus every prefix of the in-flight call's steps. */
export function allowedStates(
  calls: ReadonlyArray<ReadonlyArray<PersistBatch>>,
  acked: number
): ReadonlyArray<Recovered> {
  const model = new LogState({ keepEntries: true })
  for (const call of calls.slice(0, acked)) {
    for (const batch of call) for (const operation of operationsOf(batch)) applyOrDie(model, operation)
  }
  const states = [recoveredOf(model)]
  const inflight = calls[acked]
  if (inflight !== undefined) {
    for (const batch of inflight) {
      for (const operation of operationsOf(batch)) {
        applyOrDie(model, operation)
        states.push(recoveredOf(model))
      }
    }
  }
  return states
}

export function modelAfter(calls: ReadonlyArray<ReadonlyArray<PersistBatch>>): Recovered {
  const states = allowedStates(calls, calls.length)
  return states[states.length - 1]!
}

/** null when equal, else the first difference. */
export function diffRecovered(a: Recovered, b: Recovered): string | null {
  if (JSON.stringify(a.hardState) !== JSON.stringify(b.hardState)) {
    return `hard state ${JSON.stringify(a.hardState)} vs ${JSON.stringify(b.hardState)}`
  }
  if (a.base.index !== b.base.index || a.base.term !== b.base.term) return `base ${JSON.stringify(a.base)} vs ${JSON.stringify(b.base)}`
  if (JSON.stringify(a.snapshot) !== JSON.stringify(b.snapshot)) return `snapshot ${JSON.stringify(a.snapshot)} vs ${JSON.stringify(b.snapshot)}`
  if (a.entries.length !== b.entries.length) return `${a.entries.length} entries vs ${b.entries.length}`
  for (let i = 0; i < a.entries.length; i++) {
    const d = diffEntry(a.entries[i]!, b.entries[i]!)
    if (d !== null) return d
  }
  return null
}

function diffEntry(a: Entry, b: Entry): string | null {
  const at = `entry ${a.index}`
  if (a.index !== b.index || a.term !== b.term || a.kind !== b.kind) {
    return `${at}: (${a.index}, ${a.term}, ${a.kind}) vs (${b.index}, ${b.term}, ${b.kind})`
  }
  if (a.kind === "command" && b.kind === "command") {
    if (a.data.byteLength !== b.data.byteLength || !a.data.every((x, i) => x === b.data[i])) return `${at}: payload differs`
  }
  if (a.kind === "config" && b.kind === "config" && JSON.stringify(a.config) !== JSON.stringify(b.config)) {
    return `${at}: config differs`
  }
  return null
}

/** The index (into `allowed`) of the state `recovered` equals, or -1. */
export function matchAllowed(recovered: Recovered, allowed: ReadonlyArray<Recovered>): number {
  return allowed.findIndex((state) => diffRecovered(recovered, state) === null)
}

/** A model log state equal to `recovered` (which has no unread entries). */
export function stateOf(recovered: Recovered): LogState {
  const state = new LogState({ keepEntries: true })
  state.hardState = recovered.hardState
  state.base = recovered.base
  state.snapshot = recovered.snapshot
  for (const entry of recovered.entries) applyOrDie(state, { _tag: "append", entry })
  return state
}

/** The states allowed after `start` with `inflight` persisted but not acknowledged. */
export function allowedAfter(start: Recovered, inflight: ReadonlyArray<PersistBatch>): ReadonlyArray<Recovered> {
  const model = stateOf(start)
  const states = [recoveredOf(model)]
  for (const batch of inflight) {
    for (const operation of operationsOf(batch)) {
      applyOrDie(model, operation)
      states.push(recoveredOf(model))
    }
  }
  return states
}
