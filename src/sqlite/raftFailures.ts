// The one mapping from the Raft node's request errors (src/actors/raftErrors.ts) to the SQL
// surface's failures (Sql.ts): every place in src/sqlite that asks Raft for something and
// answers a client with what Raft said goes through here. The leader writer's proposals are the
// exception by design: their outcome feeds the writer's core (writerCore.ts), which decides
// between retrying, stopping and answering, and builds the SQL failure itself.
import type { ReadConsistency } from "../actors/RaftActor.ts"
import type { RaftRequestError } from "../actors/raftErrors.ts"
import type { SqlFailure } from "./Sql.ts"
import { SqlBusy, SqlError, SqlLeadershipLost, SqlNotLeader, SqlStale } from "./Sql.ts"
import { sqliteFullCode } from "./sqliteCodes.ts"

/** A read, a read index or a lookup that failed in Raft: not leader → SqlNotLeader (retry on
 * the leader named); overloaded or timed out → SqlBusy (nothing was done); a full disk →
 * SQLITE_FULL; anything else (leadership moved while it ran) → SqlLeadershipLost. */
export function sqlFailureOfRaft(error: RaftRequestError): SqlFailure {
  switch (error._tag) {
    case "RaftNotLeader":
      return new SqlNotLeader({ leader: error.leader, message: error.detail })
    case "Overloaded":
      return new SqlBusy({ message: error.detail })
    case "RaftRequestTimeout":
      return new SqlBusy({ message: `no answer within ${error.timeoutMs} ms` })
    case "StorageFull":
      return new SqlError({ code: sqliteFullCode, message: error.detail })
    default:
      return new SqlLeadershipLost({ message: error._tag })
  }
}

/** A read from this node's own copy at a read level: the level's own refusals typed (a stale
 * replica, a session index not reached in time), the rest as any Raft request. */
export function sqlFailureOfOwnCopyRead(error: RaftRequestError, consistency: ReadConsistency, nodeId: number): SqlFailure {
  if (error._tag === "RaftReplicaStale") return new SqlStale({ reason: "lag", message: error.detail })
  if (error._tag === "RaftRequestTimeout" && consistency.level === "session") {
    return new SqlStale({ reason: "session", message: `node ${nodeId} did not apply index ${consistency.index} within ${error.timeoutMs} ms` })
  }
  return sqlFailureOfRaft(error)
}

/** The writer's leadership check before it serves from its committed view failed: not leader →
 * SqlNotLeader; anything else (`error` null: a defect) → SqlBusy, since nothing was done. */
export function sqlFailureOfLeadershipCheck(error: RaftRequestError | null): SqlFailure {
  return error?._tag === "RaftNotLeader"
    ? new SqlNotLeader({ leader: error.leader, message: error.detail })
    : new SqlBusy({ message: `could not confirm leadership: ${error?._tag ?? "defect"}` })
}
