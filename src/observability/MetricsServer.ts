// The node's HTTP endpoint for operators (`tqlite start --metrics HOST:PORT`), on
// @effect/platform's HttpServer over node:http:
//   GET /metrics               Prometheus text exposition of the node's metrics
//   GET /health[?role=leader]  200 + JSON when the node can serve (health.ts), 503 + JSON why not
// It lives in the caller's scope: closing the scope closes the listener and its connections.
// Subpath imports: the packages' barrels load every module they have (~0.5 s of a node's start).
import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import { Data, Duration, Effect } from "effect"
import type { Scope } from "effect"
import * as http from "node:http"
import { listenFailureText } from "../net/peers/errors.ts"
import { formatAddress, parseAddress } from "../net/peers/sockets.ts"
import type { HealthReport, WantedRole } from "./health.ts"
import { parseWantedRole } from "./health.ts"
import { prometheusContentType } from "./prometheus.ts"

export class MetricsServerFailed extends Data.TaggedError("MetricsServerFailed")<{ readonly address: string; readonly cause: unknown }> {
  override get message() {
    return `metrics endpoint: ${listenFailureText(this.address, this.cause)}`
  }
}

export interface MetricsEndpoints {
  /** The exposition text, collected now. */
  readonly metrics: Effect.Effect<string>
  readonly health: (want: WantedRole | null) => Effect.Effect<HealthReport>
}

export interface MetricsServerLimits {
  /** Connections held at once (scrapers and probes are few). */
  readonly connectionsMax: number
  /** One answer's budget; past it the answer is 503. */
  readonly answerTimeoutMs: number
  /** node:http's bound on receiving a whole request. */
  readonly requestTimeoutMs: number
}

export const metricsServerLimits: MetricsServerLimits = { connectionsMax: 64, answerTimeoutMs: 5_000, requestTimeoutMs: 10_000 }

export interface MetricsServer {
  /** "host:port" actually listened on (port 0 resolved). */
  readonly address: string
}

export const serve = (options: {
  readonly address: string
  readonly endpoints: MetricsEndpoints
  readonly limits?: Partial<MetricsServerLimits>
}): Effect.Effect<MetricsServer, MetricsServerFailed, Scope.Scope> =>
  Effect.gen(function*() {
    const limits = { ...metricsServerLimits, ...options.limits }
    const hostPort = yield* Effect.try({ try: () => parseAddress(options.address), catch: (cause) => new MetricsServerFailed({ address: options.address, cause }) })
    let nodeServer: http.Server | null = null
    // Loaded only when metrics are served: the HTTP stack costs a node ~0.3 s of start-up.
    const NodeHttpServer = yield* Effect.promise(() => import("@effect/platform-node/NodeHttpServer"))
    const server = yield* NodeHttpServer.make(() => {
      nodeServer = http.createServer()
      nodeServer.maxConnections = limits.connectionsMax
      nodeServer.requestTimeout = limits.requestTimeoutMs
      nodeServer.headersTimeout = Math.min(limits.requestTimeoutMs, 60_000)
      return nodeServer
    }, { host: hostPort.host, port: hostPort.port }).pipe(
      Effect.mapError((cause) => new MetricsServerFailed({ address: options.address, cause }))
    )
    // Runs before NodeHttpServer's own close, which would otherwise wait for kept-alive scrapers.
    yield* Effect.addFinalizer(() => Effect.sync(() => nodeServer?.closeAllConnections()))
    yield* server.serve(app(options.endpoints, limits))
    const bound = server.address
    const address = bound._tag === "TcpAddress" ? formatAddress(bound.hostname, bound.port) : bound.path
    yield* Effect.logInfo(`metrics and health on http://${address}/metrics, /health`)
    return { address }
  })

const app = (endpoints: MetricsEndpoints, limits: MetricsServerLimits) =>
  Effect.gen(function*() {
    const request = yield* HttpServerRequest.HttpServerRequest
    const url = new URL(request.url, "http://localhost")
    if (url.pathname !== "/metrics" && url.pathname !== "/health") {
      return HttpServerResponse.text("not found: try /metrics or /health\n", { status: 404 })
    }
    if (request.method !== "GET" && request.method !== "HEAD") {
      return HttpServerResponse.text("method not allowed\n", { status: 405, headers: { allow: "GET, HEAD" } })
    }
    const answer = url.pathname === "/metrics" ? metrics(endpoints) : health(endpoints, url.searchParams.get("role") ?? undefined)
    return yield* answer.pipe(
      Effect.timeoutTo({
        duration: Duration.millis(limits.answerTimeoutMs),
        onSuccess: (response) => response,
        onTimeout: () => HttpServerResponse.text(`no answer within ${limits.answerTimeoutMs} ms\n`, { status: 503 })
      })
    )
  })

const metrics = (endpoints: MetricsEndpoints) =>
  Effect.map(endpoints.metrics, (text) => HttpServerResponse.text(text, { contentType: prometheusContentType }))

const health = (endpoints: MetricsEndpoints, role: string | undefined) => {
  const wanted = parseWantedRole(role)
  if (!wanted.ok) return Effect.succeed(HttpServerResponse.unsafeJson({ status: "bad-request", reason: wanted.reason }, { status: 400 }))
  return Effect.map(endpoints.health(wanted.want), (report) => HttpServerResponse.unsafeJson(report, { status: report.status === "ok" ? 200 : 503 }))
}

