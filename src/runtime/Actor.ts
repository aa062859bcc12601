// An actor is one scoped fiber that owns its state and drains a bounded mailbox in batches.
// Handling a whole batch per call is what lets the log writer cover many entries with one fsync.
import type { Array as Arr, Cause, Scope } from "effect"
import { Clock, Deferred, Effect, Exit } from "effect"
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
  /** Handles a non-empty batch, oldest first, and returns the next state: as it is when the
   * batch was handled in plain code (no Effect operation for the batch: the steady state of the
   * Raft actor and the log writer), or as an Effect that yields it. A defect here (thrown, or in
   * the Effect, or in `initial`) is logged and restarts the actor; the rest of that batch is
   * lost. `S` must not itself be an Effect. */
  readonly receive: (state: S, batch: Arr.NonEmptyReadonlyArray<M>) => Effect.Effect<S, never, R> | S
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
  /** True while the actor waits for its next batch with nothing queued: between batches, not in
   * the middle of one. Lets an owner do a message's work in place (PeerLink's direct write). */
  readonly idle: () => boolean
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
    const mailbox = new Mailbox<M>(mailboxCapacity, options.batchMax)
    const done = yield* Deferred.make<void, ActorFailed>()
    yield* supervise(options, mailbox).pipe(
      Effect.catchAll((failed) => Deferred.fail(done, failed)),
      // Settle `done` before shutting the mailbox: a sender told ActorStopped can read why.
      Effect.ensuring(Effect.zipRight(Deferred.succeed(done, undefined), Effect.sync(() => mailbox.shutdown()))),
      Effect.annotateLogs("actor", name),
      Effect.forkScoped
    )

    const stopped = () => new ActorStopped({ actor: name })

    const send = (message: M): Effect.Effect<void, ActorStopped> =>
      Effect.suspend(() => {
        if (mailbox.isShut) return Effect.fail(stopped())
        if (mailbox.offer(message)) return Effect.void
        return mailbox.waitToOffer(message, stopped)
      })

    const trySend = (message: M): Effect.Effect<void, MailboxFull | ActorStopped> =>
      Effect.suspend((): Effect.Effect<void, MailboxFull | ActorStopped> => {
        if (mailbox.offer(message)) return Effect.void
        return mailbox.isShut ? Effect.fail(stopped()) : Effect.fail(new MailboxFull({ actor: name, capacity: mailboxCapacity }))
      })

    const size = Effect.sync(() => mailbox.size)

    const offer = (message: M): boolean => mailbox.offer(message)

    return { name, send, trySend, offer, size, idle: () => mailbox.idle, stopped: Deferred.await(done) }
  })

/** The bounded mailbox of one actor: a FIFO array read by the actor's fiber alone, a batch at a
 * time. Cheaper than an Effect Queue, whose takeBetween costs ~20 operations and a Deferred per
 * wait; an actor takes a batch several times per committed entry. Senders that find it full wait
 * in line (back-pressure) and are let in, in order, as batches are taken. */
class Mailbox<M> {
  private items: Array<M> = []
  private head = 0
  /** Suspended `send`s, oldest first. */
  private readonly senders: Array<{ readonly message: M; readonly admit: (admitted: boolean) => void }> = []
  /** The actor's fiber, waiting for a batch. */
  private taker: ((batch: Array<M>) => void) | null = null
  private shut = false

  constructor(readonly capacity: number, readonly batchMax: number) {}

  get isShut(): boolean {
    return this.shut
  }

  private get queued(): number {
    return this.items.length - this.head
  }

  /** Messages waiting: queued plus those of suspended senders; 0 once shut. */
  get size(): number {
    return this.shut ? 0 : this.queued + this.senders.length
  }

  /** The actor's fiber waits for a batch and nothing is queued. */
  get idle(): boolean {
    return !this.shut && this.taker !== null && this.queued === 0
  }

  /** Enqueues if open and not full (senders already waiting go first). */
  offer(message: M): boolean {
    if (this.shut || this.queued >= this.capacity || this.senders.length > 0) return false
    this.items.push(message)
    const taker = this.taker
    if (taker !== null) {
      this.taker = null
      taker(this.takeBatch())
    }
    return true
  }

  /** Waits for room, then enqueues; fails with `stopped()` if the mailbox shuts first. */
  waitToOffer<E>(message: M, stopped: () => E): Effect.Effect<void, E> {
    return Effect.async<void, E>((resume) => {
      const entry = { message, admit: (admitted: boolean) => resume(admitted ? Effect.void : Effect.fail(stopped())) }
      this.senders.push(entry)
      // An interrupted sender leaves the line without enqueueing.
      return Effect.sync(() => {
        const at = this.senders.indexOf(entry)
        if (at >= 0) this.senders.splice(at, 1)
      })
    })
  }

  /** The next batch (1 … batchMax messages, oldest first), waiting for one if none is queued. */
  readonly take: Effect.Effect<Array<M>> = Effect.suspend(() => {
    if (this.queued > 0) return Effect.succeed(this.takeBatch())
    // No canceler: only the actor's own fiber takes, and it is interrupted only when the
    // mailbox shuts, which drops the taker.
    return Effect.async<Array<M>>((resume) => {
      if (this.queued > 0) return resume(Effect.succeed(this.takeBatch()))
      this.taker = (batch) => resume(Effect.succeed(batch))
    })
  })

  private takeBatch(): Array<M> {
    const count = Math.min(this.queued, this.batchMax)
    const batch = this.items.slice(this.head, this.head + count)
    this.head += count
    if (this.head === this.items.length) {
      this.items = []
      this.head = 0
    } else if (this.head >= 1024 && this.head * 2 >= this.items.length) {
      this.items = this.items.slice(this.head)
      this.head = 0
    }
    // Room freed: let waiting senders in, in order.
    while (this.senders.length > 0 && this.queued < this.capacity) {
      const sender = this.senders.shift()!
      this.items.push(sender.message)
      sender.admit(true)
    }
    return batch
  }

  /** Drops what is queued and fails every waiting sender. */
  shutdown(): void {
    if (this.shut) return
    this.shut = true
    this.taker = null
    this.items = []
    this.head = 0
    for (const sender of this.senders.splice(0)) sender.admit(false)
  }
}

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
  mailbox: Mailbox<M>
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

/** One life of the actor: fresh state, then batches until it dies or is interrupted. A plain
 * loop of combinators, no generator: it turns once per batch. */
const run = <S, M, R>(
  options: ActorOptions<S, M, R>,
  mailbox: Mailbox<M>
): Effect.Effect<never, never, R> =>
  Effect.flatMap(options.initial, (initial) => {
    let state = initial
    const resumed = (next: S): Effect.Effect<never, never, R> => {
      state = next
      return loop
    }
    const loop: Effect.Effect<never, never, R> = Effect.flatMap(mailbox.take, (batch) => {
      assert(batch.length >= 1 && batch.length <= options.batchMax, "1 <= batch length <= batchMax")
      const next = options.receive(state, batch as unknown as Arr.NonEmptyReadonlyArray<M>)
      if (Effect.isEffect(next)) return Effect.flatMap(next as Effect.Effect<S, never, R>, resumed)
      state = next as S
      return loop
    })
    return loop
  })
