// Who this node is: its id and its cluster's id, chosen once and kept in the data directory, so a
// restart with the same directory is the same member of the same cluster.
import { randomBytes, randomInt, randomUUID } from "node:crypto"
import * as path from "node:path"
import { Data, Effect } from "effect"
import { Packr } from "msgpackr"
import type { NodeId } from "../raft/types.ts"
import type { DiskFailure } from "../storage/errors.ts"
import { Disk, writeFileAtomic } from "../storage/Disk.ts"

export interface NodeIdentity {
  readonly nodeId: NodeId
  readonly clusterId: string
  /** The address the node listens on and that peers reach it at ("host:port"). */
  readonly address: string
}

export const identityFileName = "tqlite-node"
const formatVersion = 1
const packr = new Packr({ useRecords: false })

/** The data directory holds another node's or cluster's identity than the one asked for. */
export class IdentityMismatch extends Data.TaggedError("IdentityMismatch")<{ readonly file: string; readonly detail: string }> {
  override get message() {
    return this.detail
  }
}

/** The identity file is unreadable or of an unknown format version. */
export class IdentityCorrupted extends Data.TaggedError("IdentityCorrupted")<{ readonly file: string; readonly detail: string }> {
  override get message() {
    return `${this.file}: ${this.detail}`
  }
}

/** A fresh node id: random, positive, and exact as a JavaScript number (dqlite's are random
 * uint64s; we keep 48 bits). */
export function generateNodeId(): NodeId {
  return randomInt(1, 2 ** 48)
}

export function generateClusterId(): string {
  return `${randomUUID()}-${randomBytes(4).toString("hex")}`
}

/** Reads the identity kept in `dataDir`, or creates it from `fresh()` when there is none. An
 * existing identity wins over the requested address only if they agree: a node that moves must
 * be removed and added again. */
export const loadOrCreateIdentity = (
  dataDir: string,
  address: string,
  fresh: () => Omit<NodeIdentity, "address">
): Effect.Effect<{ readonly identity: NodeIdentity; readonly created: boolean }, IdentityMismatch | IdentityCorrupted | DiskFailure, Disk> =>
  Effect.gen(function*() {
    const disk = yield* Disk
    const file = path.join(dataDir, identityFileName)
    yield* disk.mkdir(dataDir)
    const existing = yield* readIdentity(dataDir)
    if (existing !== null) {
      if (existing.address !== address) {
        return yield* new IdentityMismatch({ file, detail: `this data directory belongs to the node at ${existing.address}, not ${address}` })
      }
      return { identity: existing, created: false }
    }
    const identity = { ...fresh(), address }
    yield* writeFileAtomic(disk, file, packr.pack({ version: formatVersion, ...identity }))
    return { identity, created: true }
  })

/** The identity kept in `dataDir`, or null when it has none. */
export const readIdentity = (dataDir: string): Effect.Effect<NodeIdentity | null, IdentityCorrupted | DiskFailure, Disk> =>
  Effect.gen(function*() {
    const disk = yield* Disk
    const file = path.join(dataDir, identityFileName)
    if (!(yield* disk.exists(file))) return null
    const bytes = yield* disk.readFile(file)
    const decoded = yield* Effect.try({
      try: () => packr.unpack(bytes) as { version: number; nodeId: number; clusterId: string; address: string },
      catch: (cause) => new IdentityCorrupted({ file, detail: String(cause) })
    })
    if (decoded.version !== formatVersion || !Number.isSafeInteger(decoded.nodeId) || typeof decoded.clusterId !== "string" || typeof decoded.address !== "string") {
      return yield* new IdentityCorrupted({ file, detail: `unknown identity format (version ${String(decoded.version)})` })
    }
    return { nodeId: decoded.nodeId, clusterId: decoded.clusterId, address: decoded.address }
  })
