// The gateway tells its observer (the node's metrics) about every request by type, every FAILURE
// by code, and each connection's start and end.
import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Exit, Scope } from "effect"
import type { GatewayObserver, ObservedRequestType } from "../../../src/net/gateway/Gateway.ts"
import { hex } from "./helpers.ts"
import { execSql, rawConnect, startGateway } from "./harness.ts"

const recordingObserver = () => {
  const seen = { requests: [] as ObservedRequestType[], failures: [] as number[], connections: 0, opened: 0 }
  const observer: GatewayObserver = {
    request: (type) => void seen.requests.push(type),
    failure: (code) => void seen.failures.push(code),
    connections: (delta) =>
      Effect.sync(() => {
        seen.connections += delta
        if (delta > 0) seen.opened++
      })
  }
  return { seen, observer }
}

describe("gateway observer", () => {
  it.scopedLive("counts requests by type, failures by code, and connections", () =>
    Effect.gen(function*() {
      const { seen, observer } = recordingObserver()
      const gateway = yield* startGateway({ observer })
      const scope = yield* Scope.make()
      const c = yield* rawConnect(gateway.address).pipe(Scope.extend(scope))
      expect(yield* c.call({ kind: "leader" })).toMatchObject({ kind: "server" })
      yield* c.sendBytes(hex("01000000 14 00 0000 | 0000000000000000")) // type 20: malformed
      expect(yield* c.receive()).toMatchObject({ kind: "failure", code: 1005 })
      expect(yield* c.call(execSql("SELECT 1"))).toMatchObject({ kind: "failure", code: 12 }) // no database opened
      expect(yield* c.call({ kind: "open", database: "obs", flags: 0n, vfs: "" })).toMatchObject({ kind: "db" })
      expect(yield* c.call(execSql("SELEC 1"))).toMatchObject({ kind: "failure", code: 1 })
      expect(yield* c.call(execSql("CREATE TABLE t (x)"))).toMatchObject({ kind: "result" })
      expect(seen.requests).toEqual(["leader", "malformed", "execSql", "open", "execSql", "execSql"])
      expect(seen.failures).toEqual([1005, 12, 1])
      expect(seen.connections).toBe(1)

      yield* Scope.close(scope, Exit.void)
      for (let i = 0; seen.connections !== 0 && i < 100; i++) yield* Effect.sleep(Duration.millis(10))
      expect(seen.connections).toBe(0)
      expect(seen.opened).toBe(1)
    }))
})
