// The expected failures of the actor runtime: one tag per thing a caller does differently.
import { Cause, Data } from "effect"

/** `trySend` found the mailbox full: the caller sheds load (an edge answers "overloaded"). */
export class MailboxFull extends Data.TaggedError("MailboxFull")<{
  readonly actor: string
  readonly capacity: number
}> {}

/** The actor has stopped for good (its scope closed, or supervision gave up): nothing sent to
 * it will be handled, so the caller stops waiting instead of hanging. */
export class ActorStopped extends Data.TaggedError("ActorStopped")<{
  readonly actor: string
}> {}

/** No reply came within `timeoutMs`; the request may or may not have been handled. */
export class AskTimeout extends Data.TaggedError("AskTimeout")<{
  readonly actor: string
  readonly timeoutMs: number
}> {}

/** The actor died more than its restart budget allows; the owner decides (a node shuts down).
 * `cause` is the last defect; `restarts` counts the restarts inside the window before it. */
export class ActorFailed extends Data.TaggedError("ActorFailed")<{
  readonly actor: string
  readonly restarts: number
  readonly cause: Cause.Cause<unknown>
}> {}

/** One line saying which actor gave up and why (the first line of its last defect), for the
 * message a node prints when it stops on purpose. */
export function describeActorFailed(failure: ActorFailed): string {
  const error = Cause.squash(failure.cause)
  const tag = typeof error === "object" && error !== null && "_tag" in error && typeof error._tag === "string" ? `${error._tag}: ` : ""
  const text = error instanceof Error ? error.message : String(error)
  const firstLine = text.split("\n")[0] ?? ""
  return `actor ${failure.actor} gave up after ${failure.restarts} restarts (${tag}${firstLine})`
}
