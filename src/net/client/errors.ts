// What a client call can fail with, one tag per thing a caller does differently.
import { Data } from "effect"
import { ErrorCode } from "../protocol/codes.ts"

/** The server answered FAILURE: `code` is SQLite's (extended) code or dqlite's own (codes.ts
 * `ErrorCode`: 10250 not leader, 10506 leadership lost, 5 busy, 1005 parse, …). */
export class ServerFailure extends Data.TaggedError("ServerFailure")<{
  readonly code: number
  readonly message: string
  /** The request that failed, e.g. "execSql". */
  readonly request: string
}> {
  /** Not the leader: nothing was done; retrying on the leader is safe. */
  get isNotLeader(): boolean {
    return this.code === ErrorCode.notLeader || this.code === ErrorCode.notLeaderLegacy
  }
  /** Leadership was lost while the request ran: it may or may not have taken effect. */
  get isLeadershipLost(): boolean {
    return this.code === ErrorCode.leadershipLost || this.code === ErrorCode.leadershipLostLegacy
  }
}

/** No connection could be made, or it broke before the request was written: nothing was done. */
export class ConnectionFailed extends Data.TaggedError("ConnectionFailed")<{
  readonly address: string
  readonly detail: string
  readonly cause?: unknown
}> {}

/** The connection broke after the request was written, before its answer arrived: a write may or
 * may not have taken effect. */
export class ConnectionLost extends Data.TaggedError("ConnectionLost")<{
  readonly address: string
  readonly request: string
  readonly detail: string
}> {}

/** No answer within the request timeout: a write may or may not have taken effect. The
 * connection is closed (its stream state is unknown). */
export class RequestTimeout extends Data.TaggedError("RequestTimeout")<{
  readonly address: string
  readonly request: string
  readonly timeoutMs: number
}> {}

/** The server answered nothing for `silentMs`, and a liveness probe (LEADER on a second
 * connection) got no answer either: the process is paused, wedged or cut off. Noticed well
 * before the request timeout. The connection is closed; a write may or may not have taken
 * effect (it may still, if the server resumes and its leadership holds). */
export class ServerUnresponsive extends Data.TaggedError("ServerUnresponsive")<{
  readonly address: string
  readonly request: string
  readonly silentMs: number
}> {}

/** No server named a leader that confirmed itself. */
export class NoLeader extends Data.TaggedError("NoLeader")<{ readonly detail: string }> {}

/** The server sent something the protocol does not allow at that point. The connection is
 * closed. */
export class ProtocolError extends Data.TaggedError("ProtocolError")<{
  readonly address: string
  readonly detail: string
}> {}

/** A parameter the wire cannot carry (an integer outside int64, a NUL in a text, …). Nothing was
 * sent. */
export class InvalidArgument extends Data.TaggedError("InvalidArgument")<{ readonly detail: string }> {}

export type ClientError =
  | ServerFailure
  | ConnectionFailed
  | ConnectionLost
  | RequestTimeout
  | ServerUnresponsive
  | NoLeader
  | ProtocolError
  | InvalidArgument

/** Whether the request certainly did nothing, so sending it again cannot apply it twice. */
export function certainlyNotApplied(error: ClientError): boolean {
  switch (error._tag) {
    case "ConnectionFailed":
    case "NoLeader":
      return true
    case "ServerFailure":
      return error.isNotLeader
    default:
      return false
  }
}

/** Whether a failure says the connection (or its server's leadership) is unusable, so the
 * connection should be dropped and the leader looked for again. */
export function invalidatesConnection(error: ClientError): boolean {
  switch (error._tag) {
    case "ConnectionFailed":
    case "ConnectionLost":
    case "RequestTimeout":
    case "ServerUnresponsive":
    case "ProtocolError":
      return true
    case "ServerFailure":
      return error.isNotLeader || error.isLeadershipLost
    default:
      return false
  }
}

/** A client error as one line for a person: the SQLite (or dqlite) code for server failures. */
export function describeClientError(error: ClientError): string {
  switch (error._tag) {
    case "ServerFailure":
      return `${error.message} (code ${error.code})`
    case "ConnectionFailed":
      return `cannot connect to ${error.address}: ${error.detail}`
    case "ConnectionLost":
      return `connection to ${error.address} lost during ${error.request}: ${error.detail}`
    case "RequestTimeout":
      return `${error.request} to ${error.address}: no answer within ${error.timeoutMs} ms`
    case "ServerUnresponsive":
      return `${error.request} to ${error.address}: no answer for ${error.silentMs} ms, nor to a liveness probe (paused or wedged?)`
    case "NoLeader":
      return `no leader found: ${error.detail}`
    case "ProtocolError":
      return `protocol error from ${error.address}: ${error.detail}`
    case "InvalidArgument":
      return `invalid argument: ${error.detail}`
  }
}
