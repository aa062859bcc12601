// Turns Effect's Clock into tick inputs, so TestClock (and the simulator) drive every timer.
import type { Fiber, Scope } from "effect"
import { Duration, Effect } from "effect"
import { assert } from "../assert.ts"

export interface TickerOptions<E, R> {
  readonly intervalMs: number
  /** Runs once per tick, e.g. `actor.send(Tick)`. */
  readonly onTick: Effect.Effect<void, E, R>
}

/** Starts a fiber in the current scope that runs `onTick` every `intervalMs`, the first after
 * one interval. Ticks are spaced, not fixed-rate: the next interval starts when `onTick` has
 * returned, so while a slow receiver's mailbox is full the ticker waits in `send`: beyond what
 * the mailbox holds, one tick waits, and missed ticks are not replayed in a burst. The fiber ends when the scope
 * closes, or with `onTick`'s error (e.g. ActorStopped: nobody left to tick). */
export const make = <E, R>(
  options: TickerOptions<E, R>
): Effect.Effect<Fiber.RuntimeFiber<never, E>, never, Scope.Scope | R> =>
  Effect.suspend(() => {
    assert(Number.isFinite(options.intervalMs) && options.intervalMs > 0, "intervalMs > 0")
    return Effect.sleep(Duration.millis(options.intervalMs)).pipe(
      Effect.zipRight(options.onTick),
      Effect.forever,
      Effect.forkScoped
    )
  })
