// What several benchmarks share: reading `--name value` options, and `writers` fibers issuing
// one statement after another until a deadline, counting outcomes and timing each.
import { Cause, Effect, Option } from "effect"

export function option(args: ReadonlyArray<string>, name: string): string | undefined {
  const at = args.indexOf(`--${name}`)
  return at >= 0 ? args[at + 1] : undefined
}

export interface WritersOutcome {
  readonly ok: number
  readonly errors: number
  /** Failures by their error's `_tag` ("defect" when there is none). */
  readonly errorTags: ReadonlyMap<string, number>
  readonly seconds: number
  /** Latencies of the statements that succeeded, sorted. */
  readonly latenciesMs: ReadonlyArray<number>
}

/** Runs `writers` fibers, each running `statement(writer, i)` for i = 0, 1, … until `seconds`
 * have passed. */
export const runWriters = <R>(
  writers: number,
  seconds: number,
  statement: (writer: number, i: number) => Effect.Effect<unknown, unknown, R>
): Effect.Effect<WritersOutcome, never, R> =>
  Effect.gen(function*() {
    const latenciesMs: Array<number> = []
    const errorTags = new Map<string, number>()
    let errors = 0
    const deadline = performance.now() + seconds * 1000
    const started = performance.now()
    yield* Effect.forEach(
      Array.from({ length: writers }, (_, w) => w),
      (w) =>
        Effect.gen(function*() {
          for (let i = 0; performance.now() < deadline; i++) {
            const t0 = performance.now()
            const exit = yield* Effect.exit(statement(w, i))
            if (exit._tag === "Success") {
              latenciesMs.push(performance.now() - t0)
              continue
            }
            errors++
            const failure = Option.getOrUndefined(Cause.failureOption(exit.cause))
            const tag = typeof failure === "object" && failure !== null && "_tag" in failure ? String(failure._tag) : "defect"
            errorTags.set(tag, (errorTags.get(tag) ?? 0) + 1)
          }
        }),
      { concurrency: "unbounded", discard: true }
    )
    const elapsed = (performance.now() - started) / 1000
    latenciesMs.sort((a, b) => a - b)
    return { ok: latenciesMs.length, errors, errorTags, seconds: elapsed, latenciesMs }
  })
