// Linearizability checker for client histories recorded by the simulator.
//
// The search is Wing & Gong's, with Lowe's memoization (as in porcupine and Knossos' "wgl"):
// the history becomes a list of call and return events in time order; the search repeatedly
// picks a call that comes before the first pending return, applies the operation to the model,
// and removes the operation's events from the list ("lift"). Finding no candidate that works
// before the first pending return means the operation returning there cannot be linearized in
// time, so the last choice is undone. A memo of explored configurations (set of linearized
// operations, model state) cuts off every configuration seen before, since the rest of the
// search depends on nothing else.
//
// Operations whose outcome is unknown (timeout, leadership lost) may take effect at any time
// after their invocation, or never. They get a call event but no return event: nothing forces
// them to be linearized, and the search succeeds as soon as every *completed* operation is
// linearized. Leaving an unknown operation out is the same as linearizing it after everything
// else, which is always allowed because the model accepts an unknown outcome in every state.
//
// Unknown-outcome operations are what makes the search expensive: each stays a candidate for
// the rest of the history, so k of them can multiply the configurations by 2^k. Four things
// keep that in check, each of which only cuts off configurations that cannot succeed where
// another one would:
// - An unknown operation that would not change the state now is not linearized now (leaving
//   it pending allows everything linearizing it would).
// - The memo uses dominance: a configuration is cut off when one with the same completed
//   operations and state but a subset of its unknown operations was explored (that one can do
//   everything this one can). Completed candidates are tried before unknown ones, so the
//   configurations with fewer unknown operations tend to come first.
// - Interchangeable unknown operations (same input, `Model.inputKey`) are linearized in
//   invocation order only.
// - The key-value partitioner drops or merges unknown writes whose value nobody observes
//   (`partitionKvByKey`).
// The oracle tests check all of this against a brute-force search.
//
// Histories are P-compositional: when the model says how to split a history into independent
// parts (for the key-value store, one part per key), each part is checked on its own, which
// turns one exponential search into several small ones (Herlihy & Wing's locality).
//
// Time: intervals are closed. An operation invoked at the very time another one returns counts
// as concurrent with it (the order of two events with the same logical time is unknown).
//
// Deterministic: the search order depends only on the history (no clock, no randomness). Its
// work is bounded by `stepsMax`: loop iterations plus memo comparisons.

import { assert } from "../../../src/assert.ts"

// ---------------------------------------------------------------------------------------------
// Generic core
// ---------------------------------------------------------------------------------------------

/** One operation of a history. `completedAt` and `output` are null together: the outcome is
 * unknown, and the operation may have taken effect at any time after `invokedAt`, or never. */
export interface Op<I, O> {
  readonly id: number
  readonly client: number
  readonly input: I
  readonly invokedAt: number
  readonly completedAt: number | null
  readonly output: O | null
}

export interface StepResult<S> {
  /** Whether `output` is a possible result of applying the input in the state. */
  readonly ok: boolean
  /** The state after the operation (meaningful only when `ok`). */
  readonly state: S
}

/** An independent part of a history, checked on its own. */
export interface Partition<I, O> {
  readonly name: string
  readonly ops: ReadonlyArray<Op<I, O>>
}

/** A sequential specification. States are treated as immutable values. */
export interface Model<S, I, O> {
  readonly init: () => S
  /** Applies a completed operation; `ok` is false when `output` is impossible in `state`. */
  readonly step: (state: S, input: I, output: O) => StepResult<S>
  /** The state after an operation of unknown outcome takes effect in `state`, whatever it
   * returned. Must accept every state: an unknown outcome is never impossible. */
  readonly stepUnknown: (state: S, input: I) => S
  /** Equal keys ⇔ equivalent states; used to memoize the search. */
  readonly key: (state: S) => string
  /** Splits a history into parts that can be checked independently (P-compositionality). The
   * parts may leave out operations that provably cannot change the verdict. */
  readonly partition?: (ops: ReadonlyArray<Op<I, O>>) => ReadonlyArray<Partition<I, O>>
  /** Equal keys ⇔ inputs with the same effect in every state. Unknown-outcome operations
   * with equal input keys are interchangeable, so the search only ever linearizes the
   * earliest-invoked one still pending: any linearization can be rearranged to use them in
   * invocation order (each one is available from its invocation on, forever), and trying
   * every subset of k such operations would cost 2^k. */
  readonly inputKey?: (input: I) => string
  /** Text for an operation in explanations. */
  readonly describeOp?: (op: Op<I, O>) => string
}

export interface CheckOptions {
  /** Bound on search steps *per partition*; past it the verdict is `Unknown`. The whole check
   * therefore does at most `stepsMax` × (number of partitions) steps. */
  readonly stepsMax: number
}

export type LinearizabilityResult =
  | { readonly _tag: "Linearizable" }
  | {
    readonly _tag: "NotLinearizable"
    /** Name of the first (in partition order) partition that is not linearizable. */
    readonly partition?: string
    /** Ids of the longest sequence of operations the search linearized before getting stuck. */
    readonly longestPrefix: ReadonlyArray<number>
    readonly explanation: string
  }
  | {
    readonly _tag: "Unknown"
    readonly reason: "budget"
    /** The first partition whose search ran out of steps. */
    readonly partition?: string
  }

/**
 * Checks that `ops` is linearizable with respect to `model`. Every partition is checked (each
 * with its own `stepsMax` budget); a partition that is not linearizable wins over one whose
 * budget ran out, so a definite violation is reported even if another part is too hard.
 */
export function checkLinearizable<S, I, O>(
  model: Model<S, I, O>,
  ops: ReadonlyArray<Op<I, O>>,
  options: CheckOptions
): LinearizabilityResult {
  assert(Number.isSafeInteger(options.stepsMax) && options.stepsMax > 0, "stepsMax is a positive integer")
  assertWellFormedOps(ops)
  const partitions: ReadonlyArray<{ readonly name: string | null; readonly ops: ReadonlyArray<Op<I, O>> }> =
    model.partition === undefined ? [{ name: null, ops }] : model.partition(ops)

  let budgetPartition: string | null | undefined = undefined
  for (const partition of partitions) {
    const outcome = searchPartition(model, partition.ops, options.stepsMax)
    switch (outcome._tag) {
      case "Linearized":
        break
      case "Budget":
        if (budgetPartition === undefined) budgetPartition = partition.name
        break
      case "Stuck":
        return notLinearizable(model, partition, outcome, ops)
    }
  }
  if (budgetPartition === undefined) return { _tag: "Linearizable" }
  return budgetPartition === null
    ? { _tag: "Unknown", reason: "budget" }
    : { _tag: "Unknown", reason: "budget", partition: budgetPartition }
}

function assertWellFormedOps<I, O>(ops: ReadonlyArray<Op<I, O>>): void {
  const ids = new Set<number>()
  for (const op of ops) {
    assert(!ids.has(op.id), `operation ids are unique (duplicate ${op.id})`)
    ids.add(op.id)
    assert(Number.isFinite(op.invokedAt), `operation ${op.id} has a finite invocation time`)
    assert(
      (op.completedAt === null) === (op.output === null),
      `operation ${op.id}: completedAt and output are null together (outcome unknown)`
    )
    if (op.completedAt !== null) {
      assert(Number.isFinite(op.completedAt), `operation ${op.id} has a finite completion time`)
      assert(op.completedAt >= op.invokedAt, `operation ${op.id} completes no earlier than it is invoked`)
    }
  }
}

function notLinearizable<S, I, O>(
  model: Model<S, I, O>,
  partition: { readonly name: string | null; readonly ops: ReadonlyArray<Op<I, O>> },
  stuck: SearchStuck,
  originalOps: ReadonlyArray<Op<I, O>>
): LinearizabilityResult {
  const describe = model.describeOp ?? ((op: Op<I, O>) => `op ${op.id}`)
  const blockingId = partition.ops[stuck.blockingOpIndex]?.id
  // Describe the operation as recorded: a partition may have rewritten it.
  const blocking = originalOps.find((op) => op.id === blockingId)
  assert(blocking !== undefined, "the blocking operation belongs to the history")
  const where = partition.name === null ? "" : `partition ${JSON.stringify(partition.name)}: `
  const explanation = `${where}not linearizable. The longest prefix the search could linearize has ` +
    `${stuck.longestPrefix.length} of ${partition.ops.length} operations` +
    (stuck.longestPrefix.length === 0 ? "" : ` [${stuck.longestPrefix.join(", ")}]`) +
    ` and leaves the state ${stuck.stateKey}; from there no operation could be linearized next ` +
    `before ${describe(blocking)} returns.`
  return partition.name === null
    ? { _tag: "NotLinearizable", longestPrefix: stuck.longestPrefix, explanation }
    : { _tag: "NotLinearizable", partition: partition.name, longestPrefix: stuck.longestPrefix, explanation }
}

// ---------------------------------------------------------------------------------------------
// The search over one partition
// ---------------------------------------------------------------------------------------------

interface SearchStuck {
  readonly _tag: "Stuck"
  readonly longestPrefix: ReadonlyArray<number>
  /** The model state after the longest prefix. */
  readonly stateKey: string
  /** Index (into the partition's ops) of the first operation to return after that prefix. */
  readonly blockingOpIndex: number
}

type SearchOutcome = { readonly _tag: "Linearized" } | { readonly _tag: "Budget" } | SearchStuck

/**
 * The events of a partition numbered in time order, held in two doubly linked lists over
 * shared arrays: the completed operations' calls and returns, and the unknown-outcome
 * operations' calls (they have no return). An event's number is its place in time order, so an
 * unknown operation is a candidate iff its call's number is below the first pending return's.
 * An operation's events are removed and put back in O(1); removals are undone in reverse
 * order, as in dancing links.
 */
interface Events {
  readonly completedHead: number
  readonly completedTail: number
  readonly unknownHead: number
  /** Numbered above every event, so "below the first pending return" stops at it. */
  readonly unknownTail: number
  readonly next: Int32Array
  readonly prev: Int32Array
  /** Index of the operation an event belongs to. */
  readonly opIndex: Int32Array
  /** 1 for a call event, 0 for a return event. */
  readonly isCall: Uint8Array
  /** For a call event, the index of its return event, or -1 when the outcome is unknown. */
  readonly returnEvent: Int32Array
}

function buildEvents<I, O>(ops: ReadonlyArray<Op<I, O>>): Events {
  const sorted: Array<{ readonly time: number; readonly isCall: boolean; readonly opIndex: number }> = []
  ops.forEach((op, opIndex) => {
    sorted.push({ time: op.invokedAt, isCall: true, opIndex })
    if (op.completedAt !== null) sorted.push({ time: op.completedAt, isCall: false, opIndex })
  })
  // Calls before returns at equal times: such operations are concurrent (see the file header).
  sorted.sort((a, b) => a.time - b.time || Number(b.isCall) - Number(a.isCall) || a.opIndex - b.opIndex)
  const eventCount = sorted.length
  const events: Events = {
    completedHead: eventCount,
    completedTail: eventCount + 1,
    unknownHead: eventCount + 2,
    unknownTail: eventCount + 3,
    next: new Int32Array(eventCount + 4).fill(-1),
    prev: new Int32Array(eventCount + 4).fill(-1),
    opIndex: new Int32Array(eventCount),
    isCall: new Uint8Array(eventCount),
    returnEvent: new Int32Array(eventCount).fill(-1)
  }
  events.next[events.completedHead] = events.completedTail
  events.prev[events.completedTail] = events.completedHead
  events.next[events.unknownHead] = events.unknownTail
  events.prev[events.unknownTail] = events.unknownHead
  const callEventByOp = new Int32Array(ops.length).fill(-1)
  sorted.forEach((entry, event) => {
    events.opIndex[event] = entry.opIndex
    events.isCall[event] = entry.isCall ? 1 : 0
    if (entry.isCall) {
      callEventByOp[entry.opIndex] = event
    } else {
      const callEvent = callEventByOp[entry.opIndex]!
      assert(callEvent >= 0, "an operation's call precedes its return")
      events.returnEvent[callEvent] = event
    }
    const unknown = ops[entry.opIndex]!.completedAt === null
    appendEvent(events, unknown ? events.unknownTail : events.completedTail, event)
  })
  return events
}

function appendEvent(events: Events, tail: number, event: number): void {
  const last = events.prev[tail]!
  events.next[last] = event
  events.prev[event] = last
  events.next[event] = tail
  events.prev[tail] = event
}

function unlinkEvent(events: Events, event: number): void {
  const before = events.prev[event]!
  const after = events.next[event]!
  events.next[before] = after
  events.prev[after] = before
}

function relinkEvent(events: Events, event: number): void {
  events.next[events.prev[event]!] = event
  events.prev[events.next[event]!] = event
}

/** Removes an operation's call event and its return event (if any) from their list. */
function liftOp(events: Events, callEvent: number): void {
  unlinkEvent(events, callEvent)
  const returnEvent = events.returnEvent[callEvent]!
  if (returnEvent >= 0) unlinkEvent(events, returnEvent)
}

/** Undoes the matching `liftOp`; must be called in reverse order of the lifts. */
function unliftOp(events: Events, callEvent: number): void {
  const returnEvent = events.returnEvent[callEvent]!
  if (returnEvent >= 0) relinkEvent(events, returnEvent)
  relinkEvent(events, callEvent)
}

/** The first pending return event; there is one while a completed operation is pending. */
function firstPendingReturn(events: Events): number {
  let event = events.next[events.completedHead]!
  while (events.isCall[event] === 1) event = events.next[event]!
  assert(event !== events.completedTail, "a completed operation is pending")
  return event
}

/** 32-bit avalanche mix (murmur3's finalizer), for hashing sets of operations and states. */
function mix32(value: number): number {
  let h = value | 0
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b)
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35)
  return (h ^ (h >>> 16)) >>> 0
}

function bitsEqual(a: Uint32Array, b: Uint32Array): boolean {
  for (let word = 0; word < a.length; word++) {
    if (a[word] !== b[word]) return false
  }
  return true
}

function bitsSubset(subset: Uint32Array, superset: Uint32Array): boolean {
  for (let word = 0; word < subset.length; word++) {
    if ((subset[word]! & ~superset[word]!) !== 0) return false
  }
  return true
}

function toggleBit(bits: Uint32Array, index: number): void {
  const word = index >>> 5
  bits[word] = bits[word]! ^ (1 << (index & 31))
}

/** A configuration of the search: what is linearized, and the state it leads to. */
interface Configuration {
  readonly completedBits: Uint32Array
  readonly unknownBits: Uint32Array
  readonly stateId: number
}

/**
 * The configurations already explored (Lowe's memo), with dominance: a configuration is cut
 * off when one with the same completed operations and state, and a subset of its unknown
 * ones, was explored. That one can do everything this one can (it may simply never linearize
 * the extra unknown operations), so if it found no linearization, neither can this one; if it
 * is still being explored, the search will find any linearization through it. Sets of
 * operations are bitsets; the completed set's hash is maintained by the search (XOR of one
 * mixed value per member); states are interned to small integers.
 */
class ExploredConfigurations {
  /** Work done comparing configurations; it counts against the step budget. */
  comparisonCount = 0
  private readonly buckets = new Map<number, Array<Configuration>>()
  private readonly stateIds = new Map<string, number>()
  private readonly stateKeys: Array<string> = []

  stateIdOf(stateKey: string): number {
    let stateId = this.stateIds.get(stateKey)
    if (stateId === undefined) {
      stateId = this.stateKeys.length
      this.stateIds.set(stateKey, stateId)
      this.stateKeys.push(stateKey)
    }
    return stateId
  }

  stateKeyOf(stateId: number): string {
    const stateKey = this.stateKeys[stateId]
    assert(stateKey !== undefined, "state ids come from stateIdOf")
    return stateKey
  }

  /** Records the configuration; false when an explored one dominates it. */
  insert(configuration: Configuration, completedHash: number): boolean {
    const hash = mix32(completedHash ^ Math.imul(configuration.stateId + 1, 0x9e3779b1))
    const bucket = this.buckets.get(hash)
    if (bucket === undefined) {
      this.buckets.set(hash, [copyConfiguration(configuration)])
      return true
    }
    let keptCount = 0
    for (const explored of bucket) {
      this.comparisonCount++
      const comparable = explored.stateId === configuration.stateId &&
        bitsEqual(explored.completedBits, configuration.completedBits)
      if (comparable && bitsSubset(explored.unknownBits, configuration.unknownBits)) return false
      // Entries the new configuration dominates are no longer needed (it is an antichain).
      if (!comparable || !bitsSubset(configuration.unknownBits, explored.unknownBits)) bucket[keptCount++] = explored
    }
    bucket.length = keptCount
    bucket.push(copyConfiguration(configuration))
    return true
  }
}

function copyConfiguration(configuration: Configuration): Configuration {
  return {
    completedBits: configuration.completedBits.slice(),
    unknownBits: configuration.unknownBits.slice(),
    stateId: configuration.stateId
  }
}

/**
 * Classes of interchangeable unknown-outcome operations (see `Model.inputKey`). Members of a
 * class are ranked in time order; since they are linearized in that order, the linearized
 * members of a class are always its first `linearizedCount[class]`.
 */
interface InterchangeableClasses {
  /** Class of each operation, or -1 (completed, or the model has no `inputKey`). */
  readonly classOfOp: Int32Array
  readonly rankInClass: Int32Array
  readonly linearizedCount: Int32Array
}

function interchangeableClasses<S, I, O>(
  model: Model<S, I, O>,
  ops: ReadonlyArray<Op<I, O>>,
  events: Events
): InterchangeableClasses {
  const classOfOp = new Int32Array(ops.length).fill(-1)
  const rankInClass = new Int32Array(ops.length)
  const memberCounts: Array<number> = []
  const inputKey = model.inputKey
  const classIds = new Map<string, number>()
  for (let event = events.next[events.unknownHead]!; event !== events.unknownTail; event = events.next[event]!) {
    if (inputKey === undefined) break
    const opIndex = events.opIndex[event]!
    const key = inputKey(ops[opIndex]!.input)
    let classId = classIds.get(key)
    if (classId === undefined) {
      classId = memberCounts.length
      classIds.set(key, classId)
      memberCounts.push(0)
    }
    classOfOp[opIndex] = classId
    rankInClass[opIndex] = memberCounts[classId]!
    memberCounts[classId] = memberCounts[classId]! + 1
  }
  return { classOfOp, rankInClass, linearizedCount: new Int32Array(memberCounts.length) }
}

/** Whether the operation may be linearized now as far as its class is concerned. */
function isNextOfClass(classes: InterchangeableClasses, opIndex: number): boolean {
  const classId = classes.classOfOp[opIndex]!
  return classId < 0 || classes.rankInClass[opIndex] === classes.linearizedCount[classId]
}

function countLinearizedInClass(classes: InterchangeableClasses, opIndex: number, delta: 1 | -1): void {
  const classId = classes.classOfOp[opIndex]!
  if (classId >= 0) classes.linearizedCount[classId] = classes.linearizedCount[classId]! + delta
}

/** The state after `op` when applied in `state`, or undefined when its output is impossible. */
function applyOp<S, I, O>(model: Model<S, I, O>, state: S, op: Op<I, O>): { readonly state: S } | undefined {
  if (op.output === null) return { state: model.stepUnknown(state, op.input) }
  const result = model.step(state, op.input, op.output)
  return result.ok ? result : undefined
}

/** Which candidates a scan is walking: completed operations' calls first, then unknown ones. */
type ScanPhase = "completed" | "unknown"

/** One linearized operation on the search stack, with what is needed to undo it and resume. */
interface StackFrame<S> {
  readonly callEvent: number
  readonly phase: ScanPhase
  /** In the "unknown" phase, the first pending return when the operation was chosen. */
  readonly firstReturnEvent: number
  readonly stateBefore: S
  readonly stateIdBefore: number
}

/**
 * The deepest point the search reached, kept up to date in amortized O(1) per step: the
 * stack and the recorded prefix agree on their first `commonLength` operations, so a new
 * deepest point only copies the frames above that.
 */
interface DeepestPoint {
  readonly opIndices: Array<number>
  commonLength: number
  stateId: number
  blockingOpIndex: number
}

/** The mutable part of the search: the current configuration and how it was reached. */
class PartitionSearch<S, I, O> {
  readonly events: Events
  readonly explored = new ExploredConfigurations()
  completedRemaining: number
  private readonly classes: InterchangeableClasses
  /** Each operation's index among the completed or among the unknown-outcome ones. */
  private readonly bitIndex: Int32Array
  private readonly completedMix: Uint32Array
  private readonly configuration: { completedBits: Uint32Array; unknownBits: Uint32Array; stateId: number }
  private completedHash = 0
  private readonly stack: Array<StackFrame<S>> = []
  private state: S
  private readonly deepest: DeepestPoint

  constructor(private readonly model: Model<S, I, O>, private readonly ops: ReadonlyArray<Op<I, O>>) {
    this.events = buildEvents(ops)
    this.classes = interchangeableClasses(model, ops, this.events)
    this.bitIndex = new Int32Array(ops.length)
    let completedCount = 0
    let unknownCount = 0
    ops.forEach((op, opIndex) => {
      this.bitIndex[opIndex] = op.completedAt === null ? unknownCount++ : completedCount++
    })
    this.completedRemaining = completedCount
    this.completedMix = Uint32Array.from({ length: completedCount }, (_, index) => mix32(index + 1))
    this.state = model.init()
    this.configuration = {
      completedBits: new Uint32Array(Math.ceil(completedCount / 32)),
      unknownBits: new Uint32Array(Math.ceil(unknownCount / 32)),
      stateId: this.explored.stateIdOf(model.key(this.state))
    }
    this.deepest = {
      opIndices: [],
      commonLength: 0,
      stateId: this.configuration.stateId,
      blockingOpIndex: this.events.opIndex[firstPendingReturn(this.events)]!
    }
  }

  /** Linearizes the operation called at `callEvent` next, unless that is impossible, useless
   * or already explored; true when it did. */
  tryLinearize(callEvent: number, phase: ScanPhase, firstReturnEvent: number): boolean {
    assert(callEvent < this.events.isCall.length && this.events.isCall[callEvent] === 1, "candidates are call events")
    const opIndex = this.events.opIndex[callEvent]!
    const op = this.ops[opIndex]!
    if (!isNextOfClass(this.classes, opIndex)) return false
    const applied = applyOp(this.model, this.state, op)
    if (applied === undefined) return false
    const stateIdBefore = this.configuration.stateId
    const stateId = this.explored.stateIdOf(this.model.key(applied.state))
    // An unknown-outcome operation that changes nothing now is better left pending: leaving
    // it out allows everything that linearizing it here would (see the file header).
    if (op.output === null && stateId === stateIdBefore) return false
    this.toggle(opIndex)
    this.configuration.stateId = stateId
    if (!this.explored.insert(this.configuration, this.completedHash)) {
      this.toggle(opIndex)
      this.configuration.stateId = stateIdBefore
      return false
    }
    this.stack.push({ callEvent, phase, firstReturnEvent, stateBefore: this.state, stateIdBefore })
    this.state = applied.state
    liftOp(this.events, callEvent)
    countLinearizedInClass(this.classes, opIndex, 1)
    if (op.completedAt !== null) this.completedRemaining--
    if (this.completedRemaining > 0 && this.stack.length > this.deepest.opIndices.length) this.recordDeepest()
    return true
  }

  /** Undoes the latest linearization and returns its frame, or undefined at the root. */
  undo(): StackFrame<S> | undefined {
    const frame = this.stack.pop()
    if (frame === undefined) return undefined
    const opIndex = this.events.opIndex[frame.callEvent]!
    this.toggle(opIndex)
    this.configuration.stateId = frame.stateIdBefore
    this.state = frame.stateBefore
    unliftOp(this.events, frame.callEvent)
    countLinearizedInClass(this.classes, opIndex, -1)
    if (this.ops[opIndex]!.completedAt !== null) this.completedRemaining++
    this.deepest.commonLength = Math.min(this.deepest.commonLength, this.stack.length)
    return frame
  }

  stuck(): SearchStuck {
    return {
      _tag: "Stuck",
      longestPrefix: this.deepest.opIndices.map((opIndex) => this.ops[opIndex]!.id),
      stateKey: this.explored.stateKeyOf(this.deepest.stateId),
      blockingOpIndex: this.deepest.blockingOpIndex
    }
  }

  private toggle(opIndex: number): void {
    const bitIndex = this.bitIndex[opIndex]!
    if (this.ops[opIndex]!.completedAt === null) {
      toggleBit(this.configuration.unknownBits, bitIndex)
    } else {
      toggleBit(this.configuration.completedBits, bitIndex)
      this.completedHash ^= this.completedMix[bitIndex]!
    }
  }

  private recordDeepest(): void {
    const deepest = this.deepest
    for (let depth = deepest.commonLength; depth < this.stack.length; depth++) {
      deepest.opIndices[depth] = this.events.opIndex[this.stack[depth]!.callEvent]!
    }
    deepest.commonLength = this.stack.length
    deepest.stateId = this.configuration.stateId
    deepest.blockingOpIndex = this.events.opIndex[firstPendingReturn(this.events)]!
  }
}

/**
 * Depth-first search for a linearization. At each configuration the candidates are the calls
 * before the first pending return: the completed operations' first (in time order), then the
 * unknown-outcome ones (linearizing those only when needed keeps the memo's dominance
 * effective). Reaching the end of the candidates means the operation returning there cannot
 * be linearized in time from here: undo the latest choice and try the next candidate.
 */
function searchPartition<S, I, O>(model: Model<S, I, O>, ops: ReadonlyArray<Op<I, O>>, stepsMax: number): SearchOutcome {
  if (ops.every((op) => op.completedAt === null)) return { _tag: "Linearized" }
  const search = new PartitionSearch(model, ops)
  const events = search.events
  let phase: ScanPhase = "completed"
  let firstReturnEvent = -1
  let event = events.next[events.completedHead]!
  for (let steps = 0; steps + search.explored.comparisonCount < stepsMax; steps++) {
    if (phase === "completed" && events.isCall[event] === 0) {
      phase = "unknown"
      firstReturnEvent = event
      event = events.next[events.unknownHead]!
    } else if (phase === "unknown" && event > firstReturnEvent) {
      const frame = search.undo()
      if (frame === undefined) return search.stuck()
      phase = frame.phase
      firstReturnEvent = frame.firstReturnEvent
      event = events.next[frame.callEvent]!
    } else if (search.tryLinearize(event, phase, firstReturnEvent)) {
      if (search.completedRemaining === 0) return { _tag: "Linearized" }
      phase = "completed"
      event = events.next[events.completedHead]!
    } else {
      event = events.next[event]!
    }
  }
  return { _tag: "Budget" }
}

// ---------------------------------------------------------------------------------------------
// Key-value store of registers
// ---------------------------------------------------------------------------------------------

export type KvInput =
  | { readonly kind: "write"; readonly key: string; readonly value: string }
  | { readonly kind: "read"; readonly key: string }
  | { readonly kind: "cas"; readonly key: string; readonly expected: string | null; readonly value: string }

export type KvOutput =
  | { readonly kind: "ok" } // write done / cas succeeded
  | { readonly kind: "cas-failed" } // cas did not apply (value differed)
  | { readonly kind: "value"; readonly value: string | null } // read result (null = never written)

export interface HistoryOp {
  readonly id: number
  readonly client: number
  readonly input: KvInput
  /** Logical time of invocation. */
  readonly invokedAt: number
  /** null = outcome unknown (timeout / leadership lost): it may or may not have taken effect,
   * at any time after invocation. */
  readonly completedAt: number | null
  /** null iff the outcome is unknown. */
  readonly output: KvOutput | null
}

/** The store: key → value; a key never written is absent (reads return null). */
export type KvState = ReadonlyMap<string, string>

/** Default search budget per key for `checkKvHistory`. */
export const kvStepsMaxDefault = 1_000_000

function kvWith(state: KvState, key: string, value: string): KvState {
  const next = new Map(state)
  next.set(key, value)
  return next
}

function kvStep(state: KvState, input: KvInput, output: KvOutput): StepResult<KvState> {
  const current = state.get(input.key) ?? null
  switch (input.kind) {
    case "write":
      return { ok: output.kind === "ok", state: kvWith(state, input.key, input.value) }
    case "read":
      return { ok: output.kind === "value" && output.value === current, state }
    case "cas":
      if (output.kind === "ok") return { ok: current === input.expected, state: kvWith(state, input.key, input.value) }
      return { ok: output.kind === "cas-failed" && current !== input.expected, state }
  }
}

function kvStepUnknown(state: KvState, input: KvInput): KvState {
  switch (input.kind) {
    case "write":
      return kvWith(state, input.key, input.value)
    case "read":
      return state
    case "cas":
      return (state.get(input.key) ?? null) === input.expected ? kvWith(state, input.key, input.value) : state
  }
}

function kvKey(state: KvState): string {
  // One entry is the common case: the checker partitions by key.
  if (state.size <= 1) return JSON.stringify([...state.entries()])
  return JSON.stringify([...state.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
}

/**
 * Splits a key-value history into one partition per key (keys in sorted order, operations in
 * history order) and simplifies each; see `simplifyKeyHistory`.
 */
export function partitionKvByKey(ops: ReadonlyArray<Op<KvInput, KvOutput>>): ReadonlyArray<Partition<KvInput, KvOutput>> {
  const opsByKey = new Map<string, Array<Op<KvInput, KvOutput>>>()
  for (const op of ops) {
    const keyOps = opsByKey.get(op.input.key)
    if (keyOps === undefined) opsByKey.set(op.input.key, [op])
    else keyOps.push(op)
  }
  const keys = [...opsByKey.keys()].sort()
  return keys.map((key) => ({ name: key, ops: simplifyKeyHistory(opsByKey.get(key)!) }))
}

/** Stands for every value that no operation of a key observes (see `simplifyKeyHistory`);
 * primed until it differs from every observed value. */
const kvUnobservedValue = "⟨unobserved⟩"

/**
 * Rewrites the history of one key into one with the same verdict that is cheaper to search.
 * A value is *observed* when a completed read returns it or a cas expects it.
 * 1. Reads of unknown outcome are dropped: they change nothing and promise nothing.
 * 2. Values nobody observes are all renamed to one placeholder. Whether an operation's output
 *    is possible depends only on comparing the register with observed values (and null), and
 *    a register holding an unobserved value compares unequal to all of them before and after
 *    the renaming. Unknown-outcome writes of unobserved values then share one input, so the
 *    search takes them in invocation order instead of trying every subset.
 * 3. When no cas of the key is known to have failed, writes and cas of unknown outcome of an
 *    unobserved value are dropped. Take a linearization where one of them takes effect: until
 *    the next write, no completed read can run (it would observe the value), no cas can
 *    succeed (it would expect the value) and none failed, so only unknown cas that did not
 *    apply are there; leaving out the write and those cas leaves a linearization. (A failed
 *    cas may need such a write: it explains why the register differed.)
 */
function simplifyKeyHistory(ops: ReadonlyArray<Op<KvInput, KvOutput>>): ReadonlyArray<Op<KvInput, KvOutput>> {
  const observed = new Set<string | null>()
  for (const op of ops) {
    if (op.output?.kind === "value") observed.add(op.output.value)
    if (op.input.kind === "cas") observed.add(op.input.expected)
  }
  let placeholder = kvUnobservedValue
  while (observed.has(placeholder)) placeholder += "′"
  const casFailed = ops.some((op) => op.output?.kind === "cas-failed")
  const simplified: Array<Op<KvInput, KvOutput>> = []
  for (const op of ops) {
    const input = op.input
    if (input.kind === "read") {
      if (op.output !== null) simplified.push(op)
    } else if (observed.has(input.value)) {
      simplified.push(op)
    } else if (op.output !== null || casFailed) {
      simplified.push({ ...op, input: { ...input, value: placeholder } })
    }
  }
  return simplified
}

function kvInputKey(input: KvInput): string {
  switch (input.kind) {
    case "write":
      return JSON.stringify([input.kind, input.key, input.value])
    case "read":
      return JSON.stringify([input.kind, input.key])
    case "cas":
      return JSON.stringify([input.kind, input.key, input.expected, input.value])
  }
}

function describeKvOp(op: Op<KvInput, KvOutput>): string {
  const input = op.input
  const action = input.kind === "write"
    ? `write ${JSON.stringify(input.key)} = ${JSON.stringify(input.value)}`
    : input.kind === "read"
    ? `read ${JSON.stringify(input.key)}`
    : `cas ${JSON.stringify(input.key)} ${JSON.stringify(input.expected)} → ${JSON.stringify(input.value)}`
  const output = op.output === null
    ? "outcome unknown"
    : op.output.kind === "value"
    ? JSON.stringify(op.output.value)
    : op.output.kind
  const interval = `[${op.invokedAt}, ${op.completedAt === null ? "∞" : op.completedAt}]`
  return `op ${op.id} (client ${op.client}: ${action} → ${output}, ${interval})`
}

/** The key-value store as a model, partitioned by key. */
export const kvModel: Model<KvState, KvInput, KvOutput> = {
  init: () => new Map(),
  step: kvStep,
  stepUnknown: kvStepUnknown,
  key: kvKey,
  partition: partitionKvByKey,
  inputKey: kvInputKey,
  describeOp: describeKvOp
}

function assertKvOutputMatchesInput(op: HistoryOp): void {
  if (op.output === null) return
  const expected = op.input.kind === "write"
    ? ["ok"]
    : op.input.kind === "read"
    ? ["value"]
    : ["ok", "cas-failed"]
  assert(expected.includes(op.output.kind), `operation ${op.id}: a ${op.input.kind} cannot return ${op.output.kind}`)
}

/**
 * Checks a key-value history, key by key. A `NotLinearizable` result names the first key (in
 * sorted order) with no linearization; `stepsMax` bounds the search per key (default
 * `kvStepsMaxDefault`, about a second of search at worst). In the explanation's state, values
 * that no read or cas of the key observes all show as "⟨unobserved⟩".
 */
export function checkKvHistory(
  history: ReadonlyArray<HistoryOp>,
  options?: { readonly stepsMax?: number }
): LinearizabilityResult {
  history.forEach(assertKvOutputMatchesInput)
  return checkLinearizable(kvModel, history, { stepsMax: options?.stepsMax ?? kvStepsMaxDefault })
}
