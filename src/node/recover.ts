// Disaster recovery when a majority of voters is lost for good: rewrite the membership of a
// stopped node's data directory so the survivors can form a cluster again. As canonical raft's
// raft_recover does, nothing already in the log is changed: a new configuration entry, naming
// the survivors as the only voters, is appended after the last entry, in the current term. On
// start the configuration in effect is the last one in the log, so the node counts votes among
// the survivors only; the entry (and everything before it) commits once they elect a leader.
// Entries that were never committed by the old cluster may thereby commit: the price of recovery.
import * as path from "node:path"
import { Data, Effect } from "effect"
import type { Entry, Member, Membership, NodeId } from "../raft/types.ts"
import type { Disk } from "../storage/Disk.ts"
import { SegmentLog } from "../storage/SegmentLog.ts"
import { lockDataDir } from "./dataDirLock.ts"
import { readIdentity } from "./identity.ts"
import { parseNodeIdText } from "./nodeIdText.ts"

/** --members is malformed, or does not fit this data directory. */
export class InvalidMembers extends Data.TaggedError("InvalidMembers")<{ readonly detail: string }> {
  override get message() {
    return this.detail
  }
}

/** The directory is not a tqlite node's data directory. */
export class NotADataDir extends Data.TaggedError("NotADataDir")<{ readonly dir: string; readonly detail: string }> {
  override get message() {
    return `${this.dir} is not a tqlite data directory: ${this.detail}`
  }
}

/** Parses "ID@HOST:PORT,...": ids in decimal, or in hex with 0x (the dqlite shell's `.cluster`
 * prints them in hex); every member a voter. */
export function parseMembers(text: string): Membership | InvalidMembers {
  const parts = text.split(",").map((p) => p.trim()).filter((p) => p.length > 0)
  if (parts.length === 0) return new InvalidMembers({ detail: "--members names no member (expected ID@HOST:PORT,...)" })
  const members: Member[] = []
  for (const part of parts) {
    const at = part.indexOf("@")
    const idText = at < 0 ? "" : part.slice(0, at)
    const address = at < 0 ? "" : part.slice(at + 1)
    const parsed = parseNodeIdText(idText)
    if (typeof parsed === "string") return new InvalidMembers({ detail: `bad member "${part}": expected ID@HOST:PORT; ${parsed}` })
    const id = Number(parsed)
    if (!Number.isSafeInteger(id)) return new InvalidMembers({ detail: `bad member "${part}": node id ${parsed} is larger than tqlite's ids (2^53)` })
    const port = /^(.+):(\d+)$/.exec(address)
    if (port === null || Number(port[2]) < 1 || Number(port[2]) > 65_535) return new InvalidMembers({ detail: `bad member "${part}": the address must be HOST:PORT` })
    if (members.some((m) => m.id === id)) return new InvalidMembers({ detail: `node id ${id} is listed twice` })
    if (members.some((m) => m.address === address)) return new InvalidMembers({ detail: `address ${address} is listed twice` })
    members.push({ id, address, role: "voter" })
  }
  return { members: members.sort((a, b) => a.id - b.id) }
}

export interface RecoverResult {
  readonly nodeId: NodeId
  /** The membership the log held before (in effect at its end). */
  readonly previous: Membership
  readonly membership: Membership
  /** Index and term of the configuration entry appended. */
  readonly index: number
  readonly term: number
}

/** Appends `membership` to the log of the stopped node in `dataDir` (locked while it works). */
export const recoverMembership = (dataDir: string, membership: Membership) =>
  Effect.scoped(Effect.gen(function*() {
    yield* lockDataDir(dataDir)
    const identity = yield* readIdentity(dataDir)
    if (identity === null) return yield* new NotADataDir({ dir: dataDir, detail: "it has no node identity (was a node ever started on it?)" })
    const self = membership.members.find((m) => m.id === identity.nodeId)
    if (self === undefined) {
      return yield* new InvalidMembers({ detail: `this data directory is node ${identity.nodeId} (0x${identity.nodeId.toString(16)}), which --members must include` })
    }
    if (self.address !== identity.address) {
      return yield* new InvalidMembers({ detail: `node ${identity.nodeId} listens on ${identity.address}, not ${self.address}` })
    }
    const log = yield* SegmentLog.open({ dir: path.join(dataDir, "log"), clusterId: identity.clusterId })
    const recovered = yield* log.load
    const last = recovered.entries.at(-1)
    const lastIndex = last?.index ?? recovered.base.index
    const lastTerm = last?.term ?? recovered.base.term
    if (lastIndex === 0) return yield* new NotADataDir({ dir: dataDir, detail: "its log is empty (the node never joined a cluster)" })
    let previous = recovered.snapshot?.config ?? { members: [] }
    for (const entry of recovered.entries) if (entry.kind === "config") previous = entry.config
    const term = Math.max(recovered.hardState.term, lastTerm)
    const entry: Entry = { kind: "config", term, index: lastIndex + 1, config: membership }
    yield* log.persist([{ entries: [entry] }])
    return { nodeId: identity.nodeId, previous, membership, index: entry.index, term } satisfies RecoverResult
  })) satisfies Effect.Effect<RecoverResult, unknown, Disk>
