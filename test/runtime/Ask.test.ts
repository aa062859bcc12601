import { describe, expect, it } from "@effect/vitest"
import { Deferred, Effect, Fiber, Option, TestClock } from "effect"
import type { Reply } from "../../src/runtime/Ask.ts"
import { ask, respond } from "../../src/runtime/Ask.ts"
import type { CounterMessage, CounterState, Insufficient } from "./counter.ts"
import { add, boom, getState, hold, makeCounter } from "./counter.ts"

const ignored = (reply: Reply<CounterState>): CounterMessage => ({ _tag: "Ignore", reply })
const withdraw = (amount: number) => (reply: Reply<number, Insufficient>): CounterMessage => ({
  _tag: "Withdraw",
  amount,
  reply
})

describe("ask", () => {
  it.scoped("returns the actor's reply", () =>
    Effect.gen(function*() {
      const { actor } = yield* makeCounter()
      yield* actor.send(add(3))
      const state = yield* getState(actor)
      expect(state.total).toBe(3)
      expect(yield* ask(actor, withdraw(2), { timeoutMs: 1000 })).toBe(1)
    }))

  it.scoped("passes the actor's typed error through", () =>
    Effect.gen(function*() {
      const { actor } = yield* makeCounter()
      yield* actor.send(add(3))
      const error = yield* Effect.flip(ask(actor, withdraw(5), { timeoutMs: 1000 }))
      expect(error).toMatchObject({ _tag: "Insufficient", total: 3 })
      expect((yield* getState(actor)).total).toBe(3)
    }))

  it.scoped("fails with AskTimeout when no reply comes within timeoutMs (TestClock)", () =>
    Effect.gen(function*() {
      const { actor } = yield* makeCounter()
      const asker = yield* Effect.fork(ask(actor, ignored, { timeoutMs: 1000 }))
      yield* TestClock.adjust(999)
      expect(Option.isNone(yield* Fiber.poll(asker))).toBe(true)
      yield* TestClock.adjust(1)
      const error = yield* Effect.flip(Fiber.join(asker))
      expect(error).toMatchObject({ _tag: "AskTimeout", actor: "counter", timeoutMs: 1000 })
    }))

  it.scoped("the timeout covers waiting for mailbox space, and a timed-out request is not enqueued", () =>
    Effect.gen(function*() {
      const { actor } = yield* makeCounter({ mailboxCapacity: 1, batchMax: 1 })
      const gate = yield* hold(actor)
      yield* actor.send(add(1))
      const asker = yield* Effect.fork(getState(actor, 500))
      yield* TestClock.adjust(500)
      expect((yield* Effect.flip(Fiber.join(asker)))._tag).toBe("AskTimeout")
      expect(yield* actor.size).toBe(1)
      yield* Deferred.succeed(gate, undefined)
      expect((yield* getState(actor)).total).toBe(1)
    }))

  it.scoped("fails with ActorStopped at once when the actor has stopped", () =>
    Effect.gen(function*() {
      const { actor } = yield* makeCounter({ batchMax: 1, supervision: { restartsMax: 0, windowMs: 1000 } })
      yield* actor.send(boom)
      yield* Effect.flip(actor.stopped)
      const error = yield* Effect.flip(getState(actor))
      expect(error).toMatchObject({ _tag: "ActorStopped", actor: "counter" })
    }))

  it.scoped("stops waiting with ActorStopped when the actor stops after taking the request", () =>
    Effect.gen(function*() {
      const { actor } = yield* makeCounter({ batchMax: 1, supervision: { restartsMax: 0, windowMs: 1000 } })
      const gate = yield* hold(actor)
      const asker = yield* Effect.fork(ask(actor, ignored, { timeoutMs: 60_000 }))
      while ((yield* actor.size) < 1) yield* Effect.yieldNow()
      yield* actor.send(boom)
      yield* Deferred.succeed(gate, undefined)
      expect((yield* Effect.flip(Fiber.join(asker)))._tag).toBe("ActorStopped")
      expect((yield* Effect.flip(actor.stopped))._tag).toBe("ActorFailed")
    }))

  it.effect("respond: the first answer wins, later ones are dropped", () =>
    Effect.gen(function*() {
      const reply = yield* Deferred.make<number, string>()
      yield* respond(reply, Effect.succeed(1))
      yield* respond(reply, Effect.fail("late"))
      expect(yield* Deferred.await(reply)).toBe(1)
    }))
})
