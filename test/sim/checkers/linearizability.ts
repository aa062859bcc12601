// Linearizability checker for client histories recorded by the simulator.
//
// The search is Wing & Gong's, with Lowe's memoization (as in porcupine and Knossos' "wgl"):
// the history becomes one list of call and return events in time order; the search repeatedly
// picks a call that comes before the first pending return, applies the operation to the model,
// and removes the operation's events from the list ("lift"). Reaching a return event means the
// operation that returns there was not linearized in time, so the last choice is undone. A
// memo of (set of linearized operations, model state) pairs cuts off every configuration the
// search has already explored, since the rest of the search depends on nothing else.
//
// Operations whose outcome is unknown (timeout, leadership lost) may take effect at any time
// after their invocation, or never. They get a call event but no return event: nothing forces
// them to be linearized, and the search succeeds as soon as every *completed* operation is
// linearized. Leaving an unknown operation out is the same as linearizing it after everything
// else, which is always allowed because the model accepts an unknown outcome in every state.
//
// Histories are P-compositional: when the model says how to split a history into independent
// parts (for the key-value store, one part per key), each part is checked on its own, which
// turns one exponential search into several small ones (Herlihy & Wing's locality).
//
// Time: intervals are closed. An operation invoked at the very time another one returns counts
// as concurrent with it (the order of two events with the same logical time is unknown).
//
// Deterministic: the search order depends only on the history (no clock, no randomness).

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
        return notLinearizable(model, partition, outcome)
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
  stuck: SearchStuck
): LinearizabilityResult {
  const describe = model.describeOp ?? ((op: Op<I, O>) => `op ${op.id}`)
  const blocking = partition.ops[stuck.blockingOpIndex]
  assert(blocking !== undefined, "the blocking operation belongs to the partition")
  const where = partition.name === null ? "" : `partition ${JSON.stringify(partition.name)}: `
  const explanation = `${where}not linearizable. The longest linearizable prefix the search found has ` +
    `${stuck.longestPrefix.length} of ${partition.ops.length} operations` +
    (stuck.longestPrefix.length === 0 ? "" : ` [${stuck.longestPrefix.join(", ")}]`) +
    ` and leaves the state ${stuck.stateKey}; from there, ${describe(blocking)} cannot be ` +
    `linearized before it returns, whatever the order of the operations concurrent with it.`
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
 * The events of a history as a doubly linked list over arrays, so that an operation's events
 * can be removed and put back in O(1) (removals are undone in reverse order, like dancing links).
 */
interface EventList {
  readonly head: number
  readonly tail: number
  readonly next: Int32Array
  readonly prev: Int32Array
  /** Index of the operation an event belongs to. */
  readonly opIndex: Int32Array
  /** 1 for a call event, 0 for a return event. */
  readonly isCall: Uint8Array
  /** For a call event, the index of its return event, or -1 when the outcome is unknown. */
  readonly returnEvent: Int32Array
}

function buildEventList<I, O>(ops: ReadonlyArray<Op<I, O>>): EventList {
  const events: Array<{ readonly time: number; readonly isCall: boolean; readonly opIndex: number }> = []
  ops.forEach((op, opIndex) => {
    events.push({ time: op.invokedAt, isCall: true, opIndex })
    if (op.completedAt !== null) events.push({ time: op.completedAt, isCall: false, opIndex })
  })
  // Calls before returns at equal times: such operations are concurrent (see the file header).
  events.sort((a, b) =>
    a.time - b.time || Number(b.isCall) - Number(a.isCall) || a.opIndex - b.opIndex
  )
  const eventCount = events.length
  const head = eventCount
  const tail = eventCount + 1
  const list: EventList = {
    head,
    tail,
    next: new Int32Array(eventCount + 2),
    prev: new Int32Array(eventCount + 2),
    opIndex: new Int32Array(eventCount),
    isCall: new Uint8Array(eventCount),
    returnEvent: new Int32Array(eventCount).fill(-1)
  }
  const callEventByOp = new Int32Array(ops.length).fill(-1)
  events.forEach((event, index) => {
    list.opIndex[index] = event.opIndex
    list.isCall[index] = event.isCall ? 1 : 0
    if (event.isCall) {
      callEventByOp[event.opIndex] = index
    } else {
      const callEvent = callEventByOp[event.opIndex]
      assert(callEvent !== undefined && callEvent >= 0, "an operation's call precedes its return")
      list.returnEvent[callEvent] = index
    }
    list.next[index] = index + 1 === eventCount ? tail : index + 1
    list.prev[index] = index === 0 ? head : index - 1
  })
  list.next[head] = eventCount === 0 ? tail : 0
  list.prev[tail] = eventCount === 0 ? head : eventCount - 1
  list.next[tail] = -1
  list.prev[head] = -1
  return list
}

function unlinkEvent(list: EventList, event: number): void {
  const before = list.prev[event]!
  const after = list.next[event]!
  list.next[before] = after
  list.prev[after] = before
}

function relinkEvent(list: EventList, event: number): void {
  list.next[list.prev[event]!] = event
  list.prev[list.next[event]!] = event
}

/** Removes an operation's call event and its return event (if any) from the list. */
function liftOp(list: EventList, callEvent: number): void {
  unlinkEvent(list, callEvent)
  const returnEvent = list.returnEvent[callEvent]!
  if (returnEvent >= 0) unlinkEvent(list, returnEvent)
}

/** Undoes the matching `liftOp`; must be called in reverse order of the lifts. */
function unliftOp(list: EventList, callEvent: number): void {
  const returnEvent = list.returnEvent[callEvent]!
  if (returnEvent >= 0) relinkEvent(list, returnEvent)
  relinkEvent(list, callEvent)
}

/** Index of the first return event at or after `event`; the list always ends in the tail. */
function firstReturnEvent(list: EventList, event: number): number {
  let current = event
  while (current !== list.tail && list.isCall[current] === 1) current = list.next[current]!
  return current
}

/** 32-bit avalanche mix (murmur3's finalizer), for hashing sets of operations and states. */
function mix32(value: number): number {
  let h = value | 0
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b)
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35)
  return (h ^ (h >>> 16)) >>> 0
}

/**
 * The set of (linearized operations, state) configurations already explored. Sets of
 * operations are bitsets; their hash is maintained incrementally by the search (XOR of one
 * mixed value per member) and states are interned to small integers.
 */
class ExploredConfigurations {
  private readonly buckets = new Map<number, Array<{ readonly stateId: number; readonly bits: Uint32Array }>>()
  private readonly stateIds = new Map<string, number>()

  stateIdOf(stateKey: string): number {
    let stateId = this.stateIds.get(stateKey)
    if (stateId === undefined) {
      stateId = this.stateIds.size
      this.stateIds.set(stateKey, stateId)
    }
    return stateId
  }

  /** Records the configuration; false when it was already recorded. */
  insert(bits: Uint32Array, bitsHash: number, stateId: number): boolean {
    const hash = mix32(bitsHash ^ Math.imul(stateId + 1, 0x9e3779b1))
    let bucket = this.buckets.get(hash)
    if (bucket === undefined) {
      bucket = []
      this.buckets.set(hash, bucket)
    }
    for (const explored of bucket) {
      if (explored.stateId === stateId && bitsEqual(explored.bits, bits)) return false
    }
    bucket.push({ stateId, bits: bits.slice() })
    return true
  }
}

function bitsEqual(a: Uint32Array, b: Uint32Array): boolean {
  for (let word = 0; word < a.length; word++) {
    if (a[word] !== b[word]) return false
  }
  return true
}

function toggleBit(bits: Uint32Array, index: number): void {
  const word = index >>> 5
  bits[word] = bits[word]! ^ (1 << (index & 31))
}

/** The state after `op` when applied in `state`, or undefined when its output is impossible. */
function applyOp<S, I, O>(model: Model<S, I, O>, state: S, op: Op<I, O>): { readonly state: S } | undefined {
  if (op.output === null) return { state: model.stepUnknown(state, op.input) }
  const result = model.step(state, op.input, op.output)
  return result.ok ? result : undefined
}

/** One linearized operation on the search stack: its call event and the state before it. */
interface StackFrame<S> {
  readonly callEvent: number
  readonly stateBefore: S
}

function searchPartition<S, I, O>(model: Model<S, I, O>, ops: ReadonlyArray<Op<I, O>>, stepsMax: number): SearchOutcome {
  let completedRemaining = ops.reduce((count, op) => count + (op.completedAt === null ? 0 : 1), 0)
  if (completedRemaining === 0) return { _tag: "Linearized" }

  const list = buildEventList(ops)
  const opMix = Uint32Array.from(ops, (_, opIndex) => mix32(opIndex + 1))
  const bits = new Uint32Array(Math.ceil(ops.length / 32))
  let bitsHash = 0
  const explored = new ExploredConfigurations()
  const stack: Array<StackFrame<S>> = []
  let state = model.init()
  let deepest: SearchStuck = stuckAt(model, list, ops, stack, state)

  let event = list.next[list.head]!
  for (let steps = 0; steps < stepsMax; steps++) {
    assert(event !== list.tail, "a pending return event stops every scan before the tail")
    const opIndex = list.opIndex[event]!
    if (list.isCall[event] === 1) {
      const op = ops[opIndex]!
      const applied = applyOp(model, state, op)
      if (applied !== undefined) {
        toggleBit(bits, opIndex)
        const stateId = explored.stateIdOf(model.key(applied.state))
        if (explored.insert(bits, bitsHash ^ opMix[opIndex]!, stateId)) {
          bitsHash ^= opMix[opIndex]!
          stack.push({ callEvent: event, stateBefore: state })
          state = applied.state
          liftOp(list, event)
          if (op.completedAt !== null) completedRemaining--
          if (completedRemaining === 0) return { _tag: "Linearized" }
          if (stack.length > deepest.longestPrefix.length) deepest = stuckAt(model, list, ops, stack, state)
          event = list.next[list.head]!
          continue
        }
        toggleBit(bits, opIndex)
      }
      event = list.next[event]!
    } else {
      // The operation returning here was not linearized in time: undo the latest choice.
      const frame = stack.pop()
      if (frame === undefined) return deepest
      const undoneOpIndex = list.opIndex[frame.callEvent]!
      toggleBit(bits, undoneOpIndex)
      bitsHash ^= opMix[undoneOpIndex]!
      state = frame.stateBefore
      unliftOp(list, frame.callEvent)
      if (ops[undoneOpIndex]!.completedAt !== null) completedRemaining++
      event = list.next[frame.callEvent]!
    }
  }
  return { _tag: "Budget" }
}

function stuckAt<S, I, O>(
  model: Model<S, I, O>,
  list: EventList,
  ops: ReadonlyArray<Op<I, O>>,
  stack: ReadonlyArray<StackFrame<S>>,
  state: S
): SearchStuck {
  const blockingEvent = firstReturnEvent(list, list.next[list.head]!)
  assert(blockingEvent !== list.tail, "a completed operation remains while the search is stuck")
  return {
    _tag: "Stuck",
    longestPrefix: stack.map((frame) => ops[list.opIndex[frame.callEvent]!]!.id),
    stateKey: model.key(state),
    blockingOpIndex: list.opIndex[blockingEvent]!
  }
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
  return JSON.stringify([...state.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
}

/**
 * Splits a key-value history into one partition per key (keys in sorted order, operations in
 * history order), and leaves out unknown-outcome operations that cannot change the verdict:
 * - reads of unknown outcome (they change nothing and promise nothing);
 * - writes and cas of unknown outcome whose value no other operation of the key mentions (as a
 *   read result or a cas's expected value), when no cas of the key is known to have failed.
 *   Take a linearization where such a write takes effect: until the next write, no completed
 *   read can run (it would return the unmentioned value), no cas can succeed (its expected
 *   value would be the unmentioned one) and no cas failed; the only operations there are
 *   unknown cas that did not apply. Dropping the write and those cas leaves a linearization.
 *   This matters: an unknown operation stays a candidate for the whole rest of the history, so
 *   each one kept can double the search.
 */
export function partitionKvByKey(ops: ReadonlyArray<Op<KvInput, KvOutput>>): ReadonlyArray<Partition<KvInput, KvOutput>> {
  const opsByKey = new Map<string, Array<Op<KvInput, KvOutput>>>()
  for (const op of ops) {
    const keyOps = opsByKey.get(op.input.key)
    if (keyOps === undefined) opsByKey.set(op.input.key, [op])
    else keyOps.push(op)
  }
  const keys = [...opsByKey.keys()].sort()
  return keys.map((key) => ({ name: key, ops: withoutIrrelevantUnknownOps(opsByKey.get(key)!) }))
}

function withoutIrrelevantUnknownOps(ops: ReadonlyArray<Op<KvInput, KvOutput>>): ReadonlyArray<Op<KvInput, KvOutput>> {
  const casFailed = ops.some((op) => op.output?.kind === "cas-failed")
  // How many operations mention each value; an operation's own expected value counts, so
  // subtract it when asking whether *other* operations mention its written value.
  const mentions = new Map<string | null, number>()
  const mention = (value: string | null): void => {
    mentions.set(value, (mentions.get(value) ?? 0) + 1)
  }
  for (const op of ops) {
    if (op.output?.kind === "value") mention(op.output.value)
    if (op.input.kind === "cas") mention(op.input.expected)
  }
  return ops.filter((op) => {
    if (op.output !== null) return true
    switch (op.input.kind) {
      case "read":
        return false
      case "write":
        return casFailed || (mentions.get(op.input.value) ?? 0) > 0
      case "cas": {
        const selfMentions = op.input.expected === op.input.value ? 1 : 0
        return casFailed || (mentions.get(op.input.value) ?? 0) - selfMentions > 0
      }
    }
  })
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
 * sorted order) with no linearization; `stepsMax` bounds the search per key.
 */
export function checkKvHistory(
  history: ReadonlyArray<HistoryOp>,
  options?: { readonly stepsMax?: number }
): LinearizabilityResult {
  history.forEach(assertKvOutputMatchesInput)
  return checkLinearizable(kvModel, history, { stepsMax: options?.stepsMax ?? kvStepsMaxDefault })
}
