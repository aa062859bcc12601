// What one request costs the gateway in Effect operations: the connection's fiber, counted with a
// Supervisor (as `npm run bench -- opcount` does) over requests sent one at a time, as go-dqlite
// sends them, with an observer (the node's metrics) present: the observer is called in place,
// not run as Effects.
import { describe, expect, it } from "@effect/vitest"
import { Effect, FiberRef, RuntimeFlags, RuntimeFlagsPatch, Supervisor } from "effect"
import type { Fiber } from "effect"
import type { GatewayObserver } from "../../../src/net/gateway/Gateway.ts"
import { rawConnect, startGateway } from "./harness.ts"

/** Set on the fibers the gateway forks (they inherit it from the one that started it). */
const gatewaySide = FiberRef.unsafeMake(false)

class GatewayOps extends Supervisor.AbstractSupervisor<void> {
  counting = false
  ops = 0
  get value(): Effect.Effect<void> {
    return Effect.void
  }
  override onEffect<A, E>(fiber: Fiber.RuntimeFiber<A, E>): void {
    if (this.counting && fiber.getFiberRef(gatewaySide)) this.ops++
  }
}

const observer: GatewayObserver = { request: () => {}, failure: () => {}, connections: () => Effect.void }

describe("gateway: the cost of a request", () => {
  it.scopedLive("a LEADER request costs the connection's fiber at most 21 Effect operations", () => {
    const counter = new GatewayOps()
    return Effect.gen(function*() {
      const gateway = yield* Effect.locally(startGateway({ observer }), gatewaySide, true)
      const client = yield* rawConnect(gateway.address)
      for (let i = 0; i < 5; i++) yield* client.call({ kind: "leader" })
      const requests = 100
      counter.counting = true
      for (let i = 0; i < requests; i++) {
        const answer = yield* client.call({ kind: "leader" })
        expect(answer.kind).toBe("server")
      }
      counter.counting = false
      // Measured 21 a request, 11 of them the one Effect.async the read waits in (its canceler
      // is an onInterrupt region); 24 with the observer's two calls as Effects.
      expect(counter.ops / requests).toBeGreaterThan(2)
      expect(counter.ops / requests).toBeLessThanOrEqual(21)
    }).pipe(Effect.supervised(counter), Effect.withRuntimeFlagsPatch(RuntimeFlagsPatch.enable(RuntimeFlags.OpSupervision)))
  })
})
