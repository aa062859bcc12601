// The simulated network's snapshot path: what a peer link and its receiver do over TCP, in one
// step. The data streams, a chunk at a time, from the sender's snapshot store into the
// receiver's inbox (its incoming file on its own simulated disk, resumed from what that file
// already holds); the envelope is delivered only once it arrived whole and checked.
import { Effect } from "effect"
import type { SnapshotInbox, SnapshotSource } from "../../src/actors/snapshotData.ts"
import { isSnapshotSource } from "../../src/actors/snapshotData.ts"
import type { SnapshotData } from "../../src/raft/messages.ts"

/** The received snapshot as a source in the receiver's store, or null when the transfer failed
 * (the sender's file pruned or its disk crashed, the receiver's disk failing): the message is
 * then lost, as a broken connection would lose it. */
export const transferSnapshot = (data: SnapshotData, inbox: SnapshotInbox, chunkBytes: number): Effect.Effect<SnapshotSource | null> =>
  Effect.gen(function*() {
    if (!isSnapshotSource(data)) return yield* Effect.dieMessage("a simulated InstallSnapshot carries no snapshot source")
    const incoming = yield* inbox.receive(data.meta, data.sizeBytes, data.crc32c)
    let offset = yield* incoming.offset
    while (offset < data.sizeBytes) {
      const chunk = yield* data.read(offset, chunkBytes)
      if (chunk.byteLength === 0) return null
      offset = yield* incoming.writeAt(offset, chunk)
    }
    return yield* incoming.finish
  }).pipe(Effect.catchAll(() => Effect.succeed(null)))
