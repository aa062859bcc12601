// Effect operations and fiber resumptions of a test's fibers, by kind of fiber, counted with a
// Supervisor as `npm run bench -- opcount` counts a node's actors. Run the measured program
// through `counted` (the Supervisor sees operations only with OpSupervision on) and turn
// `counting` on around the part to measure.
import { Effect, FiberRef, HashMap, RuntimeFlags, RuntimeFlagsPatch, Supervisor } from "effect"
import type { Fiber } from "effect"

export class FiberCounts<K extends string> extends Supervisor.AbstractSupervisor<void> {
  counting = false
  readonly ops: Record<K, number>
  readonly resumptions: Record<K, number>

  /** `kindOf` names the kind a fiber counts under, or null when it is not counted. */
  constructor(kinds: ReadonlyArray<K>, private readonly kindOf: (fiber: Fiber.RuntimeFiber<unknown, unknown>) => K | null) {
    super()
    this.ops = Object.fromEntries(kinds.map((kind) => [kind, 0])) as Record<K, number>
    this.resumptions = Object.fromEntries(kinds.map((kind) => [kind, 0])) as Record<K, number>
  }
  get value(): Effect.Effect<void> {
    return Effect.void
  }
  override onEffect<A, E>(fiber: Fiber.RuntimeFiber<A, E>): void {
    if (!this.counting) return
    const kind = this.kindOf(fiber)
    if (kind !== null) this.ops[kind]++
  }
  override onResume<A, E>(fiber: Fiber.RuntimeFiber<A, E>): void {
    if (!this.counting) return
    const kind = this.kindOf(fiber)
    if (kind !== null) this.resumptions[kind]++
  }
}

/** The fiber's `actor` log annotation (src/runtime/Actor.ts names each actor's fiber so). */
export const actorOf = <A, E>(fiber: Fiber.RuntimeFiber<A, E>): string | null => {
  const name = HashMap.get(fiber.getFiberRef(FiberRef.currentLogAnnotations), "actor")
  return name._tag === "Some" ? String(name.value) : null
}

/** `effect` supervised by `counter`, with operation supervision on. */
export const counted = <A, E, R>(counter: Supervisor.Supervisor<void>, effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  effect.pipe(Effect.supervised(counter), Effect.withRuntimeFlagsPatch(RuntimeFlagsPatch.enable(RuntimeFlags.OpSupervision)))
