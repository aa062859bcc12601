// Rebuilding a stopped node whose log or snapshot is damaged (`tqlite repair`). The node keeps
// its identity (node id, cluster id, address) and loses its data, which it then fetches again
// from the cluster. The order is what makes that safe:
//
// 1. The data directory is locked (no node runs on it while we work) and read, never written:
//    the identity, and whatever the intact part of the log and the snapshot headers still say
//    about the cluster's members (to find the cluster when no --servers are given) and about
//    the damage.
// 2. The cluster's leader makes this node a spare, and we wait until that configuration is
//    committed. A node restarted with an empty log has forgotten its term, its vote and every
//    entry it acknowledged; as a voter it could vote twice in a term or help "commit" what it no
//    longer has. A spare neither votes nor counts for commits. The leader answers ADD and ASSIGN
//    only once the change is committed; a spare we find already (demoted by the leader's role
//    manager, or by an earlier attempt whose answer was lost) is confirmed by a round trip
//    through standby (which does not vote either): the leader accepts a membership change only
//    once the previous one is committed, so its answer proves it.
// 3. Only then the damaged state (log, snapshots, SQLite files and applied state) moves into
//    DIR/damaged-<UTC time>/, nothing deleted; the directories are fsynced. A marker file names
//    that directory while the renames run: a crash in between leaves a directory that refuses to
//    start until repair is run again, which finishes the same move.
//
// Started again, the node has its identity and an empty log: it does not found a cluster (the
// identity exists), does not campaign (it knows no membership, so it is no voter), and follows
// whoever leads; the leader's role manager makes it a standby, it catches up by log entries or a
// snapshot, and it is promoted back to voter once caught up.
import * as path from "node:path"
import type { Scope } from "effect"
import { Clock, Data, Duration, Effect } from "effect"
import type { ClientError } from "../net/client/errors.ts"
import { describeClientError } from "../net/client/errors.ts"
import type { DqliteClientService, ServerRole } from "../net/client/Client.ts"
import { make as makeClient } from "../net/client/Client.ts"
import { discoverCluster } from "../net/peers/discover.ts"
import type { PeerTlsOptions } from "../net/peers/sockets.ts"
import type { Membership } from "../raft/types.ts"
import type { DiskService } from "../storage/Disk.ts"
import { Disk, writeFileAtomic } from "../storage/Disk.ts"
import type { DiskFailure } from "../storage/errors.ts"
import type { RecordView } from "../storage/format.ts"
import { decodeMembership, decodeRecordAt, RecordKind, recordHeaderBytes, scanSegment } from "../storage/format.ts"
import { parseSegmentFileName } from "../storage/SegmentLog.ts"
import { openSnapshotFile } from "../storage/Snapshots.ts"
import type { DataDirInUse, DataDirLockFailed } from "./dataDirLock.ts"
import { lockDataDir } from "./dataDirLock.ts"
import type { NodeIdentity } from "./identity.ts"
import { readIdentity } from "./identity.ts"
import { NotADataDir } from "./recover.ts"

/** What a node's data directory holds besides its identity and lock, as Node.ts and SqlNode.ts
 * lay it out: the Raft log, the snapshot store, the SQLite files with their applied state. */
export const movedEntries: ReadonlyArray<string> = ["sqlite", "snapshots", "log"]

export const repairTimeoutMsDefault = 30_000
/** Most member addresses tried (as `--servers` allows). */
const serversMax = 64
const retryPauseMs = 200

// --- errors ------------------------------------------------------------------------------------

/** No address to find the cluster at: none given, and none left in the local data. */
export class NoServersKnown extends Data.TaggedError("NoServersKnown")<{ readonly detail: string }> {
  override get message() {
    return this.detail
  }
}

/** No member of this node's cluster answered. */
export class ClusterUnreachable extends Data.TaggedError("ClusterUnreachable")<{ readonly tried: ReadonlyArray<string>; readonly detail: string }> {
  override get message() {
    return `no member of the cluster answered (tried ${this.tried.join(", ")}): ${this.detail}`
  }
}

/** The servers answer, but for another cluster — or as this very node (a copy of the data
 * directory runs somewhere). */
export class ClusterMismatch extends Data.TaggedError("ClusterMismatch")<{ readonly detail: string }> {
  override get message() {
    return this.detail
  }
}

/** The leader refused to demote this node: the voters it hears from would no longer be a
 * majority (or it is the last voter). Nothing was changed. */
export class WouldLoseQuorum extends Data.TaggedError("WouldLoseQuorum")<{ readonly detail: string }> {
  override get message() {
    return `the leader refused to make this node a spare: ${this.detail}. Nothing was changed; bring the other voters back first`
  }
}

/** The cluster's configuration names this node with another address, or another node with its
 * address. */
export class MemberConflict extends Data.TaggedError("MemberConflict")<{ readonly detail: string }> {
  override get message() {
    return this.detail
  }
}

/** No committed "spare" within the bound. Nothing was moved. */
export class SpareNotConfirmed extends Data.TaggedError("SpareNotConfirmed")<{ readonly timeoutMs: number; readonly detail: string; readonly cause?: ClientError }> {
  override get message() {
    return `the cluster did not make this node a spare within ${this.timeoutMs} ms (${this.detail}); nothing was moved`
  }
}

/** A repair was interrupted while it moved the node's state aside: the directory is half moved
 * and must not be started on until the repair is run again (it finishes the move). */
export class RepairUnfinished extends Data.TaggedError("RepairUnfinished")<{ readonly dataDir: string; readonly damagedDir: string }> {
  override get message() {
    return `an interrupted tqlite repair left ${this.dataDir} half moved into ${this.damagedDir}`
  }
}

export type RepairError =
  | NotADataDir
  | NoServersKnown
  | ClusterUnreachable
  | ClusterMismatch
  | WouldLoseQuorum
  | MemberConflict
  | SpareNotConfirmed
  | DataDirInUse
  | DataDirLockFailed
  | DiskFailure

// --- reading the data directory ----------------------------------------------------------------

export interface Damage {
  readonly file: string
  readonly offset: number
  readonly reason: string
}

export interface Inspection {
  /** Checksum damage found (read-only scan; start-up may also refuse for reasons a scan does not
   * see, such as segments that disagree). */
  readonly damage: ReadonlyArray<Damage>
  /** Member addresses the intact records name, the newest configuration's first. */
  readonly addresses: ReadonlyArray<string>
}

/** Reads the log's segments and the snapshot files without changing anything: which records are
 * damaged, and which configurations the intact ones hold. */
export const inspectDataDir = (dataDir: string, self: NodeIdentity): Effect.Effect<Inspection, DiskFailure, Disk> =>
  Effect.gen(function*() {
    const disk = yield* Disk
    const damage: Array<Damage> = []
    const configs: Array<{ readonly index: number; readonly config: Membership }> = []
    // An interrupted repair may have moved part of the state already: read it where it went.
    const unfinished = yield* unfinishedTarget(disk, dataDir)
    const roots = unfinished === null ? [dataDir] : [dataDir, path.join(dataDir, unfinished)]
    for (const root of roots) yield* inspectRoot(disk, root, damage, configs)
    const addresses: Array<string> = []
    for (const { config } of [...configs].sort((a, b) => b.index - a.index)) {
      for (const member of config.members) {
        if (member.id === self.nodeId || member.address === self.address || addresses.includes(member.address)) continue
        if (addresses.length < serversMax) addresses.push(member.address)
      }
    }
    return { damage, addresses }
  })

/** The log segments and snapshot files under `root`: damage found, configurations read. */
const inspectRoot = (
  disk: DiskService,
  root: string,
  damage: Array<Damage>,
  configs: Array<{ readonly index: number; readonly config: Membership }>
): Effect.Effect<void, DiskFailure, Disk> =>
  Effect.gen(function*() {
    const logDir = path.join(root, "log")
    const segments = (yield* listIfExists(disk, logDir)).flatMap((name) => {
      const seq = parseSegmentFileName(name)
      return seq === null ? [] : [{ seq, file: path.join(logDir, name) }]
    }).sort((a, b) => a.seq - b.seq)
    for (const [i, segment] of segments.entries()) {
      const buffer = yield* disk.readFile(segment.file)
      const scan = scanSegment(buffer, i === segments.length - 1)
      if (scan.damage !== null && !scan.damage.tornTail) damage.push({ file: segment.file, offset: scan.damage.offset, reason: scan.damage.reason })
      const intact = scan.damage === null ? scan.records : [...scan.records, ...recordsBehind(buffer, scan.damage.offset)]
      for (const record of intact) {
        if (record.kind !== RecordKind.config && record.kind !== RecordKind.snapshot) continue
        const config = decodeMembership(record.payload)
        if (config !== null) configs.push({ index: record.index, config })
      }
    }
    const snapshotDir = path.join(root, "snapshots")
    for (const name of yield* listIfExists(disk, snapshotDir)) {
      const file = path.join(snapshotDir, name)
      const checked = yield* Effect.scoped(Effect.gen(function*() {
        const reader = yield* openSnapshotFile(file)
        if (reader === null) return null
        configs.push({ index: reader.meta.index, config: reader.meta.config })
        yield* reader.verify
        return null
      })).pipe(Effect.catchTags({
        SnapshotCorrupted: (error) => Effect.succeed<Damage | null>({ file: error.file, offset: error.offset, reason: error.reason }),
        SnapshotMissing: () => Effect.succeed(null)
      }))
      if (checked !== null) damage.push(checked)
    }
  })

/** The valid records behind damaged bytes: each checksum still vouches for its record. */
function recordsBehind(buffer: Uint8Array, badOffset: number): Array<RecordView> {
  const found: Array<RecordView> = []
  for (let position = badOffset + 1; position + recordHeaderBytes <= buffer.byteLength;) {
    const result = decodeRecordAt(buffer, position)
    if (result.ok) {
      found.push(result.record)
      position += result.record.bytes
    } else {
      position++
    }
  }
  return found
}

const listIfExists = (disk: DiskService, dir: string) =>
  Effect.flatMap(disk.exists(dir), (exists) => (exists ? disk.list(dir) : Effect.succeed<ReadonlyArray<string>>([])))

// --- making this node a spare ------------------------------------------------------------------

export type SpareOutcome =
  | { readonly _tag: "Demoted"; readonly from: ServerRole }
  | { readonly _tag: "AlreadySpare" }
  | { readonly _tag: "Added" }

/** Finds the members of `self`'s cluster among `servers`: those that answer with its cluster id.
 * Fails when none answers, when all that answer belong to another cluster, or when one answers
 * as this very node. */
export const checkCluster = (self: NodeIdentity, servers: ReadonlyArray<string>, tls: PeerTlsOptions | null, timeoutMs: number) =>
  Effect.gen(function*() {
    const answers = yield* Effect.forEach(servers, (address) => Effect.either(discoverCluster(address, tls, timeoutMs)), { concurrency: "unbounded" })
    const ours: Array<string> = []
    const foreign: Array<string> = []
    const silent: Array<string> = []
    for (const [i, answer] of answers.entries()) {
      const address = servers[i]!
      if (answer._tag === "Left") silent.push(`${address}: ${answer.left.detail}`)
      else if (answer.right.nodeId === self.nodeId) {
        return yield* new ClusterMismatch({ detail: `${address} answers as node ${self.nodeId} itself: is a copy of this data directory running there?` })
      } else if (answer.right.clusterId === self.clusterId) ours.push(address)
      else foreign.push(`${address} (cluster ${answer.right.clusterId})`)
    }
    if (ours.length > 0) return ours
    if (foreign.length > 0) {
      return yield* new ClusterMismatch({ detail: `this node belongs to cluster ${self.clusterId}, but ${foreign.join(", ")} belong to another` })
    }
    return yield* new ClusterUnreachable({ tried: servers, detail: silent.join("; ") })
  })

/** Asks the leader to make `self` a spare (or to add it as one) and returns once that
 * configuration is committed, within `timeoutMs`. A refusal that would cost the quorum ends it at
 * once; anything transient (no leader yet, another change in progress, an answer lost) is
 * retried until the bound. */
export const makeSpare = (client: DqliteClientService, self: NodeIdentity, timeoutMs: number, log: (line: string) => Effect.Effect<void>) =>
  Effect.gen(function*() {
    const id = BigInt(self.nodeId)
    const deadlineMs = (yield* Clock.currentTimeMillis) + timeoutMs
    let lastProblem = "no answer yet"
    let lastError: ClientError | undefined = undefined
    /** The role the leader first reported (null: not a member). */
    let initialRole: ServerRole | null | undefined = undefined
    for (;;) {
      if ((yield* Clock.currentTimeMillis) > deadlineMs) {
        return yield* new SpareNotConfirmed({ timeoutMs, detail: lastProblem, ...(lastError !== undefined ? { cause: lastError } : {}) })
      }
      const servers = yield* Effect.either(client.cluster)
      if (servers._tag === "Left") {
        lastError = servers.left
        lastProblem = describeClientError(servers.left)
        yield* Effect.sleep(Duration.millis(retryPauseMs))
        continue
      }
      const me = servers.right.find((s) => s.id === id)
      const squatter = servers.right.find((s) => s.address === self.address && s.id !== id)
      if (squatter !== undefined) {
        return yield* new MemberConflict({ detail: `the cluster has node ${squatter.id} at ${self.address}, this node's address; remove it first` })
      }
      if (me !== undefined && me.address !== self.address) {
        return yield* new MemberConflict({ detail: `the cluster knows node ${self.nodeId} at ${me.address}, but this data directory is for ${self.address}` })
      }
      if (initialRole === undefined) initialRole = me?.role ?? null
      // Each change below is answered once committed; a committed spare is what we wait for.
      const attempt: Effect.Effect<SpareOutcome | null, ClientError> = me === undefined
        ? Effect.zipRight(log(`repair: node ${self.nodeId} is not a member: adding it as a spare`), Effect.as(client.add(id, self.address), { _tag: "Added" } as const))
        : me.role === "spare"
        ? Effect.zipRight(
          log(`repair: node ${self.nodeId} is a spare already; confirming that configuration is committed (standby and back: neither votes)`),
          Effect.as(client.assign(id, "standby"), null)
        )
        : Effect.zipRight(
          log(`repair: asking the leader to make node ${self.nodeId} (a ${me.role}) a spare`),
          Effect.as(client.assign(id, "spare"), initialRole === null || initialRole === "spare" ? { _tag: "AlreadySpare" } as const : { _tag: "Demoted", from: initialRole } as const)
        )
      const done = yield* Effect.either(attempt)
      if (done._tag === "Right") {
        if (done.right !== null) return done.right
        continue
      }
      const refusal = quorumRefusal(done.left)
      if (refusal !== null) return yield* new WouldLoseQuorum({ detail: refusal })
      lastError = done.left
      lastProblem = describeClientError(done.left)
      yield* Effect.sleep(Duration.millis(retryPauseMs))
    }
  })

/** The leader's refusals that retrying cannot change. */
function quorumRefusal(error: ClientError): string | null {
  if (error._tag !== "ServerFailure") return null
  return /without a majority|last voter/.test(error.message) ? error.message : null
}


// --- moving the damaged state aside ----------------------------------------------------------

/** Written (atomically) before the first rename and removed after the last: names the damaged
 * directory, so a repair run again after a crash finishes the same move, and a start refuses a
 * half-moved directory. */
export const repairMarkerFileName = "tqlite-repair-unfinished"

/** The damaged directory an unfinished repair named, or null when there is no marker. Only a
 * plain `damaged-…` name is taken from the file. */
const unfinishedTarget = (disk: DiskService, dataDir: string): Effect.Effect<string | null, DiskFailure> =>
  Effect.gen(function*() {
    const marker = path.join(dataDir, repairMarkerFileName)
    if (!(yield* disk.exists(marker))) return null
    const named = new TextDecoder().decode(yield* disk.readFile(marker)).trim()
    return /^damaged-[0-9A-Za-z-]+$/.test(named) ? named : "damaged-unfinished"
  })

/** Fails with RepairUnfinished when a repair of `dataDir` did not finish (Node.make calls it). */
export const checkNoUnfinishedRepair = (dataDir: string): Effect.Effect<void, RepairUnfinished | DiskFailure, Disk> =>
  Effect.gen(function*() {
    const named = yield* unfinishedTarget(yield* Disk, dataDir)
    if (named !== null) return yield* new RepairUnfinished({ dataDir, damagedDir: path.join(dataDir, named) })
  })

/** "damaged-20261207T034512Z" for the given time. */
export function damagedDirName(nowMs: number): string {
  return `damaged-${new Date(nowMs).toISOString().replace(/[-:]/g, "").replace(/\.\d+Z$/, "Z")}`
}

/** Moves the node's state into a new `damaged-<time>` directory (renames: nothing is copied or
 * deleted), or into the one an interrupted repair named, and fsyncs both directories. Returns the
 * directory and what moved. */
export const moveAside = (dataDir: string) =>
  Effect.gen(function*() {
    const disk = yield* Disk
    const marker = path.join(dataDir, repairMarkerFileName)
    let name = yield* unfinishedTarget(disk, dataDir)
    if (name === null) {
      const base = damagedDirName(yield* Clock.currentTimeMillis)
      name = base
      for (let n = 1; yield* disk.exists(path.join(dataDir, name)); n++) name = `${base}-${n}`
      yield* writeFileAtomic(disk, marker, new TextEncoder().encode(`${name}\n`))
    }
    const target = path.join(dataDir, name)
    yield* disk.mkdir(target)
    const moved: Array<string> = []
    for (const entry of movedEntries) {
      const from = path.join(dataDir, entry)
      if (!(yield* disk.exists(from))) continue
      yield* disk.rename(from, path.join(target, entry))
      moved.push(entry)
    }
    yield* disk.fsyncDir(target)
    yield* disk.fsyncDir(dataDir)
    yield* disk.unlink(marker)
    yield* disk.fsyncDir(dataDir)
    return { dir: target, moved }
  })

// --- the whole repair --------------------------------------------------------------------------

export interface RepairOptions {
  readonly dataDir: string
  /** Members to ask; empty: the addresses the local data still names. */
  readonly servers: ReadonlyArray<string>
  readonly tls: PeerTlsOptions | null
  /** Bound on finding the cluster and on the spare configuration being committed. */
  readonly timeoutMs?: number
  /** Progress, one line at a time. */
  readonly log?: (line: string) => Effect.Effect<void>
}

export interface RepairResult {
  readonly identity: NodeIdentity
  readonly damage: ReadonlyArray<Damage>
  readonly servers: ReadonlyArray<string>
  /** Where the servers came from. */
  readonly serversFrom: "--servers" | "local data"
  readonly spare: SpareOutcome
  readonly damagedDir: string
  readonly moved: ReadonlyArray<string>
}

/** Rebuilds the stopped node in `options.dataDir` (locked while it works): see the top of this
 * file. On any failure before the move, nothing in the directory has changed. */
export const repairNode = (options: RepairOptions): Effect.Effect<RepairResult, RepairError, Disk | Scope.Scope> =>
  Effect.gen(function*() {
    const log = options.log ?? (() => Effect.void)
    const timeoutMs = options.timeoutMs ?? repairTimeoutMsDefault
    // Locking creates a missing directory: a mistyped path is refused before it.
    if (!(yield* (yield* Disk).exists(options.dataDir))) return yield* new NotADataDir({ dir: options.dataDir, detail: "it does not exist" })
    yield* lockDataDir(options.dataDir)
    const identity = yield* readIdentity(options.dataDir).pipe(
      Effect.catchTag("IdentityCorrupted", (error) => Effect.fail(new NotADataDir({ dir: options.dataDir, detail: `its node identity is unreadable (${error.file}: ${error.detail}); without it the node cannot be rebuilt as the same member` })))
    )
    if (identity === null) return yield* new NotADataDir({ dir: options.dataDir, detail: "it has no node identity (was a node ever started on it?)" })
    yield* log(`repair: node ${identity.nodeId} at ${identity.address}, cluster ${identity.clusterId}`)
    const inspection = yield* inspectDataDir(options.dataDir, identity)
    if (inspection.damage.length === 0) yield* log("repair: no checksum damage found in the log or the snapshots; rebuilding all the same")
    for (const d of inspection.damage) yield* log(`repair: damaged: ${d.file} at byte ${d.offset}: ${d.reason}`)
    const given = options.servers.filter((s) => s !== identity.address)
    const serversFrom = given.length > 0 ? "--servers" as const : "local data" as const
    const candidates = given.length > 0 ? given : inspection.addresses
    if (candidates.length === 0) {
      return yield* new NoServersKnown({
        detail: "no other member's address is known: the local data names none (was this node the only member? then there is no copy to fetch: restore from a dump) — give --servers ADDR,..."
      })
    }
    yield* log(`repair: looking for the cluster at ${candidates.join(", ")} (from ${serversFrom})`)
    const servers = yield* checkCluster(identity, candidates, options.tls, Math.min(timeoutMs, 5_000))
    const spare = yield* Effect.scoped(Effect.gen(function*() {
      const client = yield* makeClient({
        servers,
        database: "tqlite-control",
        tls: options.tls,
        connectTimeoutMs: Math.min(timeoutMs, 2_000),
        requestTimeoutMs: Math.min(timeoutMs, 10_000),
        retriesMax: 3
      })
      // makeSpare checks its deadline between requests; this caps a request still under way.
      return yield* makeSpare(client, identity, timeoutMs, log).pipe(
        Effect.timeoutFail({
          duration: Duration.millis(timeoutMs + 1_000),
          onTimeout: () => new SpareNotConfirmed({ timeoutMs, detail: "a request to the cluster was still under way" })
        })
      )
    }))
    const moved = yield* moveAside(options.dataDir)
    return { identity, damage: inspection.damage, servers, serversFrom, spare, damagedDir: moved.dir, moved: moved.moved }
  })
