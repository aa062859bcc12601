// A scheduler for Effect that gives the event loop back every few milliseconds.
//
// Effect's default scheduler (MixedScheduler(2048)) runs ready fibers on microtasks and only falls
// back to a timer after 2,048 nested rounds, so one turn of the event loop runs every fiber that
// is ready and every fiber those make ready: measured on the leader under kvreadwrite ×64 (docs/
// performance.md, "Write coalescing"), 72 % of the busy time ran inside one microtask drain,
// stretches of 15 ms (p50) to 140 ms (p99), and a point read that is answered the moment it is
// decoded still waited that long for its socket's turn. This scheduler runs the same microtask
// rounds, but once a slice has lasted `sliceMs` it continues in `setImmediate`: the loop polls the
// sockets (and fires due timers) between slices, and the work left over runs right after, in the
// same order. No work is dropped or reordered; a single long task is not cut.
import type { Scheduler } from "effect"
import { Scheduler as SchedulerOps } from "effect"

/** Nested microtask rounds before a slice ends whatever the time (Effect's default's bound). */
const roundsMax = 2048

export function makeSlicedScheduler(sliceMs: number): Scheduler.Scheduler {
  if (!(sliceMs > 0)) throw new Error(`sliceMs must be > 0 (got ${sliceMs})`)
  /** When the current slice began (performance.now()), or null between slices. */
  let sliceStartMs: number | null = null
  const endSlice = () => {
    sliceStartMs = null
  }
  const scheduleDrain = (depth: number, drain: (depth: number) => void) => {
    const nowMs = performance.now()
    if (sliceStartMs === null) {
      sliceStartMs = nowMs
      // The slice ends when the loop reaches its check phase: what runs after that is a new turn.
      setImmediate(endSlice)
    }
    if (depth >= roundsMax || nowMs - sliceStartMs >= sliceMs) setImmediate(() => drain(0))
    else void Promise.resolve().then(() => drain(depth + 1))
  }
  const runners = SchedulerOps.SchedulerRunner.cached(scheduleDrain)
  return {
    shouldYield: SchedulerOps.defaultShouldYield,
    scheduleTask: (task, priority, fiber) => runners(fiber).scheduleTask(task, priority)
  }
}

/** The slice from TQLITE_SLICE_MS (a positive number of milliseconds), or null: Effect's default. */
export function sliceMsFromEnv(): number | null {
  const text = typeof process === "object" ? process.env["TQLITE_SLICE_MS"] : undefined
  if (text === undefined || text === "") return null
  const value = Number(text)
  return Number.isFinite(value) && value > 0 ? value : null
}
