// The expected failures of the actor runtime: one tag per thing a caller does differently.
import type { Cause } from "effect"
import { Data } from "effect"

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
