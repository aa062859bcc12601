// The lock the segment log's calls take turns on (src/runtime/Mutex.ts): one holder at a time,
// in arrival order; released whatever the holder's end; an interrupted waiter leaves the line.
import { describe, expect, it } from "@effect/vitest"
import { Deferred, Effect, Exit, Fiber } from "effect"
import { Mutex } from "../../src/runtime/Mutex.ts"

describe("Mutex", () => {
  it.effect("one holder at a time, turns in arrival order", () =>
    Effect.gen(function*() {
      const mutex = new Mutex()
      const order: Array<string> = []
      const gate = yield* Deferred.make<void>()
      const first = yield* Effect.fork(mutex.withLock(Effect.zipRight(Effect.sync(() => order.push("a+")), Effect.zipRight(Deferred.await(gate), Effect.sync(() => order.push("a-"))))))
      yield* Effect.yieldNow()
      const second = yield* Effect.fork(mutex.withLock(Effect.sync(() => order.push("b"))))
      const third = yield* Effect.fork(mutex.withLock(Effect.sync(() => order.push("c"))))
      yield* Effect.yieldNow()
      expect(order).toEqual(["a+"])
      yield* Deferred.succeed(gate, undefined)
      yield* Fiber.join(first)
      yield* Fiber.join(second)
      yield* Fiber.join(third)
      expect(order).toEqual(["a+", "a-", "b", "c"])
      expect(mutex.isHeld).toBe(false)
    }))

  it.effect("a failure or a defect releases it", () =>
    Effect.gen(function*() {
      const mutex = new Mutex()
      const failed = yield* Effect.exit(mutex.withLock(Effect.fail("no")))
      expect(Exit.isFailure(failed)).toBe(true)
      expect(mutex.isHeld).toBe(false)
      const died = yield* Effect.exit(mutex.withLock(Effect.dieMessage("bug")))
      expect(Exit.isFailure(died)).toBe(true)
      expect(mutex.isHeld).toBe(false)
      expect(yield* mutex.withLock(Effect.succeed(7))).toBe(7)
    }))

  it.effect("an interrupted holder releases it; an interrupted waiter leaves the line and the next one gets it", () =>
    Effect.gen(function*() {
      const mutex = new Mutex()
      const holder = yield* Effect.fork(mutex.withLock(Effect.never))
      yield* Effect.yieldNow()
      expect(mutex.isHeld).toBe(true)
      const waiter = yield* Effect.fork(mutex.withLock(Effect.succeed("waiter")))
      const next = yield* Effect.fork(mutex.withLock(Effect.succeed("next")))
      yield* Effect.yieldNow()
      yield* Fiber.interrupt(waiter)
      yield* Fiber.interrupt(holder)
      expect(yield* Fiber.join(next)).toBe("next")
      expect(mutex.isHeld).toBe(false)
    }))

  it.effect("a waiter interrupted just as it is handed the lock passes it on", () =>
    Effect.gen(function*() {
      const mutex = new Mutex()
      const gate = yield* Deferred.make<void>()
      const holder = yield* Effect.fork(mutex.withLock(Deferred.await(gate)))
      yield* Effect.yieldNow()
      const waiter = yield* Effect.fork(mutex.withLock(Effect.never))
      yield* Effect.yieldNow()
      // The holder ends (the lock is handed to the waiter), and the waiter is interrupted before
      // it runs: the lock must come free.
      yield* Deferred.succeed(gate, undefined)
      yield* Fiber.interrupt(waiter)
      yield* Fiber.join(holder)
      expect(mutex.isHeld).toBe(false)
      expect(yield* mutex.withLock(Effect.succeed(1))).toBe(1)
    }))
})
