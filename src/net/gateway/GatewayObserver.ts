// What the gateway reports about its traffic, for whoever keeps the node's metrics: every request
// by type (or "malformed" when it could not be decoded), every FAILURE response by its code, and
// connections opened and closed. Optional in `GatewayDeps`; the node wiring supplies one.
import type { Effect } from "effect"
import type { Request } from "../protocol/requests.ts"

export type ObservedRequestType = Request["kind"] | "malformed"

export interface GatewayObserver {
  /** Plain calls, not Effects: they run once per request (the hot path), and count in place. */
  readonly request: (type: ObservedRequestType) => void
  /** A FAILURE sent to the client, by its dqlite / SQLite error code. */
  readonly failure: (code: number) => void
  /** +1 when a client connection starts being served, −1 when it ends. */
  readonly connections: (delta: 1 | -1) => Effect.Effect<void>
}
