// Shared set-up of the gateway and client tests: a gateway on 127.0.0.1 (ephemeral port) serving
// the better-sqlite3 fixture and a fake cluster, and a raw protocol connection that speaks the
// codec directly (for byte-level checks and for sending what no client would).
import * as fs from "node:fs"
import * as net from "node:net"
import type { Scope } from "effect"
import { Duration, Effect } from "effect"
import type { ClusterServer } from "../../../src/net/gateway/ClusterControl.ts"
import { encodeProtocolVersion } from "../../../src/net/protocol/framing.ts"
import type { Frame } from "../../../src/net/protocol/framing.ts"
import type { GatewayDeps, GatewayObserver } from "../../../src/net/gateway/Gateway.ts"
import { makeClientHandlerSlot } from "../../../src/net/gateway/Gateway.ts"
import { makeTcp } from "../../../src/net/peers/PeerTransport.ts"
import type { GatewayLimits } from "../../../src/net/gateway/limits.ts"
import type { Request } from "../../../src/net/protocol/requests.ts"
import { encodeRequest } from "../../../src/net/protocol/requests.ts"
import type { Response, ResponseDecodeOptions } from "../../../src/net/protocol/responses.ts"
import { decodeResponse } from "../../../src/net/protocol/responses.ts"
import { FrameStream } from "../../../src/net/protocol/socketIo.ts"
import type { Value } from "../../../src/net/protocol/values.ts"
import type { FakeCluster } from "./fixture/fakeCluster.ts"
import { makeFakeCluster } from "./fixture/fakeCluster.ts"
import type { SqliteFixture } from "./fixture/sqliteFixture.ts"
import { makeSqliteFixture } from "./fixture/sqliteFixture.ts"

export interface ClientListener {
  /** The address actually listened on (port 0 resolved). */
  readonly address: string
  /** `connections`: clients being served now; `accepted`: handed to the gateway; `rejected`:
   * closed by the listener (unknown first word, too many connections, nothing in time). */
  readonly stats: Effect.Effect<{ readonly connections: number; readonly accepted: number; readonly rejected: number }>
}

/** A gateway served the way a node serves it: the peers' listener (`makeTcp`, node 1, no peers)
 * hands every connection whose first word is a dqlite version to `makeClientHandlerSlot`. */
export const listenForClients = (
  deps: GatewayDeps,
  limits?: Partial<GatewayLimits>,
  options: { readonly effectPerRequest?: boolean } = {}
): Effect.Effect<ClientListener, never, Scope.Scope> =>
  Effect.gen(function*() {
    const slot = makeClientHandlerSlot({ ...(limits === undefined ? {} : { limits }), ...(options.effectPerRequest === true ? { bugs: { effectPerRequest: true } } : {}) })
    let connections = 0
    const transport = yield* makeTcp({
      nodeId: 1,
      clusterId: "gateway-tests",
      listen: "127.0.0.1:0",
      onClientConnection: (socket, version) =>
        Effect.acquireUseRelease(Effect.sync(() => connections++), () => slot.handler(socket, version), () => Effect.sync(() => connections--))
    }).pipe(Effect.orDie)
    slot.bind(deps)
    return {
      address: transport.address,
      stats: Effect.map(transport.stats, ({ inbound }) => ({ connections, accepted: inbound.clientConnections, rejected: inbound.rejected }))
    }
  })

export interface TestGateway {
  readonly address: string
  readonly server: ClientListener
  readonly fixture: SqliteFixture
  readonly cluster: FakeCluster
}

/** A gateway whose node is id 1 and (by default) the leader of a cluster of itself plus
 * `others`. The fake cluster learns the gateway's address once it listens. */
export const startGateway = (options: {
  readonly others?: ReadonlyArray<ClusterServer>
  readonly leader?: "self" | number | null
  readonly limits?: Partial<GatewayLimits>
  readonly selfRole?: ClusterServer["role"]
  readonly observer?: GatewayObserver
  /** The connection fiber answers every request (ServeOptions.bugs.effectPerRequest). */
  readonly effectPerRequest?: boolean
} = {}): Effect.Effect<TestGateway, never, Scope.Scope> =>
  Effect.gen(function*() {
    const fixture = yield* makeSqliteFixture()
    const cluster = makeFakeCluster({ self: 1, members: [], leader: null })
    const server = yield* listenForClients({
      databases: fixture.databases,
      cluster,
      dumper: fixture.dumper,
      ...(options.observer === undefined ? {} : { observer: options.observer })
    }, options.limits, { effectPerRequest: options.effectPerRequest === true })
    const self: ClusterServer = { id: 1, address: server.address, role: options.selfRole ?? "voter" }
    cluster.state.members = [self, ...(options.others ?? [])]
    const leaderId = options.leader === undefined || options.leader === "self" ? 1 : options.leader
    const leader = cluster.state.members.find((m) => m.id === leaderId)
    cluster.state.leader = leader === undefined ? null : { id: leader.id, address: leader.address }
    return { address: server.address, server, fixture, cluster }
  })

export interface RawConnection {
  readonly socket: net.Socket
  readonly io: FrameStream
  readonly sendBytes: (bytes: Uint8Array) => Effect.Effect<void>
  readonly send: (request: Request) => Effect.Effect<void>
  /** The next whole message, or null if the server closed the connection. */
  readonly receiveFrame: Effect.Effect<Frame | null>
  readonly receive: (options?: ResponseDecodeOptions) => Effect.Effect<Response>
  /** send + receive. */
  readonly call: (request: Request, options?: ResponseDecodeOptions) => Effect.Effect<Response>
  /** OPEN `name` and expect DB. */
  readonly open: (name?: string) => Effect.Effect<void>
}

/** A raw protocol connection (version word sent unless `version` is null). Dies on any socket
 * error or after 10 s without an expected message. */
export const rawConnect = (
  address: string,
  options: { readonly version?: "v1" | "legacy" | null } = {}
): Effect.Effect<RawConnection, never, Scope.Scope> =>
  Effect.gen(function*() {
    const [host, port] = address.split(":") as [string, string]
    const socket = yield* Effect.acquireRelease(
      Effect.async<net.Socket>((resume) => {
        const socket = net.connect({ host, port: Number(port) })
        socket.on("error", () => {})
        socket.once("connect", () => resume(Effect.succeed(socket)))
      }),
      (socket) => Effect.sync(() => socket.destroy())
    )
    const io = new FrameStream(socket, { messageBytesMax: 256 * 1024 * 1024, writeTimeoutMs: 10_000 })
    const sendBytes = (bytes: Uint8Array) => Effect.orDie(io.write(bytes))
    const version = options.version === undefined ? "v1" : options.version
    if (version !== null) yield* sendBytes(encodeProtocolVersion(version))
    const receiveFrame = io.readFrame.pipe(
      Effect.timeoutFail({ duration: Duration.seconds(10), onTimeout: () => new Error("no message from the gateway within 10 s") }),
      Effect.orDie
    )
    const receive = (decodeOptions: ResponseDecodeOptions = {}) =>
      Effect.flatMap(receiveFrame, (frame) =>
        frame === null ? Effect.dieMessage("the gateway closed the connection") : Effect.sync(() => decodeResponse(frame, decodeOptions)))
    const send = (request: Request) => sendBytes(encodeRequest(request))
    const call = (request: Request, decodeOptions: ResponseDecodeOptions = {}) => Effect.zipRight(send(request), receive(decodeOptions))
    const open = (name = "test") =>
      Effect.flatMap(call({ kind: "open", database: name, flags: 0n, vfs: "volatile" }), (response) =>
        response.kind === "db" ? Effect.void : Effect.dieMessage(`OPEN answered ${JSON.stringify(response)}`))
    return { socket, io, sendBytes, send, receiveFrame, receive, call, open }
  })

export const execSql = (sql: string, params: ReadonlyArray<Value> = []): Request =>
  ({ kind: "execSql", schema: 0, dbId: 0n, sql, params })

export const querySql = (sql: string, params: ReadonlyArray<Value> = []): Request =>
  ({ kind: "querySql", schema: 0, dbId: 0n, sql, params })

/** The real `dqlite` shell on PATH (Debian's go-dqlite package), or null. */
export function findDqliteShell(): string | null {
  const directories = (process.env["PATH"] ?? "/usr/bin:/usr/local/bin").split(":").filter((d) => d !== "")
  for (const directory of directories) {
    const candidate = `${directory}/dqlite`
    try {
      fs.accessSync(candidate, fs.constants.X_OK)
      if (fs.statSync(candidate).isFile()) return candidate
    } catch {
      // not here
    }
  }
  return null
}
