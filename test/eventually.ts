// Polls an effect (real time) until it yields a value, for live tests of nodes on loopback.
import { Duration, Effect } from "effect"

/** `check` again every `pollMs` until it is not null; dies naming `what` after `timeoutMs`. */
export const eventually = <A>(what: string, timeoutMs: number, check: Effect.Effect<A | null>, pollMs = 25) =>
  Effect.gen(function*() {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const value = yield* check
      if (value !== null) return value
      if (Date.now() > deadline) return yield* Effect.dieMessage(`timed out after ${timeoutMs} ms waiting for ${what}`)
      yield* Effect.sleep(Duration.millis(pollMs))
    }
  })
