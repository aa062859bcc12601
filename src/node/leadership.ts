// Which leadership the node holds, as something a client connection can wait on: the gateway
// closes a connection opened on a leader as soon as that leadership ends (deposed by a higher
// term, stepped down by check-quorum after a pause, or handed over), so its clients look for the
// new leader at once instead of asking a node that no longer leads.
import type { Scope } from "effect"
import { Deferred, Effect, Stream } from "effect"
import type { NodeStatus } from "../actors/RaftActor.ts"

export interface LeadershipWatch {
  /** While the node leads: an effect that completes when this leadership ends; otherwise null. */
  readonly currentEnd: Effect.Effect<Effect.Effect<void> | null>
}

/** Follows the node's role changes (and reads its status on each `currentEnd`), in the current
 * scope: a leadership ends the moment the Raft actor says so. */
export const watch = (status: Effect.Effect<NodeStatus>, changes: Stream.Stream<NodeStatus>): Effect.Effect<LeadershipWatch, never, Scope.Scope> =>
  Effect.gen(function*() {
    let held: { readonly term: number; readonly ended: Deferred.Deferred<void> } | null = null
    const see = (now: NodeStatus) =>
      Effect.gen(function*() {
        const leading = now.role === "leader"
        if (held !== null && (!leading || now.term !== held.term)) {
          const ended = held.ended
          held = null
          yield* Deferred.succeed(ended, undefined)
        }
        if (leading && held === null) held = { term: now.term, ended: yield* Deferred.make<void>() }
        return held
      })
    const check = Effect.flatMap(status, see)
    yield* Effect.forkScoped(Stream.runForEach(changes, see))
    // Whatever still waits when the node stops is released: the node no longer leads anything.
    yield* Effect.addFinalizer(() => held === null ? Effect.void : Deferred.succeed(held.ended, undefined))
    return { currentEnd: Effect.map(check, (now) => (now === null ? null : Deferred.await(now.ended))) }
  })
