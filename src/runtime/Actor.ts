// An actor is one scoped fiber that owns its state and drains a bounded mailbox in batches.
// Handling a whole batch per call is what lets the log writer cover many entries with one fsync.
import type { Array as Arr, Cause, Scope } from "effect"
import { Chunk, Clock, Deferred, Effect, Exit, Option, Queue } from "effect"
import { assert, unreachable } from "../assert.ts"
import { ActorFailed, ActorStopped, MailboxFull } from "./errors.ts"

/** How many deaths an actor survives: past `restartsMax` restarts within `windowMs` (read
 * from Effect's `Clock`), the next death stops it and escalates to its owner. */
export interface Supervision {
  readonly restartsMax: number
  readonly windowMs: number
}

export interface ActorOptions<S, M, R> {
  /** Names the actor in logs and errors. */
  readonly name: string
  /** Messages the mailbox holds; `send` suspends and `trySend` fails beyond it. */
  readonly mailboxCapacity: number
  /** Most messages handed to one `receive` call. */
  readonly batchMax: number
  /** Builds the state; run again on every restart, so a restart never sees a dead run's state. */
  readonly initial: Effect.Effect<S, never, R>
  /** Handles a non-empty batch, oldest first, and returns the next state. A defect here (or in
   * `initial`) is logged and restarts the actor; the rest of that batch is lost. */
  readonly receive: (state: S, batch: Arr.NonEmptyReadonlyArray<M>) => Effect.Effect<S, never, R>
  readonly supervision: Supervision
}

export interface Actor<M> {
  readonly name: string
  /** Enqueues, suspending while the mailbox is full: back-pressure inside the node's pipeline.
   * Fails with `ActorStopped` if the actor has stopped, also when it stops while this waits. */
  readonly send: (message: M) => Effect.Effect<void, ActorStopped>
  /** Enqueues or fails at once: for edges (clients, peers) that must shed load, not wait. */
  readonly trySend: (message: M) => Effect.Effect<void, MailboxFull | ActorStopped>
  /** Enqueues at once if the mailbox has room and the actor runs; false otherwise (then `send`
   * to wait for room, or learn why). The cheap first try of a hot path. */
  readonly offer: (message: M) => boolean
  /** Messages waiting: queued plus those of suspended senders; 0 once stopped. */
  readonly size: Effect.Effect<number>
  /** Waits until the actor has stopped for good: succeeds when its scope closed, fails with
   * `ActorFailed` when supervision gave up — the owner's cue to shut the node down. */
  readonly stopped: Effect.Effect<void, ActorFailed>
}

/** Starts the actor in the current scope; closing the scope interrupts it (a clean stop) and
 * shuts its mailbox, so no sender waits forever. */
export const make = <S, M, R>(
  options: ActorOptions<S, M, R>
): Effect.Effect<Actor<M>, never, Scope.Scope | R> =>
  Effect.gen(function*() {
    validate(options)
    const { name, mailboxCapacity } = options
    const mailbox = yield* Queue.bounded<M>(mailboxCapacity)
    const done = yield* Deferred.make<void, ActorFailed>()
    yield* supervise(options, mailbox).pipe(
      Effect.catchAll((failed) => Deferred.fail(done, failed)),
      // Settle `done` before shutting the mailbox: a sender told ActorStopped can read why.
      Effect.ensuring(Effect.zipRight(Deferred.succeed(done, undefined), Queue.shutdown(mailbox))),
      Effect.annotateLogs("actor", name),
      Effect.forkScoped
    )

    // A shut mailbox interrupts its offerers; turn that into a typed error. Any other
    // interruption (the sender's own) is not ours to translate.
    const stoppedOr = (cause: Cause.Cause<never>) =>
      mailbox.isActive() ? Effect.failCause(cause) : Effect.fail(new ActorStopped({ actor: name }))

    const send = (message: M): Effect.Effect<void, ActorStopped> =>
      Queue.offer(mailbox, message).pipe(Effect.asVoid, Effect.catchAllCause(stoppedOr))

    const trySend = (message: M): Effect.Effect<void, MailboxFull | ActorStopped> =>
      Effect.suspend((): Effect.Effect<void, MailboxFull | ActorStopped> => {
        if (mailbox.unsafeOffer(message)) return Effect.void
        return mailbox.isActive()
          ? Effect.fail(new MailboxFull({ actor: name, capacity: mailboxCapacity }))
          : Effect.fail(new ActorStopped({ actor: name }))
      })

    // Queue.size counts a waiting taker as -1 and interrupts once shut down; callers want a count.
    const size = Effect.sync(() =>
      Option.match(mailbox.unsafeSize(), { onNone: () => 0, onSome: (n) => Math.max(0, n) })
    )

    const offer = (message: M): boolean => mailbox.isActive() && mailbox.unsafeOffer(message)

    return { name, send, trySend, offer, size, stopped: Deferred.await(done) }
  })

function validate<S, M, R>(options: ActorOptions<S, M, R>): void {
  const { mailboxCapacity, batchMax, supervision } = options
  assert(Number.isSafeInteger(mailboxCapacity) && mailboxCapacity >= 1, "mailboxCapacity >= 1")
  assert(Number.isSafeInteger(batchMax) && batchMax >= 1, "batchMax >= 1")
  assert(batchMax <= mailboxCapacity, "batchMax <= mailboxCapacity (a larger batch never fills)")
  assert(Number.isSafeInteger(supervision.restartsMax) && supervision.restartsMax >= 0, "restartsMax >= 0")
  assert(Number.isFinite(supervision.windowMs) && supervision.windowMs > 0, "windowMs > 0")
}

/** Runs the actor, restarting it after each death until the budget is spent. External
 * interruption skips `Effect.exit`'s handler, so every exit seen here is a death. */
const supervise = <S, M, R>(
  options: ActorOptions<S, M, R>,
  mailbox: Queue.Dequeue<M>
): Effect.Effect<never, ActorFailed, R> =>
  Effect.gen(function*() {
    const { name, supervision: { restartsMax, windowMs } } = options
    let restartTimesMs: ReadonlyArray<number> = [] // restarts still inside the window
    while (true) {
      const exit = yield* Effect.exit(run(options, mailbox))
      const cause = Exit.isFailure(exit) ? exit.cause : unreachable("an actor's run never returns")
      const nowMs = yield* Clock.currentTimeMillis
      restartTimesMs = restartTimesMs.filter((timeMs) => nowMs - timeMs < windowMs)
      if (restartTimesMs.length >= restartsMax) {
        yield* Effect.logError(
          `actor ${name} died after ${restartTimesMs.length} restarts in ${windowMs} ms; stopping`,
          cause
        )
        return yield* new ActorFailed({ actor: name, restarts: restartTimesMs.length, cause })
      }
      yield* Effect.logError(`actor ${name} died; restarting with fresh state`, cause)
      restartTimesMs = [...restartTimesMs, nowMs]
    }
  })

/** One life of the actor: fresh state, then batches until it dies or is interrupted. */
const run = <S, M, R>(
  options: ActorOptions<S, M, R>,
  mailbox: Queue.Dequeue<M>
): Effect.Effect<never, never, R> =>
  Effect.gen(function*() {
    let state = yield* options.initial
    while (true) {
      const batch = yield* Queue.takeBetween(mailbox, 1, options.batchMax)
      assert(Chunk.isNonEmpty(batch) && batch.length <= options.batchMax, "1 <= batch length <= batchMax")
      state = yield* options.receive(state, Chunk.toReadonlyArray(batch))
    }
  })
