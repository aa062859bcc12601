// Request/reply over an actor: the request carries a Deferred, the asker waits on it with a
// timeout, and stops waiting as soon as the actor has stopped for good.
import { Deferred, Duration, Effect, Option } from "effect"
import type { Actor } from "./Actor.ts"
import { ActorStopped, AskTimeout } from "./errors.ts"

/** Where the actor puts its answer; put it in the request message. */
export type Reply<A, E = never> = Deferred.Deferred<A, E>

/** Sends `request(reply)` (with back-pressure) and waits for the reply. `timeoutMs` bounds the
 * whole wait, mailbox included. After an AskTimeout the request may still be handled later;
 * its reply is then dropped. A request in a batch that died is never answered: AskTimeout.
 * Annotate `request`'s parameter (`(reply: Reply<A, E>) => …`): that is what fixes A and E. */
export const ask = <M, A, E = never>(
  actor: Actor<M>,
  request: (reply: Reply<A, E>) => M,
  options: { readonly timeoutMs: number }
): Effect.Effect<A, E | AskTimeout | ActorStopped> =>
  Effect.gen(function*() {
    const reply = yield* Deferred.make<A, E>()
    yield* actor.send(request(reply))
    return yield* Effect.raceFirst(Deferred.await(reply), replyOrStopped(actor, reply))
  }).pipe(
    Effect.timeoutFail({
      duration: Duration.millis(options.timeoutMs),
      onTimeout: () => new AskTimeout({ actor: actor.name, timeoutMs: options.timeoutMs })
    })
  )

/** Once the actor has stopped, a reply already given still wins; otherwise none will come. */
const replyOrStopped = <M, A, E>(actor: Actor<M>, reply: Reply<A, E>): Effect.Effect<A, E | ActorStopped> =>
  Effect.ignore(actor.stopped).pipe(
    Effect.zipRight(Deferred.poll(reply)),
    Effect.flatMap((given): Effect.Effect<A, E | ActorStopped> =>
      Option.getOrElse(given, () => Effect.fail(new ActorStopped({ actor: actor.name })))
    )
  )

/** Answers a request with `result`'s outcome (run once). A second answer, or one nobody waits
 * for any more, is dropped. */
export const respond = <A, E>(reply: Reply<A, E>, result: Effect.Effect<A, E>): Effect.Effect<void> =>
  Effect.asVoid(Deferred.complete(reply, result))
