import { describe, expect, it } from "@effect/vitest"
import { Cause, Deferred, Effect, Exit, Fiber, Option, Ref, Scope, TestClock } from "effect"
import * as Actor from "../../src/runtime/Actor.ts"
import { ask } from "../../src/runtime/Ask.ts"
import type { Reply } from "../../src/runtime/Ask.ts"
import type { CounterMessage, CounterState } from "./counter.ts"
import { add, boom, captureLogs, getState, hold, makeCounter } from "./counter.ts"


const defectMessage = (cause: Cause.Cause<unknown>) =>
  Option.map(Cause.dieOption(cause), (defect) => (defect instanceof Error ? defect.message : String(defect)))

describe("Actor", () => {
  it.scoped("drains what queued while it was busy in batches of at most batchMax", () =>
    Effect.gen(function*() {
      const { actor } = yield* makeCounter({ batchMax: 4 })
      const gate = yield* hold(actor)
      for (let amount = 1; amount <= 10; amount++) yield* actor.send(add(amount))
      const reply = yield* Deferred.make<CounterState>()
      yield* actor.send({ _tag: "Get", reply })
      expect(yield* actor.size).toBe(11)
      yield* Deferred.succeed(gate, undefined)
      const state = yield* Deferred.await(reply)
      // The Hold alone, then 11 messages in ceil(11 / 4) = 3 batches, oldest first.
      expect(state.batchSizes).toEqual([1, 4, 4, 3])
      expect(state.total).toBe(55)
      expect(yield* actor.size).toBe(0)
    }))

  it.scoped("keeps its state between batches", () =>
    Effect.gen(function*() {
      const { actor } = yield* makeCounter()
      yield* actor.send(add(2))
      expect((yield* getState(actor)).total).toBe(2)
      yield* actor.send(add(3))
      const state = yield* getState(actor)
      expect(state.total).toBe(5)
      expect(state.batchSizes.length).toBeGreaterThanOrEqual(2)
    }))

  it.scoped("trySend on a full mailbox fails with MailboxFull and enqueues nothing", () =>
    Effect.gen(function*() {
      const { actor } = yield* makeCounter({ mailboxCapacity: 2, batchMax: 2 })
      const gate = yield* hold(actor)
      yield* actor.trySend(add(1))
      yield* actor.trySend(add(2))
      const error = yield* Effect.flip(actor.trySend(add(100)))
      expect(error._tag).toBe("MailboxFull")
      expect(error).toMatchObject({ actor: "counter", capacity: 2 })
      expect(yield* actor.size).toBe(2)
      yield* Deferred.succeed(gate, undefined)
      expect((yield* getState(actor)).total).toBe(3)
    }))

  it.scoped("send on a full mailbox suspends until space frees", () =>
    Effect.gen(function*() {
      const { actor } = yield* makeCounter({ mailboxCapacity: 2, batchMax: 2 })
      const gate = yield* hold(actor)
      yield* actor.send(add(1))
      yield* actor.send(add(2))
      const sender = yield* Effect.fork(actor.send(add(4)))
      while ((yield* actor.size) < 3) yield* Effect.yieldNow()
      for (let i = 0; i < 10; i++) yield* Effect.yieldNow()
      expect(Option.isNone(yield* Fiber.poll(sender))).toBe(true)
      yield* Deferred.succeed(gate, undefined)
      yield* Fiber.join(sender)
      expect((yield* getState(actor)).total).toBe(7)
    }))

  it.scoped("senders waiting on a full mailbox get in in the order they came; one interrupted while waiting enqueues nothing", () =>
    Effect.gen(function*() {
      const { actor } = yield* makeCounter({ mailboxCapacity: 1, batchMax: 1 })
      const gate = yield* hold(actor)
      yield* actor.send(add(1))
      const first = yield* Effect.fork(actor.send(add(10)))
      while ((yield* actor.size) < 2) yield* Effect.yieldNow()
      const interrupted = yield* Effect.fork(actor.send(add(1000)))
      while ((yield* actor.size) < 3) yield* Effect.yieldNow()
      const third = yield* Effect.fork(actor.send(add(100)))
      while ((yield* actor.size) < 4) yield* Effect.yieldNow()
      yield* Fiber.interrupt(interrupted)
      expect(yield* actor.size).toBe(3)
      // While senders wait, trySend does not jump the line.
      expect((yield* Effect.flip(actor.trySend(add(5))))._tag).toBe("MailboxFull")
      yield* Deferred.succeed(gate, undefined)
      yield* Fiber.join(first)
      yield* Fiber.join(third)
      const state = yield* getState(actor)
      expect(state.total).toBe(111)
      // One message per batch (batchMax 1): the Hold, 1, 10, 100, then the Get.
      expect(state.batchSizes).toEqual([1, 1, 1, 1, 1])
    }))

  it.scoped("a defect is logged and restarts the actor with fresh state; the rest of its batch is lost", () => {
    const logs = captureLogs()
    return Effect.gen(function*() {
      const { actor, starts } = yield* makeCounter({ batchMax: 3 })
      yield* actor.send(add(5))
      expect((yield* getState(actor)).total).toBe(5)
      const gate = yield* hold(actor)
      // Batches once the gate opens: [1, Boom, 2] dies; [7, Get] runs on fresh state.
      for (const message of [add(1), boom, add(2), add(7)]) yield* actor.send(message)
      const reply = yield* Deferred.make<CounterState>()
      yield* actor.send({ _tag: "Get", reply })
      yield* Deferred.succeed(gate, undefined)
      const state = yield* Deferred.await(reply)
      expect(state).toEqual({ total: 7, batchSizes: [2] })
      expect(yield* Ref.get(starts)).toBe(2)
      const errors = logs.entries.filter((entry) => entry.level === "ERROR")
      expect(errors).toHaveLength(1)
      expect(errors[0]?.message).toContain("actor counter died; restarting")
      expect(errors[0]?.actor).toEqual(Option.some("counter"))
      expect(defectMessage(errors[0]!.cause)).toEqual(Option.some("boom"))
    }).pipe(Effect.provide(logs.layer))
  })

  it.scoped("past its restart budget the actor stops and escalates ActorFailed", () => {
    const logs = captureLogs()
    return Effect.gen(function*() {
      const { actor, starts } = yield* makeCounter({ batchMax: 1, supervision: { restartsMax: 2, windowMs: 1000 } })
      for (let i = 0; i < 3; i++) yield* actor.send(boom)
      const failed = yield* Effect.flip(actor.stopped)
      expect(failed._tag).toBe("ActorFailed")
      expect(failed.actor).toBe("counter")
      expect(failed.restarts).toBe(2)
      expect(defectMessage(failed.cause)).toEqual(Option.some("boom"))
      expect(yield* Ref.get(starts)).toBe(3)
      const errors = logs.entries.filter((entry) => entry.level === "ERROR")
      expect(errors).toHaveLength(3)
      expect(errors[2]?.message).toContain("stopping")
      // Stopped for good: senders fail at once instead of waiting.
      expect((yield* Effect.flip(actor.send(add(1))))._tag).toBe("ActorStopped")
      expect((yield* Effect.flip(actor.trySend(add(1))))._tag).toBe("ActorStopped")
      expect((yield* Effect.flip(getState(actor)))._tag).toBe("ActorStopped")
      expect(yield* actor.size).toBe(0)
    }).pipe(Effect.provide(logs.layer))
  })

  it.scoped("restarts older than windowMs (by Clock) no longer count", () =>
    Effect.gen(function*() {
      const { actor, starts } = yield* makeCounter({ batchMax: 1, supervision: { restartsMax: 2, windowMs: 1000 } })
      yield* actor.send(boom)
      yield* actor.send(boom)
      expect((yield* getState(actor)).total).toBe(0)
      yield* TestClock.adjust(999)
      yield* actor.send(boom) // third death inside the window: over budget
      const failed = yield* Effect.flip(actor.stopped)
      expect(failed.restarts).toBe(2)
      expect(yield* Ref.get(starts)).toBe(3)

      const second = yield* makeCounter({ batchMax: 1, supervision: { restartsMax: 2, windowMs: 1000 } })
      yield* second.actor.send(boom)
      yield* second.actor.send(boom)
      expect((yield* getState(second.actor)).total).toBe(0)
      yield* TestClock.adjust(1000)
      yield* second.actor.send(boom)
      yield* second.actor.send(boom)
      expect((yield* getState(second.actor)).total).toBe(0) // still alive: the first two left the window
      expect(yield* Ref.get(second.starts)).toBe(5)
      yield* second.actor.send(boom)
      expect((yield* Effect.flip(second.actor.stopped)).restarts).toBe(2)
    }))

  it.scoped("a defect in initial counts against the budget too", () =>
    Effect.gen(function*() {
      const attempts = yield* Ref.make(0)
      const actor = yield* Actor.make<number, number, never>({
        name: "broken",
        mailboxCapacity: 1,
        batchMax: 1,
        supervision: { restartsMax: 3, windowMs: 1000 },
        initial: Effect.zipRight(Ref.update(attempts, (n) => n + 1), Effect.die("no state")),
        receive: (state) => Effect.succeed(state)
      })
      const failed = yield* Effect.flip(actor.stopped)
      expect(failed).toMatchObject({ actor: "broken", restarts: 3 })
      expect(yield* Ref.get(attempts)).toBe(4)
    }))

  it.scoped("closing its scope stops it cleanly; pending send and ask fail with ActorStopped", () => {
    const logs = captureLogs()
    return Effect.gen(function*() {
      const scope = yield* Scope.make()
      const { actor } = yield* Scope.extend(makeCounter({ mailboxCapacity: 2, batchMax: 1 }), scope)
      yield* hold(actor) // never opened: the actor is interrupted inside receive
      const asker = yield* Effect.fork(ask(actor, (reply: Reply<CounterState>): CounterMessage => ({ _tag: "Ignore", reply }), {
        timeoutMs: 60_000
      }))
      while ((yield* actor.size) < 1) yield* Effect.yieldNow() // the ask's request is queued
      yield* actor.send(add(1)) // now full
      const sender = yield* Effect.fork(actor.send(add(2)))
      while ((yield* actor.size) < 3) yield* Effect.yieldNow() // 2 queued + 1 blocked sender
      yield* Scope.close(scope, Exit.void)
      expect((yield* Effect.flip(Fiber.join(sender)))._tag).toBe("ActorStopped")
      expect((yield* Effect.flip(Fiber.join(asker)))._tag).toBe("ActorStopped")
      expect(Exit.isSuccess(yield* Effect.exit(actor.stopped))).toBe(true)
      expect(logs.entries.filter((entry) => entry.level === "ERROR")).toHaveLength(0)
    }).pipe(Effect.provide(logs.layer))
  })

  it.scoped("invalid options are defects", () =>
    Effect.gen(function*() {
      const exit = yield* Effect.exit(makeCounter({ mailboxCapacity: 2, batchMax: 3 }))
      expect(Exit.isFailure(exit) && Cause.isDie(exit.cause)).toBe(true)
    }))
})
