// The simulator's replicated state machine: a map of string registers with write, cas and
// read. Pluggable: the simulator only needs apply / snapshot / restore and a content digest.
import type { SnapshotSource } from "../../src/actors/snapshotData.ts"
import { readAllBytes, snapshotOfBytes } from "../../src/actors/snapshotData.ts"
import { Effect } from "effect"
import { Packr } from "msgpackr"
import type { StateMachine as ActorStateMachine } from "../../src/actors/Applier.ts"
import type { Entry, SnapshotMeta } from "../../src/raft/types.ts"

export type KvCommand =
  | { readonly op: number; readonly kind: "write"; readonly key: string; readonly value: string }
  | { readonly op: number; readonly kind: "cas"; readonly key: string; readonly expected: string | null; readonly value: string }

export type KvResult = { readonly kind: "ok" } | { readonly kind: "cas-failed" }

const packr = new Packr({ useRecords: false })

export function encodeCommand(command: KvCommand): Uint8Array {
  return packr.pack(command)
}

export function decodeCommand(data: Uint8Array): KvCommand {
  return packr.unpack(data) as KvCommand
}

export interface StateMachine<R> {
  apply(data: Uint8Array): R
  read(key: string): string | null
  snapshot(): Uint8Array
  restore(data: Uint8Array): void
  digest(): string
}

export class KvStore implements StateMachine<{ readonly op: number; readonly result: KvResult }> {
  private values = new Map<string, string>()

  apply(data: Uint8Array): { readonly op: number; readonly result: KvResult } {
    const command = decodeCommand(data)
    if (command.kind === "write") {
      this.values.set(command.key, command.value)
      return { op: command.op, result: { kind: "ok" } }
    }
    const current = this.values.get(command.key) ?? null
    if (current !== command.expected) return { op: command.op, result: { kind: "cas-failed" } }
    this.values.set(command.key, command.value)
    return { op: command.op, result: { kind: "ok" } }
  }

  read(key: string): string | null {
    return this.values.get(key) ?? null
  }

  snapshot(): Uint8Array {
    return packr.pack([...this.values.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
  }

  restore(data: Uint8Array): void {
    this.values = new Map(packr.unpack(data) as Array<[string, string]>)
  }

  digest(): string {
    return [...this.values.entries()]
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([k, v]) => `${k}=${v}`)
      .join(",")
  }
}

/** The store as the actors' pluggable state machine (src/actors/Applier.ts). */
export class KvMachine implements ActorStateMachine<KvApplyResult | undefined> {
  readonly store = new KvStore()
  /** The last index applied (or restored from a snapshot). */
  appliedIndex = 0
  constructor(private readonly onApplied: (entry: Entry) => void) {}

  readonly apply = (entry: Entry) =>
    Effect.sync((): KvApplyResult | undefined => {
      this.onApplied(entry)
      this.appliedIndex = entry.index
      return entry.kind === "command" ? this.store.apply(entry.data) : undefined
    })

  readonly snapshot = snapshotOfBytes(Effect.sync(() => this.store.snapshot()))

  readonly restore = (meta: SnapshotMeta, source: SnapshotSource) =>
    Effect.map(Effect.orDie(readAllBytes(source)), (data) => {
      this.store.restore(data)
      this.appliedIndex = meta.index
    })

  read(key: string): string | null {
    return this.store.read(key)
  }
}

export type KvApplyResult = { readonly op: number; readonly result: KvResult }
