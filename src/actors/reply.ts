// How a request to the Raft actor is answered: a Deferred that a fiber awaits, or a callback run
// synchronously where the answer is known (the Raft actor's or the applier's turn). A callback
// saves the waiting fiber's resumption — a trip through the scheduler behind every other ready
// fiber — on the write path: the leader's writer drives its core straight from the applier.
import { Deferred } from "effect"
import type { Exit } from "effect"
import type { RaftRequestError } from "./raftErrors.ts"

/** A callback reply: must be cheap, must not throw, and is called at most once (`onceReply`). */
export type ReplyCallback<A> = (exit: Exit.Exit<A, RaftRequestError>) => void

export type Reply<A> = Deferred.Deferred<A, RaftRequestError> | ReplyCallback<A>

/** Answers `reply`; a second answer is ignored (as Deferred.unsafeDone ignores it). */
export const complete = <A>(reply: Reply<A>, exit: Exit.Exit<A, RaftRequestError>): void => {
  if (typeof reply === "function") reply(exit)
  else Deferred.unsafeDone(reply, exit)
}

/** `onDone` wrapped so that only the first answer reaches it (a request may be answered by the
 * sweeper's timeout and later by the applier). */
export const onceReply = <A>(onDone: ReplyCallback<A>): ReplyCallback<A> => {
  let done = false
  return (exit) => {
    if (done) return
    done = true
    onDone(exit)
  }
}
