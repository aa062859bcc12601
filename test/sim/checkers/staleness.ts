// Checkers for the read levels weaker than linearizable (src/actors/RaftActor.ts
// ReadConsistency), on the key-value simulator's history:
// - session: a read reflects every write up to the client's session index (the Raft index of its
//   last acknowledged write): it returns the value of the last write to its key at or below that
//   index, or a later one — never an older one;
// - bounded: a read invoked at tick t reflects every write acknowledged at or before t − bound:
//   no write to its key acknowledged that early has a higher index than the value it returned.
// Which write set which value, and at which index, comes from the committed log itself (replayed
// in index order), so a value is placed exactly even when its writer never heard the outcome.
import type { Entry, LogIndex } from "../../../src/raft/types.ts"
import type { Violation } from "./safety.ts"
import { decodeCommand } from "../kv.ts"

export interface LevelRead {
  readonly client: number
  readonly key: string
  readonly value: string | null
  readonly level: "session" | "bounded"
  readonly invokedTick: number
  /** session: the client's session index when it asked. */
  readonly sessionIndex: LogIndex
  /** bounded: ticks a write may be acknowledged before the read and still be missed. */
  readonly boundTicks: number
}

export interface AckedWrite {
  readonly key: string
  readonly value: string
  readonly index: LogIndex
  readonly ackedTick: number
}

/** The writes that took effect, by key, in index order: the committed log replayed. A gap in the
 * log (an index no node applied) ends the replay there: a conditional write after it cannot be
 * judged. */
export function effectiveWrites(entries: ReadonlyMap<LogIndex, Entry>): Map<string, Array<{ readonly value: string; readonly index: LogIndex }>> {
  const byKey = new Map<string, Array<{ readonly value: string; readonly index: LogIndex }>>()
  const current = new Map<string, string>()
  const last = Math.max(0, ...entries.keys())
  for (let index = 1; index <= last; index++) {
    const entry = entries.get(index)
    if (entry === undefined) break
    if (entry.kind !== "command") continue
    const command = decodeCommand(entry.data)
    if (command.kind === "cas" && (current.get(command.key) ?? null) !== command.expected) continue
    current.set(command.key, command.value)
    const list = byKey.get(command.key) ?? []
    list.push({ value: command.value, index })
    byKey.set(command.key, list)
  }
  return byKey
}

export function checkLevelReads(
  reads: ReadonlyArray<LevelRead>,
  acked: ReadonlyArray<AckedWrite>,
  writes: ReadonlyMap<string, ReadonlyArray<{ readonly value: string; readonly index: LogIndex }>>
): Violation[] {
  const violations: Violation[] = []
  const fail = (invariant: Violation["invariant"], detail: string) => {
    if (violations.length < 20) violations.push({ invariant, detail })
  }
  for (const read of reads) {
    const history = writes.get(read.key) ?? []
    const placed = read.value === null ? { index: 0 } : history.find((w) => w.value === read.value)
    // A value no committed write produced is not this checker's business (linearizability and
    // state-machine safety catch phantoms); it cannot be placed.
    if (placed === undefined) continue
    if (read.level === "session") {
      let due: { readonly value: string; readonly index: LogIndex } | undefined
      for (const w of history) if (w.index <= read.sessionIndex) due = w
      if (due !== undefined && placed.index < due.index) {
        fail("session", `client ${read.client} read ${read.key}=${read.value ?? "null"} (index ${placed.index}) with session index ${read.sessionIndex}, missing ${due.value} at ${due.index}`)
      }
    } else {
      const missed = acked.find((w) => w.key === read.key && w.ackedTick <= read.invokedTick - read.boundTicks && w.index > placed.index)
      if (missed !== undefined) {
        fail("bounded-staleness", `client ${read.client} read ${read.key}=${read.value ?? "null"} (index ${placed.index}) at tick ${read.invokedTick}, missing ${missed.value} at ${missed.index} acknowledged at tick ${missed.ackedTick} (bound ${read.boundTicks} ticks)`)
      }
    }
  }
  return violations
}
