import { describe, expect, it } from "@effect/vitest"
import { Deferred, Effect, Exit, Fiber, Ref, Scope, TestClock } from "effect"
import * as Ticker from "../../src/runtime/Ticker.ts"
import { add, getState, hold, makeCounter } from "./counter.ts"

describe("Ticker", () => {
  it.scoped("fires exactly k times after TestClock.adjust(k * intervalMs)", () =>
    Effect.gen(function*() {
      const ticks = yield* Ref.make(0)
      yield* Ticker.make({ intervalMs: 100, onTick: Ref.update(ticks, (n) => n + 1) })
      yield* TestClock.adjust(99)
      expect(yield* Ref.get(ticks)).toBe(0)
      yield* TestClock.adjust(1)
      expect(yield* Ref.get(ticks)).toBe(1)
      yield* TestClock.adjust(5 * 100)
      expect(yield* Ref.get(ticks)).toBe(6)
    }))

  it.scoped("waits on a slow receiver instead of piling ticks up", () =>
    Effect.gen(function*() {
      const { actor } = yield* makeCounter({ mailboxCapacity: 1, batchMax: 1 })
      const gate = yield* hold(actor)
      yield* Ticker.make({ intervalMs: 100, onTick: actor.send(add(1)) })
      yield* TestClock.adjust(10 * 100)
      // One tick queued, one in the suspended ticker; the other eight never happened.
      expect(yield* actor.size).toBe(2)
      yield* Deferred.succeed(gate, undefined)
      expect((yield* getState(actor)).total).toBe(2)
      yield* TestClock.adjust(100)
      expect((yield* getState(actor)).total).toBe(3)
    }))

  it.scoped("stops when its scope closes", () =>
    Effect.gen(function*() {
      const ticks = yield* Ref.make(0)
      const scope = yield* Scope.make()
      yield* Scope.extend(Ticker.make({ intervalMs: 100, onTick: Ref.update(ticks, (n) => n + 1) }), scope)
      yield* TestClock.adjust(200)
      yield* Scope.close(scope, Exit.void)
      yield* TestClock.adjust(1000)
      expect(yield* Ref.get(ticks)).toBe(2)
    }))

  it.scoped("ends with onTick's error once its receiver has stopped", () =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const { actor } = yield* Scope.extend(makeCounter(), scope)
      const ticker = yield* Ticker.make({ intervalMs: 100, onTick: actor.send(add(1)) })
      yield* TestClock.adjust(100)
      expect((yield* getState(actor)).total).toBe(1)
      yield* Scope.close(scope, Exit.void)
      yield* TestClock.adjust(100)
      expect((yield* Effect.flip(Fiber.join(ticker)))._tag).toBe("ActorStopped")
    }))
})
