// A mutual-exclusion lock for an Effect that runs once per entry on every node (the segment log's
// persist): an uncontended turn costs a handful of Effect operations, where Effect's semaphore
// (`withPermits(1)`) costs ~25. Waiters take turns in arrival order; an interrupted waiter leaves
// the line, or passes the lock on if it had just been handed it.
import { Effect } from "effect"

interface Waiter {
  granted: boolean
  resume: (() => void) | null
}

export class Mutex {
  private held = false
  private readonly waiters: Array<Waiter> = []

  /** Runs `effect` holding the lock: once the lock is free, and releasing it however `effect`
   * ends (success, failure, defect, interruption). Only the wait and `effect` are interruptible. */
  withLock<A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> {
    return Effect.uninterruptibleMask((restore) => {
      const run = Effect.matchCauseEffect(restore(effect), {
        onFailure: (cause) => {
          this.release()
          return Effect.failCause(cause)
        },
        onSuccess: (value) => {
          this.release()
          return Effect.succeed(value)
        }
      })
      return Effect.suspend(() => {
        if (!this.held) {
          this.held = true
          return run
        }
        // The contended path: wait in line. However the wait ends in an interruption (while
        // waiting, or just after being handed the lock), the handler sees which it was.
        const waiter: Waiter = { granted: false, resume: null }
        this.waiters.push(waiter)
        const turn = Effect.async<void>((resume) => {
          if (waiter.granted) return resume(Effect.void)
          waiter.resume = () => resume(Effect.void)
        })
        return Effect.zipRight(
          Effect.onInterrupt(restore(turn), () =>
            Effect.sync(() => {
              if (waiter.granted) this.release()
              else {
                const at = this.waiters.indexOf(waiter)
                if (at >= 0) this.waiters.splice(at, 1)
              }
            })),
          run
        )
      })
    })
  }

  /** Whether the lock is held now (tests). */
  get isHeld(): boolean {
    return this.held
  }

  /** Hands the lock to the next waiter (it stays held), or frees it. */
  private release(): void {
    const next = this.waiters.shift()
    if (next === undefined) {
      this.held = false
      return
    }
    next.granted = true
    next.resume?.()
  }
}
