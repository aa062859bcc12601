// Letting the event loop breathe between the stages of a large payload.
//
// One JavaScript thread carries a node's heartbeats, votes and acknowledgements. Effect's
// scheduler runs ready fibers on microtasks and gives the macrotask queue (timers, socket reads)
// a turn only every couple of thousand of them, so a chain of stages that each touch a large
// entry (capture, encode, persist, pack, write on a leader; receive, decode, persist on a
// follower) runs as one block: measured on the dev VM (issue 17), a 20 MiB entry held the
// leader's loop 3 s, the followers elected a new leader after 0.6 s, and every retry did the
// same. Between two such stages the fiber yields here, so the Ticker's timers and the sockets'
// reads run and heartbeats go out (and come back) while the entry moves through the node.
import { Duration, Effect } from "effect"

/** Payloads from this size yield between stages: a copy of 1 MiB costs 1–15 ms (fresh memory
 * on the dev VM), so smaller ones never hold the loop long and pay no extra macrotask hop. */
export const largePayloadBytes = 1024 * 1024

/** Suspends the fiber for a zero-length sleep on Effect's Clock. On the live clock that is a
 * real `setTimeout(0)`: the fiber resumes in a later turn of the event loop's timers phase,
 * after other timers and socket reads. Under a simulated clock there is no real loop to free:
 * TestClock completes a zero sleep at once, the simulators' SimClock wakes it in its own
 * deterministic order (a real timer there would never fire inside a synchronous seed: seen as
 * lost liveness in SQLite simulator seeds). */
export const yieldToLoop: Effect.Effect<void> = Effect.sleep(Duration.zero)

/** `effect`, after a `yieldToLoop` when `bytes` is a large payload; a small one pays nothing
 * (not even an extra operation: the hot path's proposals and log writes use it). */
export const afterYieldIfLarge = <A, E, R>(bytes: number, effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  bytes >= largePayloadBytes ? Effect.zipRight(yieldToLoop, effect) : effect

/** Runs a generator of synchronous steps (each about `largePayloadBytes` of work: a capture or an
 * encoding) to its end, with `yieldToLoop` between steps; undefined when `abandoned()` said so
 * before a step. */
export const stepsYielding = <A>(steps: Generator<void, A>, abandoned: () => boolean = () => false): Effect.Effect<A | undefined> => {
  const step = (): Effect.Effect<A | undefined> =>
    Effect.suspend(() => {
      if (abandoned()) return Effect.succeed(undefined)
      const next = steps.next()
      return next.done === true ? Effect.succeed(next.value) : Effect.zipRight(yieldToLoop, step())
    })
  return step()
}
