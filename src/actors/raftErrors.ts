// What a caller of the Raft node can be told, one tag per thing the caller does differently.
import { Data } from "effect"
import type { NodeId } from "../raft/types.ts"

/** Not the leader (or leadership is moving): retry on `leader` when known. */
export class RaftNotLeader extends Data.TaggedError("RaftNotLeader")<{ readonly leader: NodeId | null; readonly detail: string }> {}

/** Too much in flight (mailbox full, uncommitted bytes or pending reads past their bound): back
 * off and retry. Nothing was done. */
export class Overloaded extends Data.TaggedError("Overloaded")<{ readonly detail: string }> {}

/** The request itself is wrong (e.g. removing a node that is not a member). */
export class InvalidRequest extends Data.TaggedError("InvalidRequest")<{ readonly detail: string }> {}

/** A membership change is already in progress; retry after it commits. */
export class ChangePending extends Data.TaggedError("ChangePending")<{ readonly detail: string }> {}

/** The entry was overwritten by another leader's: it was definitely not committed. */
export class ProposalDropped extends Data.TaggedError("ProposalDropped")<{ readonly index: number; readonly term: number }> {}

/** The node cannot tell whether the request took effect (e.g. a snapshot covered it before it was
 * seen applied). Treat as maybe-committed. */
export class OutcomeUnknown extends Data.TaggedError("OutcomeUnknown")<{ readonly detail: string }> {}

/** This node cannot make new entries durable (its disk is full): nothing was done. Retry after
 * space is freed — or on another node, since a leader in this state hands leadership over. */
export class StorageFull extends Data.TaggedError("StorageFull")<{ readonly detail: string }> {}

/** No answer within the request's timeout: the outcome is unknown for writes. */
export class RaftRequestTimeout extends Data.TaggedError("RaftRequestTimeout")<{ readonly timeoutMs: number }> {}

/** A bounded-staleness read on a node that has not heard from its leader recently enough. Read
 * elsewhere (or at another level). Nothing was read. */
export class RaftReplicaStale extends Data.TaggedError("RaftReplicaStale")<{ readonly maxLagMs: number; readonly detail: string }> {}

export type RaftRequestError = RaftNotLeader | Overloaded | InvalidRequest | ChangePending | ProposalDropped | OutcomeUnknown | RaftRequestTimeout | StorageFull | RaftReplicaStale
