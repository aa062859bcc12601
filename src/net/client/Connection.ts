// One client connection to one dqlite-protocol server: connect and send the protocol word, then
// one request at a time, each with a timeout. The timeout is a deadline a watchdog fiber (one per
// connection, on Effect's Clock) checks; expiring closes the connection, which ends the waiting
// read. A timer fiber per request would cost more than the rest of the request's trip through
// the client. A connection that timed out, broke, or received
// something the protocol does not allow is marked `broken` and closed: its stream state is
// unknown, so it is never used again.
//
// Liveness: a request unanswered for `liveness.probeAfterMs` makes the watchdog ask the same
// server LEADER on a second, short-lived connection. A server that answers is alive (a slow
// query, a long commit): the request goes on waiting, probed again later. One that does not
// answer within `liveness.timeoutMs` is silent (paused, wedged, cut off): the connection is
// closed and the request fails with ServerUnresponsive, long before its request timeout.
//
// While a connection sits idle (between leases), a watcher notices the server closing it or
// sending unprompted bytes, so a pooled connection that died is replaced before a request is
// written to it (otherwise a write to a dead server would have an unknown outcome).
import type * as net from "node:net"
import type { Scope } from "effect"
import { Clock, Data, Duration, Effect, Exit } from "effect"
import { encodeProtocolVersion } from "../protocol/framing.ts"
import type { Frame } from "../protocol/framing.ts"
import { WireError } from "../protocol/errors.ts"
import type { Request } from "../protocol/requests.ts"
import { encodeRequest } from "../protocol/requests.ts"
import type { Response, RowsResponse } from "../protocol/responses.ts"
import { decodeResponse } from "../protocol/responses.ts"
import type { FilesPiece } from "../protocol/filesStream.ts"
import { ResponseType } from "../protocol/codes.ts"
import { FrameStream } from "../protocol/socketIo.ts"
import type { PeerTlsOptions } from "../peers/sockets.ts"
import { connect } from "../peers/sockets.ts"
import { ConnectionFailed, ConnectionLost, InvalidArgument, ProtocolError, RequestTimeout, ServerFailure, ServerUnresponsive } from "./errors.ts"

export interface ConnectionOptions {
  readonly address: string
  readonly connectTimeoutMs: number
  readonly requestTimeoutMs: number
  /** Largest response read whole (a ROWS batch is small; `callFiles` streams FILES past it). */
  readonly messageBytesMax: number
  /** TLS towards the server (client certificate included), as the peers use it. */
  readonly tls?: PeerTlsOptions | null
  readonly protocol?: "v1" | "legacy"
  /** Probe a server that has not answered a request for `probeAfterMs`; give it `timeoutMs` to
   * answer the probe. Absent: no probes (the request timeout alone bounds the wait). */
  readonly liveness?: { readonly probeAfterMs: number; readonly timeoutMs: number } | null
}

export type ExchangeError = ConnectionFailed | ConnectionLost | RequestTimeout | ServerUnresponsive | ProtocolError | ServerFailure | InvalidArgument

/** A statement prepared on this connection. */
export interface PreparedOnConnection {
  readonly stmtId: number
  readonly paramCount: number
}

/** Prepared statements cached per connection; the oldest is finalized beyond this. */
export const statementsCachedMax = 128

export class Connection {
  /** Set once the connection must not be used again; it is closed at the same time. */
  broken = false
  /** The database opened on this connection (dqlite allows one), or null. */
  database: string | null = null
  readonly statements = new Map<string, PreparedOnConnection>()
  private idleWatch: (() => void) | null = null
  private readonly lock = Effect.unsafeMakeSemaphore(1)
  /** When the exchange under way must have ended (Clock ms), or null between exchanges. */
  private deadlineMs: number | null = null
  /** The watchdog closed the connection because an exchange passed its deadline. */
  private timedOut = false
  /** When the exchange under way started, or its last liveness probe was answered (Clock ms). */
  private heardOrSentMs = 0
  /** The watchdog closed the connection because the server answered neither the exchange nor a
   * liveness probe; how long it had been silent. */
  private silentForMs: number | null = null

  private constructor(
    readonly address: string,
    private readonly io: FrameStream,
    private readonly socket: net.Socket,
    private readonly options: ConnectionOptions,
    private readonly clock: Clock.Clock
  ) {}

  /** Connects and sends the protocol version word; closed with the scope. */
  static open(options: ConnectionOptions): Effect.Effect<Connection, ConnectionFailed, Scope.Scope> {
    return Effect.gen(function*() {
      let pending: net.Socket | null = null
      const socket = yield* Effect.acquireRelease(
        connect({
          address: options.address,
          timeoutMs: options.connectTimeoutMs,
          keepAliveMs: 15_000,
          tls: options.tls ?? null,
          onSocket: (created) => void (pending = created)
        }).pipe(
          Effect.catchAllDefect((defect) => Effect.fail({ _tag: "Invalid" as const, detail: String(defect) })),
          Effect.mapError((error) =>
            new ConnectionFailed({
              address: options.address,
              detail: error._tag === "ConnectionTimeout" ? `connect timed out after ${options.connectTimeoutMs} ms` : error.detail,
              cause: error
            })
          ),
          Effect.onInterrupt(() => Effect.sync(() => (pending as net.Socket | null)?.destroy()))
        ),
        (socket) => Effect.sync(() => socket.destroy())
      )
      const io = new FrameStream(socket, { messageBytesMax: options.messageBytesMax, writeTimeoutMs: options.requestTimeoutMs })
      const connection = new Connection(options.address, io, socket, options, yield* Effect.clock)
      yield* io.write(encodeProtocolVersion(options.protocol ?? "v1")).pipe(
        Effect.mapError((error) => new ConnectionFailed({ address: options.address, detail: error.detail, cause: error }))
      )
      yield* Effect.addFinalizer(() => connection.close)
      // Checks the deadline a few times per timeout: a request fails at most a tenth late; and
      // the silence a few times per probe delay.
      const liveness = options.liveness ?? null
      const checkEveryMs = Math.min(1000, Math.max(5, Math.floor(options.requestTimeoutMs / 10)), liveness === null ? Infinity : Math.max(5, Math.floor(liveness.probeAfterMs / 4)))
      yield* Effect.sleep(Duration.millis(checkEveryMs)).pipe(
        Effect.zipRight(Effect.suspend(() => {
          connection.expireIfLate()
          return connection.probeIfSilent()
        })),
        Effect.repeat({ while: () => !connection.broken }),
        // Connections are opened inside a pool's acquire (uninterruptible); the watchdog must
        // still stop when the connection's scope closes.
        Effect.interruptible,
        Effect.forkScoped
      )
      return connection
    })
  }

  /** Runs `effect` (a sequence of exchanges on this connection) with no other exchange of the
   * same caller interleaved: for fibers that share a connection (a transaction's). */
  exclusive<A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> {
    return this.lock.withPermits(1)(effect)
  }

  get isUsable(): boolean {
    return !this.broken && this.io.isOpen
  }

  /** Marks the connection unusable and destroys it. */
  readonly close: Effect.Effect<void> = Effect.sync(() => {
    this.broken = true
    this.stopIdleWatch()
    this.socket.destroy()
  })

  /** Between leases: notice the server closing the connection or sending unprompted bytes. */
  startIdleWatch(): void {
    if (this.idleWatch !== null || this.broken) return
    const socket = this.socket
    const onReadable = () => {
      if (socket.read() !== null) this.breakNow()
    }
    const onGone = () => this.breakNow()
    socket.on("readable", onReadable)
    socket.on("end", onGone)
    socket.on("close", onGone)
    this.idleWatch = () => {
      socket.off("readable", onReadable)
      socket.off("end", onGone)
      socket.off("close", onGone)
    }
  }

  stopIdleWatch(): void {
    this.idleWatch?.()
    this.idleWatch = null
  }

  private breakNow(): void {
    this.broken = true
    this.stopIdleWatch()
    this.socket.destroy()
  }

  /** Sends one request and reads its one response; FAILURE becomes `ServerFailure`. */
  call(request: Request): Effect.Effect<Response, ExchangeError> {
    return this.exchange(request, this.readResponse(request))
  }

  /** Sends DUMP and streams its FILES answer to `sink` (socketIo.ts `readFilesBody`): the body is
   * never held whole, so it is bounded by neither `messageBytesMax` nor memory. A FAILURE answer
   * is read whole and fails with ServerFailure before `sink` sees anything. The exchange is bounded
   * by `timeoutMs` (default: the request timeout) and each wait for the body's next bytes by
   * `idleTimeoutMs`. Any failure after the FILES header (malformed body, early end, idle timeout,
   * a failing sink) closes the connection: the rest of the announced body cannot be skipped. */
  callFiles<E, R>(
    request: Request,
    sink: (piece: FilesPiece) => Effect.Effect<void, E, R>,
    options: { readonly timeoutMs?: number; readonly idleTimeoutMs: number }
  ): Effect.Effect<void, ExchangeError | E, R> {
    const self = this
    // The sink's own failures travel boxed through the stream's error handling, then unboxed.
    const boxedSink = (piece: FilesPiece) =>
      Effect.suspend(() => {
        // Every piece counts as hearing from the server: a long dump is not probed for liveness.
        self.heardOrSentMs = self.clock.unsafeCurrentTimeMillis()
        return Effect.mapError(sink(piece), (error) => new SinkFailed({ error }))
      })
    const read: Effect.Effect<void, ExchangeError | SinkFailed, R> = Effect.gen(function*() {
      const header = yield* self.io.readHeader.pipe(Effect.catchTags({
        SocketError: (error) => Effect.fail(new ConnectionLost({ address: self.address, request: request.kind, detail: error.detail })),
        FramingError: (error) => self.protocolError(error.error.message)
      }))
      if (header === null) return yield* new ConnectionLost({ address: self.address, request: request.kind, detail: "the server closed the connection" })
      if (header.type !== ResponseType.files) {
        const response = yield* self.readResponse(request)
        return yield* self.protocolError(`${request.kind}: expected FILES, got ${response.kind}`)
      }
      yield* self.io.readFilesBody(boxedSink, { idleTimeoutMs: options.idleTimeoutMs }).pipe(
        Effect.catchTags({
          SocketError: (error) =>
            Effect.fail(
              error.reason === "Timeout"
                ? new RequestTimeout({ address: self.address, request: `${request.kind} (idle: ${error.detail})`, timeoutMs: options.idleTimeoutMs })
                : new ConnectionLost({ address: self.address, request: request.kind, detail: error.detail })
            ),
          FramingError: (error) => self.protocolError(`${request.kind}: ${error.error.message}`)
        })
      )
    })
    return Effect.catchIf(
      this.exchange(request, read, options.timeoutMs),
      (error): error is SinkFailed => error instanceof SinkFailed,
      (boxed) => Effect.fail(boxed.error as E)
    )
  }

  /** Sends QUERY / QUERY_SQL and reads the first ROWS batch. */
  startRows(request: Request): Effect.Effect<RowsResponse, ExchangeError> {
    return this.exchange(request, Effect.flatMap(this.readResponse(request), (response) => this.expectRows(request, response)))
  }

  /** The next ROWS batch of a result whose last batch ended in PART. */
  nextRows(request: Request): Effect.Effect<RowsResponse, ExchangeError> {
    return this.guard(request, Effect.flatMap(this.readResponse(request), (response) => this.expectRows(request, response)))
  }

  /** Stops a result stream whose last batch ended in PART: sends INTERRUPT and discards
   * messages until its EMPTY (the server may have sent more batches, or a FAILURE, meanwhile). */
  interruptRows(): Effect.Effect<void, ExchangeError> {
    const request: Request = { kind: "interrupt", dbId: 0n }
    const self = this
    const drain = Effect.gen(function*() {
      for (;;) {
        const frame = yield* self.readFrame(request)
        if (frame.type === 8) return // EMPTY
      }
    })
    return this.exchange(request, drain)
  }

  private expectRows(request: Request, response: Response): Effect.Effect<RowsResponse, ProtocolError> {
    if (response.kind === "rows") return Effect.succeed(response)
    return this.protocolError(`${request.kind}: expected ROWS, got ${response.kind}`)
  }

  private protocolError(detail: string): Effect.Effect<never, ProtocolError> {
    return Effect.zipRight(this.close, Effect.fail(new ProtocolError({ address: this.address, detail })))
  }

  private exchange<A, E = never, R = never>(request: Request, read: Effect.Effect<A, ExchangeError | E, R>, timeoutMs?: number): Effect.Effect<A, ExchangeError | E, R> {
    return Effect.suspend(() => {
      if (!this.isUsable) {
        return Effect.fail(new ConnectionFailed({ address: this.address, detail: "the connection is closed" }))
      }
      let bytes: Uint8Array
      try {
        bytes = encodeRequest(request)
      } catch (error) {
        if (error instanceof WireError) return Effect.fail(new InvalidArgument({ detail: error.message }))
        throw error
      }
      this.stopIdleWatch()
      const sent = Effect.suspend((): Effect.Effect<void, ConnectionFailed | ConnectionLost> => {
        if (!this.io.isOpen) return Effect.fail(new ConnectionFailed({ address: this.address, detail: "the connection is closed" }))
        return this.io.write(bytes).pipe(
          Effect.mapError((error) => new ConnectionLost({ address: this.address, request: request.kind, detail: error.detail }))
        )
      })
      return this.guard(request, Effect.zipRight(sent, read), timeoutMs)
    })
  }

  /** The watchdog's other check: an exchange unanswered for `probeAfterMs` is probed; a server
   * that answers neither closes the connection (its read then fails, and `guard` reports
   * ServerUnresponsive). Runs on the watchdog fiber, bounded by the probe's timeout. */
  probeIfSilent(): Effect.Effect<void> {
    const liveness = this.options.liveness ?? null
    if (liveness === null || this.deadlineMs === null || this.broken) return Effect.void
    const startedMs = this.clock.unsafeCurrentTimeMillis()
    if (startedMs - this.heardOrSentMs < liveness.probeAfterMs) return Effect.void
    const deadlineMs = this.deadlineMs
    const probe = Effect.scoped(
      Effect.flatMap(
        Connection.open({ ...this.options, connectTimeoutMs: liveness.timeoutMs, requestTimeoutMs: liveness.timeoutMs, liveness: null }),
        (second) => second.call({ kind: "leader" })
      )
    ).pipe(Effect.timeout(Duration.millis(liveness.timeoutMs)), Effect.either)
    return Effect.flatMap(probe, (answer) =>
      Effect.sync(() => {
        // The exchange may have ended (or another begun) while the probe ran.
        if (this.deadlineMs !== deadlineMs || this.broken) return
        const nowMs = this.clock.unsafeCurrentTimeMillis()
        // Any answer, even FAILURE, shows the process is alive: keep waiting, probe again later.
        if (answer._tag === "Right" || answer.left._tag === "ServerFailure") {
          this.heardOrSentMs = nowMs
          return
        }
        this.silentForMs = nowMs - this.heardOrSentMs
        this.breakNow()
      }))
  }

  /** The watchdog's check: an exchange past its deadline closes the connection (its read then
   * fails, and `guard` reports RequestTimeout). */
  expireIfLate(): void {
    if (this.deadlineMs === null || this.broken || this.clock.unsafeCurrentTimeMillis() < this.deadlineMs) return
    this.timedOut = true
    this.breakNow()
  }

  /** The request timeout (or `timeoutMs`), and closing the connection on any failure that leaves
   * it unusable (any but a FAILURE answer or a refused argument, a caller's own errors included). */
  private guard<A, E = never, R = never>(request: Request, effect: Effect.Effect<A, ExchangeError | E, R>, timeoutMsGiven?: number): Effect.Effect<A, ExchangeError | E, R> {
    const timeoutMs = timeoutMsGiven ?? this.options.requestTimeoutMs
    return Effect.suspend(() => {
      this.heardOrSentMs = this.clock.unsafeCurrentTimeMillis()
      this.deadlineMs = this.heardOrSentMs + timeoutMs
      return Effect.onExit(
        Effect.mapError(effect, (error): ExchangeError | E => {
          if (!isExchangeError(error) || keepsConnection(error)) return error
          if (this.timedOut) return new RequestTimeout({ address: this.address, request: request.kind, timeoutMs })
          if (this.silentForMs !== null) return new ServerUnresponsive({ address: this.address, request: request.kind, silentMs: this.silentForMs })
          return error
        }),
        (exit) => {
          this.deadlineMs = null
          if (Exit.isSuccess(exit) || (exit.cause._tag === "Fail" && isExchangeError(exit.cause.error) && keepsConnection(exit.cause.error))) return Effect.void
          return this.close
        }
      )
    })
  }

  private readFrame(request: Request): Effect.Effect<Frame, ConnectionLost | ProtocolError> {
    return this.io.readFrame.pipe(
      Effect.catchTags({
        SocketError: (error) => Effect.fail(new ConnectionLost({ address: this.address, request: request.kind, detail: error.detail })),
        FramingError: (error) => this.protocolError(error.error.message)
      }),
      Effect.flatMap((frame) =>
        frame === null
          ? Effect.fail(new ConnectionLost({ address: this.address, request: request.kind, detail: "the server closed the connection" }))
          : Effect.succeed(frame)
      )
    )
  }

  private readResponse(request: Request): Effect.Effect<Response, ConnectionLost | ProtocolError | ServerFailure> {
    return Effect.flatMap(this.readFrame(request), (frame): Effect.Effect<Response, ConnectionLost | ProtocolError | ServerFailure> => {
      let response: Response
      try {
        response = decodeResponse(frame, {
          protocol: this.options.protocol ?? "v1",
          serversFormat: request.kind === "cluster" && request.format === 0 ? 0 : 1
        })
      } catch (error) {
        if (error instanceof WireError) return this.protocolError(`${request.kind}: ${error.message}`)
        throw error
      }
      if (response.kind === "failure") {
        return Effect.fail(new ServerFailure({ code: response.code, message: response.message, request: request.kind }))
      }
      return Effect.succeed(response)
    })
  }
}

/** A dump sink's failure on its way through the connection's error handling. */
class SinkFailed extends Data.TaggedError("SinkFailed")<{ readonly error: unknown }> {}

/** One of the connection's own errors (not a caller's, such as a dump sink's). */
function isExchangeError(error: unknown): error is ExchangeError {
  return error instanceof ConnectionFailed || error instanceof ConnectionLost || error instanceof RequestTimeout || error instanceof ServerUnresponsive ||
    error instanceof ProtocolError || error instanceof ServerFailure || error instanceof InvalidArgument
}

/** The server answered (a FAILURE response) or the request was refused before it was sent: the
 * stream is still in step, the connection stays usable. */
function keepsConnection(error: ExchangeError): boolean {
  return error._tag === "ServerFailure" || error._tag === "InvalidArgument"
}
