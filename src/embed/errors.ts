// What the embedding API (Tqlite.ts) fails with: one tag per thing a caller does differently,
// whichever way the request went (the local node's SQL surface or the wire client). The mapping
// from the layers below lives here so both routes answer alike.
import { Data } from "effect"
import type { ClientError } from "../net/client/errors.ts"
import type { SqlFailure } from "../sqlite/Sql.ts"
import { SqlError } from "../sqlite/Sql.ts"

/** The node that received the request does not lead (and routing could not reach one that
 * does). Nothing was done: retrying is safe. */
export class NotLeader extends Data.TaggedError("NotLeader")<{
  /** The leader the refusing node named, when it knew one. */
  readonly leaderId: bigint | null
  readonly message: string
}> {}

/** No definite answer in time: the request waited past a timeout, or the connection or the
 * leadership was lost while it ran. `outcome` says whether a write may have been applied. */
export class WriteTimeout extends Data.TaggedError("WriteTimeout")<{
  /** "notApplied": refused before running (queue full, waited too long for the writer);
   * "unknown": it may or may not have taken effect — check before retrying a write. */
  readonly outcome: "notApplied" | "unknown"
  readonly message: string
}> {}

/** SQLite refused the statement: `code` is SQLite's (extended) result code (1 for a syntax
 * error, 2067 for a UNIQUE constraint, …), `message` SQLite's text. Also used for bad input
 * this API refuses before sending (`code` 20 SQLITE_MISMATCH for a parameter no SQL type fits,
 * 21 SQLITE_MISUSE for transaction control outside `transaction`). The SQL surface's own class
 * (src/sqlite/Sql.ts), the same name, fields and tag: one definition, so the tag means one thing. */
export { SqlError }

/** No leader could be reached: no quorum, or no member answered. Nothing was done. */
export class ClusterUnavailable extends Data.TaggedError("ClusterUnavailable")<{
  readonly message: string
}> {}

/** This node's copy is not fresh enough for the read's consistency level (docs/embedding.md):
 * "lag" — a `bounded` read on a node that has not heard from its leader within `maxLagMs`;
 * "session" — the session's index was not applied on this node within the wait bound;
 * "replaying" — a restarted node has not replayed its log far enough to read its files.
 * Nothing was read: read at a stronger level (through the leader), elsewhere, or later. */
export class ReplicaStale extends Data.TaggedError("ReplicaStale")<{
  readonly reason: "lag" | "session" | "replaying"
  readonly message: string
}> {}

export type TqliteError = NotLeader | WriteTimeout | SqlError | ClusterUnavailable | ReplicaStale

/** Building the node failed (data directory, address, joining the cluster). */
export class TqliteStartError extends Data.TaggedError("TqliteStartError")<{
  readonly message: string
  readonly cause: unknown
}> {}

/** SQLITE_MISMATCH: a parameter that no SQL type fits. */
export const parameterMismatchCode = 20
/** SQLITE_MISUSE: the API was used in a way it does not allow. */
export const misuseCode = 21
/** SQLITE_BUSY, which the gateway sends for SqlBusy (queue full or writer wait timed out). */
const busyCode = 5

/** A failure of the local node's SQL surface. */
export function fromSqlFailure(failure: SqlFailure): TqliteError {
  switch (failure._tag) {
    case "SqlError":
      return new SqlError({ code: failure.code, message: failure.message })
    case "SqlNotLeader":
      return new NotLeader({ leaderId: failure.leader === null ? null : BigInt(failure.leader), message: failure.message })
    case "SqlLeadershipLost":
      return new WriteTimeout({ outcome: "unknown", message: failure.message })
    case "SqlBusy":
      return new WriteTimeout({ outcome: "notApplied", message: failure.message })
    case "SqlStale":
      return new ReplicaStale({ reason: failure.reason, message: failure.message })
  }
}

/** A failure of the wire client, after its own bounded retries. */
export function fromClientError(error: ClientError): TqliteError {
  switch (error._tag) {
    case "ServerFailure":
      if (error.isNotLeader) return new NotLeader({ leaderId: null, message: error.message })
      if (error.isLeadershipLost) return new WriteTimeout({ outcome: "unknown", message: error.message })
      if (error.code === busyCode) return new WriteTimeout({ outcome: "notApplied", message: error.message })
      return new SqlError({ code: error.code, message: error.message })
    case "ConnectionFailed":
      return new ClusterUnavailable({ message: `cannot connect to ${error.address}: ${error.detail}` })
    case "NoLeader":
      return new ClusterUnavailable({ message: `no leader: ${error.detail}` })
    case "ConnectionLost":
      return new WriteTimeout({ outcome: "unknown", message: `connection to ${error.address} lost during ${error.request}: ${error.detail}` })
    case "RequestTimeout":
      return new WriteTimeout({ outcome: "unknown", message: `${error.request} on ${error.address}: no answer within ${error.timeoutMs} ms` })
    case "ServerUnresponsive":
      return new WriteTimeout({ outcome: "unknown", message: `${error.request} on ${error.address}: no answer for ${error.silentMs} ms, nor to a liveness probe` })
    case "ProtocolError":
      return new WriteTimeout({ outcome: "unknown", message: `protocol error from ${error.address}: ${error.detail}` })
    case "InvalidArgument":
      return new SqlError({ code: parameterMismatchCode, message: error.detail })
  }
}
