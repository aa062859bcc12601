// The chaos suite's checkers, one per workload. Each takes the whole history (every client,
// the final reads included) and returns the violations it found. Unknown outcomes ("info")
// are maybe-applied everywhere; certain failures ("fail") must never show up in any read.
import type { HistoryOp, KvInput, KvOutput } from "../sim/checkers/linearizability.ts"
import { checkKvHistory } from "../sim/checkers/linearizability.ts"
import type { ChaosOp } from "./history.ts"

export interface Violation {
  readonly workload: string
  readonly kind: string
  readonly message: string
}

/** The final reads the runner makes once the cluster has healed carry this client name. */
export const finalClient = "final"

const violation = (workload: string, kind: string, message: string): Violation => ({ workload, kind, message })

function okReads(ops: ReadonlyArray<ChaosOp>): ReadonlyArray<ChaosOp> {
  return ops.filter((op) => op.f === "read" && op.type === "ok")
}

function completedBefore(op: ChaosOp, time: number): boolean {
  return op.type === "ok" && op.completedAt !== null && op.completedAt < time
}

// ---------------------------------------------------------------------------------------------
// set: unique inserts; a read holds every insert acknowledged before it began, and nothing that
// was never attempted or certainly failed
// ---------------------------------------------------------------------------------------------

export function checkSet(ops: ReadonlyArray<ChaosOp>): ReadonlyArray<Violation> {
  const adds = ops.filter((op) => op.workload === "set" && op.f === "add")
  const reads = okReads(ops.filter((op) => op.workload === "set"))
  const out: Array<Violation> = []
  if (!reads.some((read) => read.client === finalClient)) out.push(violation("set", "no-final-read", "the set was never read after healing"))
  const typeOf = new Map<string, ChaosOp>()
  for (const add of adds) typeOf.set(add.value as string, add)
  for (const read of reads) {
    const seen = new Set(read.result as ReadonlyArray<string>)
    if (seen.size !== (read.result as ReadonlyArray<string>).length) out.push(violation("set", "duplicate", `a read (${read.client} at ${read.invokedAt}) holds an element twice`))
    for (const value of seen) {
      const add = typeOf.get(value)
      if (add === undefined) out.push(violation("set", "phantom", `${JSON.stringify(value)} was read but never added`))
      else if (add.type === "fail") out.push(violation("set", "failed-applied", `${JSON.stringify(value)} was read but its add failed for certain (${add.error ?? ""})`))
    }
    for (const add of adds) {
      if (completedBefore(add, read.invokedAt) && !seen.has(add.value as string)) {
        out.push(violation("set", "lost", `${JSON.stringify(add.value)} acknowledged at ${add.completedAt} is missing from a read (${read.client}) invoked at ${read.invokedAt}`))
      }
    }
  }
  return out
}

// ---------------------------------------------------------------------------------------------
// register: reads, writes and compare-and-set on a few keys, checked for linearizability by
// the simulator's WGL checker (one search per key)
// ---------------------------------------------------------------------------------------------

export interface RegisterVerdict {
  readonly violations: ReadonlyArray<Violation>
  /** Keys whose search ran out of budget: neither proven nor refuted. */
  readonly uncheckedKeys: number
}

/** The register ops as the WGL checker's key-value history. Certain failures are left out (they
 * did nothing); unknown reads too (they promise nothing). */
export function registerHistory(ops: ReadonlyArray<ChaosOp>): ReadonlyArray<HistoryOp> {
  const clients = new Map<string, number>()
  const history: Array<HistoryOp> = []
  for (const op of ops) {
    if (op.workload !== "register" || op.type === "fail") continue
    if (op.f === "read" && op.type !== "ok") continue
    const value = op.value as { key: number; value?: string; expected?: string | null }
    const key = String(value.key)
    let client = clients.get(op.client)
    if (client === undefined) clients.set(op.client, client = clients.size)
    let input: KvInput
    let output: KvOutput | null = null
    switch (op.f) {
      case "read":
        input = { kind: "read", key }
        output = { kind: "value", value: (op.result as { value: string | null }).value }
        break
      case "write":
        input = { kind: "write", key, value: value.value! }
        if (op.type === "ok") output = { kind: "ok" }
        break
      case "cas":
        input = { kind: "cas", key, expected: value.expected ?? null, value: value.value! }
        if (op.type === "ok") output = (op.result as { applied: boolean }).applied ? { kind: "ok" } : { kind: "cas-failed" }
        break
      default:
        throw new Error(`unknown register operation ${op.f}`)
    }
    history.push({
      id: history.length,
      client,
      input,
      invokedAt: op.invokedAt,
      completedAt: output === null ? null : op.completedAt,
      output
    })
  }
  return history
}

export function checkRegister(ops: ReadonlyArray<ChaosOp>, stepsMax = 200_000): RegisterVerdict {
  const result = checkKvHistory(registerHistory(ops), { stepsMax })
  switch (result._tag) {
    case "Linearizable":
      return { violations: [], uncheckedKeys: 0 }
    case "Unknown":
      return { violations: [], uncheckedKeys: 1 }
    case "NotLinearizable":
      return { violations: [violation("register", "not-linearizable", result.explanation)], uncheckedKeys: 0 }
  }
}

// ---------------------------------------------------------------------------------------------
// bank: transfers in transactions; every read sees all accounts and the initial total
// ---------------------------------------------------------------------------------------------

export interface BankSetup {
  readonly accounts: number
  readonly total: number
}

export function checkBank(ops: ReadonlyArray<ChaosOp>, setup: BankSetup): ReadonlyArray<Violation> {
  const out: Array<Violation> = []
  const reads = okReads(ops.filter((op) => op.workload === "bank"))
  if (!reads.some((read) => read.client === finalClient)) out.push(violation("bank", "no-final-read", "the accounts were never read after healing"))
  for (const read of reads) {
    const balances = (read.result as { balances: Record<string, number> }).balances
    const ids = Object.keys(balances)
    const total = Object.values(balances).reduce((sum, balance) => sum + balance, 0)
    if (ids.length !== setup.accounts || total !== setup.total) {
      out.push(violation("bank", "wrong-total", `a read (${read.client} at ${read.invokedAt}) saw ${ids.length} accounts totalling ${total}, not ${setup.accounts} totalling ${setup.total}: ${JSON.stringify(balances)}`))
    }
  }
  return out
}

// ---------------------------------------------------------------------------------------------
// list-append: appends to a few lists; each acknowledged append present exactly once, every
// read of a list a prefix of its final read (one order everywhere)
// ---------------------------------------------------------------------------------------------

export function checkList(ops: ReadonlyArray<ChaosOp>): ReadonlyArray<Violation> {
  const out: Array<Violation> = []
  const listOps = ops.filter((op) => op.workload === "list")
  const byKey = new Map<number, Array<ChaosOp>>()
  for (const op of listOps) {
    const key = (op.value as { key: number }).key
    const keyOps = byKey.get(key)
    if (keyOps === undefined) byKey.set(key, [op])
    else keyOps.push(op)
  }
  for (const [key, keyOps] of byKey) {
    const appends = keyOps.filter((op) => op.f === "append")
    const appendOf = new Map(appends.map((op) => [(op.value as { value: string }).value, op]))
    const reads = okReads(keyOps)
    const finalRead = reads.find((read) => read.client === finalClient)
    if (finalRead === undefined && appends.some((op) => op.type !== "fail")) {
      out.push(violation("list", "no-final-read", `list ${key} was never read after healing`))
    }
    const reference = (finalRead?.result as { values: ReadonlyArray<string> } | undefined)?.values
    for (const read of reads) {
      const values = (read.result as { values: ReadonlyArray<string> }).values
      const where = `list ${key}, read by ${read.client} at ${read.invokedAt}`
      if (new Set(values).size !== values.length) out.push(violation("list", "duplicate", `${where} holds an element twice: ${JSON.stringify(values)}`))
      for (const value of values) {
        const append = appendOf.get(value)
        if (append === undefined) out.push(violation("list", "phantom", `${where}: ${JSON.stringify(value)} was never appended`))
        else if (append.type === "fail") out.push(violation("list", "failed-applied", `${where}: ${JSON.stringify(value)}'s append failed for certain`))
      }
      if (reference !== undefined && !isPrefix(values, reference)) {
        out.push(violation("list", "order", `${where}: ${JSON.stringify(values)} is not a prefix of the final ${JSON.stringify(reference)}`))
      }
      const present = new Set(values)
      for (const append of appends) {
        if (completedBefore(append, read.invokedAt) && !present.has((append.value as { value: string }).value)) {
          out.push(violation("list", "lost", `${where}: ${JSON.stringify((append.value as { value: string }).value)} acknowledged at ${append.completedAt} is missing`))
        }
      }
    }
  }
  return out
}

function isPrefix(values: ReadonlyArray<string>, of: ReadonlyArray<string>): boolean {
  return values.length <= of.length && values.every((value, index) => of[index] === value)
}
