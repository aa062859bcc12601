// Runs an Effect program deterministically and synchronously: a simulated Clock whose sleepers
// wake in (time, registration) order, and a scheduler whose task queue the driver drains
// completely between wake-ups. TestClock does the same job in unit tests, but it waits on real
// timers for every sleeper it wakes; here a seed of a whole cluster runs without touching the
// event loop, so thousands of seeds are practical.
import type { Duration, Fiber, Scheduler } from "effect"
import { Clock, Duration as D, Effect, Exit, Fiber as F, Supervisor } from "effect"

class SimScheduler implements Scheduler.Scheduler {
  private tasks: Array<Scheduler.Task> = []

  scheduleTask(task: Scheduler.Task): void {
    this.tasks.push(task)
  }

  shouldYield(fiber: Fiber.RuntimeFiber<unknown, unknown>): number | false {
    return fiber.currentOpCount > 2048 ? 0 : false
  }

  /** Runs tasks until none is left; `tasksMax` bounds a runaway loop. */
  flush(tasksMax: number): void {
    let ran = 0
    while (this.tasks.length > 0) {
      const batch = this.tasks
      this.tasks = []
      for (const task of batch) task()
      ran += batch.length
      if (ran > tasksMax) throw new Error(`simulation livelock: more than ${tasksMax} tasks without time passing`)
    }
  }
}

interface Sleeper {
  readonly at: number
  readonly seq: number
  wake: (() => void) | null
}

class SimClock implements Clock.Clock {
  readonly [Clock.ClockTypeId]: Clock.ClockTypeId = Clock.ClockTypeId
  nowMs = 0
  private seq = 0
  private sleepers: Sleeper[] = []

  unsafeCurrentTimeMillis(): number {
    return this.nowMs
  }
  readonly currentTimeMillis = Effect.sync(() => this.nowMs)
  unsafeCurrentTimeNanos(): bigint {
    // nowMs may be fractional: drifting node clocks (DriftClock) sleep fractions of a ms.
    return BigInt(Math.round(this.nowMs * 1_000_000))
  }
  readonly currentTimeNanos = Effect.sync(() => this.unsafeCurrentTimeNanos())

  sleep(duration: Duration.Duration): Effect.Effect<void> {
    return Effect.async<void>((resume) => {
      const sleeper: Sleeper = { at: this.nowMs + D.toMillis(duration), seq: this.seq++, wake: () => resume(Effect.void) }
      this.sleepers.push(sleeper)
      return Effect.sync(() => {
        sleeper.wake = null
      })
    })
  }

  /** Wakes the earliest sleeper(s) due at one instant; false when nobody sleeps. */
  fireNext(): boolean {
    this.sleepers = this.sleepers.filter((s) => s.wake !== null)
    if (this.sleepers.length === 0) return false
    let at = Infinity
    for (const s of this.sleepers) if (s.at < at) at = s.at
    const due = this.sleepers.filter((s) => s.at === at).sort((a, b) => a.seq - b.seq)
    this.sleepers = this.sleepers.filter((s) => s.at !== at)
    this.nowMs = Math.max(this.nowMs, at)
    for (const s of due) s.wake?.()
    return true
  }
}

/** Runs `program` to completion in simulated time; throws if it cannot finish. Fibers the
 * program leaves behind (daemons still sleeping or waiting when it ends: delayed messages, lease
 * timers) are interrupted afterwards: left alone they would stay in Effect's global fiber scope
 * for the life of the process, with everything they hold (a seed's pages, its databases). */
export function runSimulated<A, E>(program: Effect.Effect<A, E>, options: { readonly tasksPerInstantMax: number }): Exit.Exit<A, E> {
  const scheduler = new SimScheduler()
  const clock = new SimClock()
  const fibers = Supervisor.unsafeTrack()
  const simulated = <X, Y>(effect: Effect.Effect<X, Y>) => effect.pipe(Effect.withClock(clock), Effect.withScheduler(scheduler))
  const fiber = Effect.runFork(simulated(program).pipe(Effect.supervised(fibers)), { scheduler })
  let exit: Exit.Exit<A, E>
  for (;;) {
    scheduler.flush(options.tasksPerInstantMax)
    const done = fiber.unsafePoll()
    if (done !== null) {
      exit = done
      break
    }
    if (!clock.fireNext()) {
      exit = Exit.die(new Error("simulation deadlock: the program waits but nothing sleeps"))
      break
    }
  }
  // Bounded: a fiber that keeps running after interruption is a bug the flush bound reports.
  for (let round = 0; round < 10; round++) {
    const left = Effect.runSync(fibers.value)
    if (left.length === 0) break
    const cleanup = Effect.runFork(simulated(F.interruptAll(left)), { scheduler })
    for (let instant = 0; instant < 1000 && cleanup.unsafePoll() === null; instant++) {
      scheduler.flush(options.tasksPerInstantMax)
      if (cleanup.unsafePoll() === null && !clock.fireNext()) break
    }
  }
  return exit
}

/** One node's clock, running at `rate` times the simulation's (a quartz a little fast or slow):
 * its time advances `rate` ms per simulated ms, and its sleeps last duration / rate. Monotonic,
 * like the real one; every fiber forked under Effect.withClock(driftClock) (a node's actors and
 * ticker) sees only this clock. */
export class DriftClock implements Clock.Clock {
  readonly [Clock.ClockTypeId]: Clock.ClockTypeId = Clock.ClockTypeId
  private readonly originBase: number
  private readonly originLocal: number

  constructor(
    private readonly base: Clock.Clock,
    readonly rate: number,
    originLocalMs = base.unsafeCurrentTimeMillis()
  ) {
    this.originBase = base.unsafeCurrentTimeMillis()
    this.originLocal = originLocalMs
  }

  private local(): number {
    return this.originLocal + (this.base.unsafeCurrentTimeMillis() - this.originBase) * this.rate
  }
  unsafeCurrentTimeMillis(): number {
    return this.local()
  }
  readonly currentTimeMillis = Effect.sync(() => this.local())
  unsafeCurrentTimeNanos(): bigint {
    return BigInt(Math.round(this.local() * 1_000_000))
  }
  readonly currentTimeNanos = Effect.sync(() => this.unsafeCurrentTimeNanos())
  sleep(duration: Duration.Duration): Effect.Effect<void> {
    return this.base.sleep(D.millis(D.toMillis(duration) / this.rate))
  }
}
