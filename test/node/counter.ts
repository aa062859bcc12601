// A state machine for node tests: the sum of each command's first byte; its snapshot is the
// total as 8 bytes.
import { Effect } from "effect"
import type { StateMachine } from "../../src/actors/Applier.ts"
import type { BootSnapshot, SnapshotSource } from "../../src/actors/snapshotData.ts"
import { readAllBytes, snapshotOfBytes } from "../../src/actors/snapshotData.ts"
import type { Entry } from "../../src/raft/types.ts"

export class Counter implements StateMachine<number> {
  total = 0
  constructor(start: Uint8Array | null) {
    if (start !== null) this.total = new DataView(start.buffer, start.byteOffset).getFloat64(0)
  }
  readonly apply = (entry: Entry) =>
    Effect.sync(() => {
      if (entry.kind === "command") this.total += entry.data[0] ?? 0
      return this.total
    })
  readonly snapshot = snapshotOfBytes(Effect.sync(() => {
    const data = new Uint8Array(8)
    new DataView(data.buffer).setFloat64(0, this.total)
    return data
  }))
  readonly restore = (_: unknown, source: SnapshotSource) =>
    Effect.map(Effect.orDie(readAllBytes(source)), (data) => void (this.total = new DataView(data.buffer, data.byteOffset).getFloat64(0)))
}

/** `NodeOptions.stateMachine` for a Counter: fresh, or from the node's boot snapshot. */
export const counterMachine = (_identity: unknown, snapshot: BootSnapshot | null): Effect.Effect<Counter> =>
  snapshot === null ? Effect.succeed(new Counter(null)) : Effect.map(Effect.flatMap(snapshot.load, (source) => Effect.orDie(readAllBytes(source))), (data) => new Counter(data))
