// Reconnect backoff under TestClock: every delay comes from Effect's Clock, grows
// exponentially from the base, never exceeds the cap, and its jitter is a function of the seed.
import { describe, expect, it } from "@effect/vitest"
import { Clock, Duration, Effect, Fiber, Random, TestClock } from "effect"
import { reconnectSchedule } from "../../../src/net/peers/PeerLink.ts"
import { makeTcp } from "../../../src/net/peers/PeerTransport.ts"
import { freePort, link } from "./helpers.ts"

/** The delays between 12 failing attempts retried with the link's schedule. */
const delaysFor = (seed: number) =>
  Effect.gen(function*() {
    const times: Array<number> = []
    const attempt = Effect.flatMap(Clock.currentTimeMillis, (now) => {
      times.push(now)
      return times.length < 12 ? Effect.fail("down") : Effect.void
    })
    const fiber = yield* Effect.fork(attempt.pipe(Effect.retry(reconnectSchedule(50, 5000)), Effect.withRandom(Random.make(seed))))
    for (let i = 0; i < 200 && times.length < 12; i++) yield* TestClock.adjust(Duration.millis(500))
    yield* Fiber.join(fiber)
    return times.slice(1).map((t, i) => Math.round((t - times[i]!) * 1000) / 1000)
  })

describe("reconnect backoff", () => {
  it.effect("doubles from 50 ms, is jittered into [½, 1] of the nominal delay, and caps at 5 s", () =>
    Effect.gen(function*() {
      const delays = yield* delaysFor(42)
      expect(delays.length).toBe(11)
      delays.forEach((delay, n) => {
        const nominal = Math.min(50 * 2 ** n, 5000)
        expect(delay).toBeGreaterThanOrEqual(Math.floor(nominal / 2))
        expect(delay).toBeLessThanOrEqual(nominal)
      })
      expect(Math.max(...delays)).toBeLessThanOrEqual(5000)
      expect(delays.slice(8).every((d) => d >= 2500)).toBe(true) // at the cap
    }))

  it.effect("the same seed gives the same delays; another seed others", () =>
    Effect.gen(function*() {
      const a = yield* delaysFor(7)
      const b = yield* delaysFor(7)
      const c = yield* delaysFor(8)
      expect(a).toEqual(b)
      expect(a).not.toEqual(c)
    }))
})

describe("a link under TestClock", () => {
  /** Real time passes for the sockets; only Effect's clock is frozen. */
  const realPause = (ms: number) => Effect.promise(() => new Promise<void>((resolve) => setTimeout(resolve, ms)))

  it.scoped("retries a refused connection only as the test clock moves", () =>
    Effect.gen(function*() {
      const port = yield* freePort
      const transport = yield* makeTcp({ nodeId: 1, clusterId: "c", listen: "127.0.0.1:0", limits: { reconnectBaseMs: 100, reconnectCapMs: 1000 } })
      yield* transport.setPeers(new Map([[2, `127.0.0.1:${port}`]]))
      yield* transport.send({ message: { _tag: "TimeoutNow", from: 1, to: 2, term: 1 }, snapshot: null })
      const failures = Effect.map(link(transport), (s) => s.connectFailures)
      for (let i = 0; i < 100 && (yield* failures) < 1; i++) yield* realPause(10)
      expect(yield* failures).toBe(1)
      yield* realPause(300)
      expect(yield* failures).toBe(1) // no retry while the clock stands still
      yield* TestClock.adjust(Duration.millis(100)) // the first delay is at most the base
      for (let i = 0; i < 100 && (yield* failures) < 2; i++) yield* realPause(10)
      expect(yield* failures).toBe(2)
      for (let n = 0; n < 8; n++) {
        const before = yield* failures
        yield* TestClock.adjust(Duration.millis(1000)) // a delay is never more than the cap
        for (let i = 0; i < 100 && (yield* failures) === before; i++) yield* realPause(10)
        const after = yield* failures
        expect(after).toBeGreaterThan(before)
        yield* realPause(100)
        expect(yield* failures).toBe(after) // and stands still again with the clock
      }
    }))
})
