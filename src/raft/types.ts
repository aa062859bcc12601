// Plain data shared by the Raft core and everything that drives it. Nothing here imports
// anything: the core is plain TypeScript so the simulator, tests and actors run the same code.

/** A node's id within its cluster (dqlite uses uint64; we keep it a safe integer). */
export type NodeId = number
/** A Raft term. 0 means "before any election". */
export type Term = number
/** A position in the Raft log, starting at 1. 0 means "nothing". */
export type LogIndex = number

/** dqlite's roles: a voter votes and counts for quorum; a standby replicates without voting;
 * a spare is a member that is neither (kept ready to be promoted). */
export type Role = "voter" | "standby" | "spare"

export interface Member {
  readonly id: NodeId
  readonly address: string
  readonly role: Role
}

/** The cluster configuration: one entry per member, ordered by id. */
export interface Membership {
  readonly members: ReadonlyArray<Member>
}

/** A log entry. `command` carries the state machine's payload, `config` a new membership
 * (effective as soon as it is appended), `barrier` is the no-op a new leader appends so it can
 * commit an entry of its own term. */
export type Entry =
  | { readonly kind: "command"; readonly term: Term; readonly index: LogIndex; readonly data: Uint8Array }
  | { readonly kind: "config"; readonly term: Term; readonly index: LogIndex; readonly config: Membership }
  | { readonly kind: "barrier"; readonly term: Term; readonly index: LogIndex }

/** What must be durable before a vote or an acknowledgement leaves the node. `commit` is only a
 * hint (it may lag), persisted with the rest to shorten replay after a restart. */
export interface HardState {
  readonly term: Term
  readonly vote: NodeId | null
  readonly commit: LogIndex
}

/** Identifies a snapshot: the state machine as of `index` (whose entry had `term`), and the
 * membership in effect there. The data itself never passes through the core. */
export interface SnapshotMeta {
  readonly index: LogIndex
  readonly term: Term
  readonly config: Membership
}

/** Rough byte size of an entry for flow-control bounds (payload plus a fixed header). */
export const entryHeaderBytes = 32
export function entrySizeBytes(entry: Entry): number {
  switch (entry.kind) {
    case "command":
      return entryHeaderBytes + entry.data.byteLength
    case "config":
      return entryHeaderBytes + entry.config.members.reduce((n, m) => n + 16 + m.address.length, 0)
    case "barrier":
      return entryHeaderBytes
  }
}

export function voters(config: Membership): ReadonlyArray<NodeId> {
  return config.members.filter((m) => m.role === "voter").map((m) => m.id)
}

export function memberOf(config: Membership, id: NodeId): Member | undefined {
  return config.members.find((m) => m.id === id)
}

/** A command entry whose data the core dropped from memory to stay within its entry cache
 * (`entryCacheBytesMax`). It is durable on this node: the driver reads it back from the log
 * store when a follower or the applier needs it. `sizeBytes` is what `entrySizeBytes` said of
 * the whole entry, so flow-control accounting does not change when data leaves memory. */
export interface EvictedEntry {
  readonly kind: "evicted"
  readonly term: Term
  readonly index: LogIndex
  readonly sizeBytes: number
}

/** One position of the core's log: an entry, or the metadata of one whose data was evicted. */
export type LogSlot = Entry | EvictedEntry

export function slotSizeBytes(slot: LogSlot): number {
  return slot.kind === "evicted" ? slot.sizeBytes : entrySizeBytes(slot)
}
