// The chaos suite's history: every client operation of every workload, from the Go client
// (one JSON line each on its stdout) and the TypeScript client alike, with real invoke and
// complete times (ms since 1970, fractional).

export type Workload = "set" | "register" | "bank" | "list"
export const workloads: ReadonlyArray<Workload> = ["set", "register", "bank", "list"]

/** "ok": done; "fail": certainly not applied; "info": unknown outcome (timeout, connection or
 * leadership lost mid-write) — it may have taken effect at any time after invocation, or never. */
export type OpType = "ok" | "fail" | "info"

export interface ChaosOp {
  readonly workload: Workload
  /** Who issued it ("g3" for a Go worker, "t2" for a TypeScript one, "final" for the end). */
  readonly client: string
  /** set: add; register: read | write | cas; bank: transfer | read; list: append | read. */
  readonly f: string
  readonly value: unknown
  readonly invokedAt: number
  /** null iff type is "info". */
  readonly completedAt: number | null
  readonly type: OpType
  readonly result?: unknown
  readonly error?: string
}

export interface RegisterValue {
  readonly key: number
  readonly value?: string
  readonly expected?: string | null
}

/** Ops that change state: the workloads' writes (availability gaps are measured on these). */
export function isWrite(op: ChaosOp): boolean {
  return op.f !== "read"
}

/** Parses one line of the Go client's output; throws on anything that is not an operation. */
export function parseOpLine(line: string): ChaosOp {
  const raw = JSON.parse(line) as Record<string, unknown>
  const workload = raw["workload"]
  const type = raw["type"]
  if (typeof workload !== "string" || !(workloads as ReadonlyArray<string>).includes(workload)) throw new Error(`not an operation: ${line}`)
  if (type !== "ok" && type !== "fail" && type !== "info") throw new Error(`bad op type: ${line}`)
  if (typeof raw["invokedAt"] !== "number" || typeof raw["client"] !== "string" || typeof raw["f"] !== "string") throw new Error(`bad op: ${line}`)
  const completedAt = raw["completedAt"]
  if ((completedAt === null || completedAt === undefined) !== (type === "info")) throw new Error(`op completion does not match its type: ${line}`)
  return {
    workload: workload as Workload,
    client: raw["client"],
    f: raw["f"],
    value: raw["value"],
    invokedAt: raw["invokedAt"],
    completedAt: typeof completedAt === "number" ? completedAt : null,
    type,
    ...(raw["result"] !== undefined ? { result: raw["result"] } : {}),
    ...(typeof raw["error"] === "string" ? { error: raw["error"] } : {})
  }
}
