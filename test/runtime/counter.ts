// A small actor for the tests: sums amounts and records the size of every batch it handled.
import type { Cause } from "effect"
import { Data, Deferred, Effect, HashMap, Logger, Option, Ref } from "effect"
import * as Actor from "../../src/runtime/Actor.ts"
import type { Reply } from "../../src/runtime/Ask.ts"
import { ask, respond } from "../../src/runtime/Ask.ts"

export interface CounterState {
  readonly total: number
  readonly batchSizes: ReadonlyArray<number>
}

export class Insufficient extends Data.TaggedError("Insufficient")<{ readonly total: number }> {}

export type CounterMessage =
  | { readonly _tag: "Add"; readonly amount: number }
  | { readonly _tag: "Withdraw"; readonly amount: number; readonly reply: Reply<number, Insufficient> }
  | { readonly _tag: "Get"; readonly reply: Reply<CounterState> }
  | { readonly _tag: "Ignore"; readonly reply: Reply<CounterState> }
  | { readonly _tag: "Hold"; readonly entered: Deferred.Deferred<void>; readonly gate: Deferred.Deferred<void> }
  | { readonly _tag: "Boom" }

export const add = (amount: number): CounterMessage => ({ _tag: "Add", amount })
export const boom: CounterMessage = { _tag: "Boom" }

const handle = (state: CounterState, message: CounterMessage): Effect.Effect<CounterState> => {
  switch (message._tag) {
    case "Add":
      return Effect.succeed({ ...state, total: state.total + message.amount })
    case "Withdraw": {
      const total = state.total - message.amount
      if (total < 0) return Effect.as(respond(message.reply, Effect.fail(new Insufficient({ total: state.total }))), state)
      return Effect.as(respond(message.reply, Effect.succeed(total)), { ...state, total })
    }
    case "Get":
      return Effect.as(respond(message.reply, Effect.succeed(state)), state)
    case "Ignore":
      return Effect.succeed(state)
    case "Hold":
      return Deferred.succeed(message.entered, undefined).pipe(
        Effect.zipRight(Deferred.await(message.gate)),
        Effect.as(state)
      )
    case "Boom":
      return Effect.die(new Error("boom"))
  }
}

export type CounterOverrides = Partial<
  Pick<Actor.ActorOptions<CounterState, CounterMessage, never>, "mailboxCapacity" | "batchMax" | "supervision">
>

/** The counter actor plus how many times its state was (re)created. */
export const makeCounter = (overrides: CounterOverrides = {}) =>
  Effect.gen(function*() {
    const starts = yield* Ref.make(0)
    const actor = yield* Actor.make<CounterState, CounterMessage, never>({
      name: "counter",
      mailboxCapacity: 16,
      batchMax: 4,
      supervision: { restartsMax: 2, windowMs: 1000 },
      ...overrides,
      initial: Effect.as(Ref.update(starts, (n) => n + 1), { total: 0, batchSizes: [] }),
      receive: (state, batch) =>
        Effect.reduce(batch, { ...state, batchSizes: [...state.batchSizes, batch.length] }, handle)
    })
    return { actor, starts }
  })

/** Sends a Hold and waits until the actor is inside it; the actor is busy until `gate` opens. */
export const hold = (actor: Actor.Actor<CounterMessage>) =>
  Effect.gen(function*() {
    const entered = yield* Deferred.make<void>()
    const gate = yield* Deferred.make<void>()
    yield* actor.send({ _tag: "Hold", entered, gate })
    yield* Deferred.await(entered)
    return gate
  })

export interface LogEntry {
  readonly level: string
  readonly message: string
  readonly cause: Cause.Cause<unknown>
  readonly actor: Option.Option<unknown>
}

/** A logger that records entries; provide `layer` to the test. */
export const captureLogs = () => {
  const entries: Array<LogEntry> = []
  const logger = Logger.make(({ logLevel, message, cause, annotations }) => {
    const text = Array.isArray(message) ? message.join(" ") : String(message)
    entries.push({ level: logLevel.label, message: text, cause, actor: HashMap.get(annotations, "actor") })
  })
  return { entries, layer: Logger.add(logger) }
}

/** Asks for the state; the reply parameter's annotation is what fixes `ask`'s result type. */
export const getState = (actor: Actor.Actor<CounterMessage>, timeoutMs = 1000) =>
  ask(actor, (reply: Reply<CounterState>): CounterMessage => ({ _tag: "Get", reply }), { timeoutMs })
