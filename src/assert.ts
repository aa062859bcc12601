// Invariant failures are defects: they throw, and the actor supervising the caller takes the
// node down. Never catch an AssertionError to carry on.

export class AssertionError extends Error {
  override readonly name = "AssertionError"
}

export function assert(condition: unknown, why: string): asserts condition {
  if (!condition) throw new AssertionError(`assertion failed: ${why}`)
}

export function assertNever(value: never, why = "unexpected variant"): never {
  throw new AssertionError(`${why}: ${JSON.stringify(value)}`)
}

export function unreachable(why: string): never {
  throw new AssertionError(`unreachable: ${why}`)
}
