// The full simulator's cluster: every node is the real actor stack (Raft actor, log writer,
// applier, ticker) built by RaftActor.make, running under TestClock, with a simulated network
// and in-memory durable storage that survives a node's crash (Scope close = power cut: whatever
// the log writer had not persisted is gone). Network deliveries happen on tick boundaries, so a
// run advances the clock one tick at a time and stays deterministic. Each node's clock runs at
// its own rate (DriftClock, drawn once per node from the seed): its ticker, timeouts and the
// lease's clock drift apart from the others', within what the lease's drift margin allows.
import { Packr } from "msgpackr"
import type { Clock } from "effect"
import { Context, Effect, Exit, Layer, Scope } from "effect"
import type { RaftBugs } from "../../../src/raft/config.ts"
import type { Applied } from "../../../src/actors/Applier.ts"
import type { Envelope } from "../../../src/raft/messages.ts"
import type { RaftNode } from "../../../src/actors/RaftActor.ts"
import * as RaftActor from "../../../src/actors/RaftActor.ts"
import { defaultRaftConfig } from "../../../src/raft/config.ts"
import { bootstrap } from "../../../src/raft/core.ts"
import type { Message } from "../../../src/raft/messages.ts"
import type { Membership, NodeId, SnapshotMeta } from "../../../src/raft/types.ts"
import { Disk } from "../../../src/storage/Disk.ts"
import type { Recovered, RecoveredBounded } from "../../../src/raft/storage.ts"
import { persistInGroups } from "../../../src/storage/LogStore.ts"
import { SegmentLog } from "../../../src/storage/SegmentLog.ts"
import type { SnapshotsService } from "../../../src/storage/Snapshots.ts"
import { Snapshots, writeSnapshotFrom } from "../../../src/storage/Snapshots.ts"
import { readAllBytes } from "../../../src/actors/snapshotData.ts"
import type { SnapshotData } from "../../../src/raft/messages.ts"
import { transferSnapshot } from "../snapshotTransfer.ts"
import type { CrashMode, SimDisk } from "../SimDisk.ts"
import { makeSimDisk } from "../SimDisk.ts"
import type { SafetyChecker } from "../checkers/safety.ts"
import type { KvApplyResult } from "../kv.ts"
import { KvMachine } from "../kv.ts"
import type { Prng } from "../Prng.ts"
import { DriftClock } from "./SimRuntime.ts"

export const tickMs = 10

export interface FullKnobs {
  readonly dropProbability: number
  readonly delayTicksMax: number
  readonly snapshotEveryEntries: number
  /** Each node's clock rate is drawn from [1 − clockDriftMax, 1 + clockDriftMax]. */
  readonly clockDriftMax: number
  /** Deliberate bugs of the Raft core (mutation tests). */
  readonly bugs?: RaftBugs
  /** Followers serve reads through the leader's read index (default), or refuse them. */
  readonly followerReads?: boolean
  /** The Raft core's entry cache (default: defaultRaftConfig's); tiny ones make every node read
   * entries back from its segment log all the time. */
  readonly entryCacheBytesMax?: number
  readonly entryLoadBytesMax?: number
  readonly applyInflightBytesMax?: number
}

type KvResult = KvApplyResult | undefined
export type KvNode = RaftNode<KvResult, KvMachine>

/** A node's disk: the segment log and the snapshot store live on it and survive its crashes
 * exactly as far as they fsynced. */
interface Stored {
  readonly disk: SimDisk
  /** The founding members' first entry, written at first start. */
  readonly bootstrap: Recovered | null
}

const logDir = "/data/log"
const snapshotDir = "/data/snapshots"
export const clusterId = "sim-cluster"

export interface FullNode {
  readonly id: NodeId
  raft: KvNode | null
  machine: KvMachine | null
  scope: Scope.CloseableScope | null
  /** Its snapshot store while it runs: where snapshots sent to it are received. */
  snapshots: SnapshotsService | null
  restarts: number
}

const packr = new Packr({ useRecords: false })

export class FullCluster {
  readonly nodes = new Map<NodeId, FullNode>()
  private readonly stored = new Map<NodeId, Stored>()
  /** Each node's clock rate, fixed for its life (restarts included). */
  readonly clockRates = new Map<NodeId, number>()
  private inflight: Array<{ at: number; seq: number; from: NodeId; to: NodeId; bytes: Uint8Array; snapshot: SnapshotData | null }> = []
  private seq = 0
  tick = 0
  readonly blocked = new Set<string>()
  faults = 0
  /** Entries read back from a segment log because the core had evicted them. */
  readBacks = 0

  constructor(
    private readonly rng: Prng,
    private readonly knobs: FullKnobs,
    private readonly checker: SafetyChecker,
    private readonly trace: (line: string) => void,
    /** Draws the clock rates; separate from `rng` so drift does not reshuffle the rest. */
    private readonly clockRng: Prng | null = null,
    /** Wraps a node's clock (tests: a clock whose timers stall). */
    private readonly wrapClock: (id: NodeId, clock: Clock.Clock) => Clock.Clock = (_, clock) => clock
  ) {}

  private drawClockRate(id: NodeId): void {
    const drift = this.knobs.clockDriftMax
    const rate = this.clockRng === null || drift === 0 ? 1 : 1 - drift + 2 * drift * this.clockRng.float()
    this.clockRates.set(id, rate)
  }

  bootstrap(ids: ReadonlyArray<NodeId>): Effect.Effect<void> {
    const config: Membership = { members: ids.map((id) => ({ id, address: `node${id}`, role: "voter" as const })) }
    return Effect.gen(this, function*() {
      for (const id of ids) {
        this.stored.set(id, { disk: makeSimDisk({ seed: this.rng.u32() }), bootstrap: bootstrap(config) })
        this.drawClockRate(id)
        this.nodes.set(id, { id, raft: null, machine: null, scope: null, snapshots: null, restarts: 0 })
        yield* this.start(id)
      }
    })
  }

  addEmpty(id: NodeId): Effect.Effect<void> {
    this.stored.set(id, { disk: makeSimDisk({ seed: this.rng.u32() }), bootstrap: null })
    this.drawClockRate(id)
    this.nodes.set(id, { id, raft: null, machine: null, scope: null, snapshots: null, restarts: 0 })
    return this.start(id)
  }

  /** Boots a node from what its storage holds, exactly as a restart after power loss would. */
  start(id: NodeId): Effect.Effect<void> {
    return Effect.gen(this, function*() {
      const node = this.nodes.get(id)
      const stored = this.stored.get(id)
      if (node === undefined || stored === undefined || node.raft !== null) return
      stored.disk.driver.restart()
      const scope = yield* Scope.make()
      // Opening the real segment log and snapshot store on this node's simulated disk: recovery
      // (torn tail cut, checksums checked) runs exactly as after a real power loss.
      const { log, snapshots } = yield* Effect.gen(function*() {
        const log = yield* SegmentLog.open({ dir: logDir, clusterId, segmentBytesMax: 16 * 1024 })
        const context = yield* Layer.build(Snapshots.layer({ dir: snapshotDir, chunkBytesMax: 4096 }))
        return { log, snapshots: Context.get(context, Snapshots) }
      }).pipe(Effect.provideService(Disk, stored.disk.service), Scope.extend(scope), Effect.orDie)
      const config = {
        ...defaultRaftConfig(id, id * 7919 + node.restarts * 104729),
        snapshotTrailingEntries: 8,
        followerReads: this.knobs.followerReads ?? true,
        ...(this.knobs.entryCacheBytesMax !== undefined ? { entryCacheBytesMax: this.knobs.entryCacheBytesMax } : {}),
        ...(this.knobs.entryLoadBytesMax !== undefined ? { entryLoadBytesMax: this.knobs.entryLoadBytesMax } : {}),
        ...(this.knobs.applyInflightBytesMax !== undefined ? { applyInflightBytesMax: this.knobs.applyInflightBytesMax } : {}),
        ...(this.knobs.bugs !== undefined ? { bugs: this.knobs.bugs } : {})
      }
      // As the node wiring does: only the cache's worth of entry data is read at start.
      let loaded = yield* Effect.orDie(log.loadBounded(config.entryCacheBytesMax))
      if (loaded.entries.length === 0 && loaded.hardState.term === 0 && stored.bootstrap !== null) {
        yield* Effect.orDie(log.persist([{ hardState: stored.bootstrap.hardState, entries: stored.bootstrap.entries }]))
        loaded = yield* Effect.orDie(log.loadBounded(config.entryCacheBytesMax))
      }
      const own = yield* Effect.orDie(snapshots.latest)
      const snapshot = own !== null && (loaded.snapshot === null || own.index >= loaded.snapshot.index) ? own : loaded.snapshot
      const recovered: RecoveredBounded = { ...loaded, snapshot }
      this.checker.onRestart(id, recovered.hardState.term, recovered.hardState.vote)
      const checker = this.checker
      const sm = new KvMachine((entry) => checker.onApplied(id, entry))
      if (snapshot !== null) {
        sm.store.restore(yield* Effect.orDie(Effect.flatMap(snapshots.source(snapshot), (source) => readAllBytes(source))))
        sm.appliedIndex = snapshot.index
      }
      const clock = this.wrapClock(id, new DriftClock(yield* Effect.clock, this.clockRates.get(id) ?? 1))
      const raft = yield* RaftActor.make<KvResult, KvMachine>({
        config,
        recovered,
        stateMachine: sm,
        io: {
          persist: persistInGroups(log),
          readEntries: (lo, hi) => Effect.tap(log.read(lo, hi), (entries) => Effect.sync(() => void (this.readBacks += entries.length))),
          saveSnapshot: (meta, produce) => writeSnapshotFrom(snapshots, meta, produce),
          adoptSnapshot: snapshots.adopt,
          snapshotSource: snapshots.source,
          send: (envelope) => Effect.sync(() => this.send(id, envelope))
        },
        tickMs,
        snapshotEveryEntries: this.knobs.snapshotEveryEntries,
        mailboxCapacity: 1024,
        batchMax: 256,
        requestTimeoutMs: 50 * tickMs
      }).pipe(Effect.withClock(clock), Scope.extend(scope))
      node.raft = raft
      node.machine = sm
      node.scope = scope
      node.snapshots = snapshots
      this.trace(`${this.tick} n${id} START term=${recovered.hardState.term} log=${recovered.base.index}+${recovered.entries.length} snapshot=${snapshot?.index ?? 0}`)
    })
  }

  crash(id: NodeId): Effect.Effect<void> {
    return Effect.gen(this, function*() {
      const node = this.nodes.get(id)
      if (node === undefined || node.scope === null) return
      this.faults++
      this.trace(`${this.tick} n${id} CRASH`)
      const scope = node.scope
      node.raft = null
      node.machine = null
      node.scope = null
      node.snapshots = null
      node.restarts++
      // The node stops wherever it is (its fibers interrupted between two disk calls, finalizers
      // only close handles), then power goes: whatever was not fsynced is lost or torn.
      yield* Scope.close(scope, Exit.void)
      this.stored.get(id)?.disk.driver.crash(this.rng.pick<CrashMode>(["lose", "prefix", "sectors"]))
    })
  }

  private send(from: NodeId, envelope: Envelope): void {
    const m = envelope.message
    const isPre = (m._tag === "RequestVote" || m._tag === "RequestVoteResponse") && m.pre
    if (!isPre) this.checker.onSent(from, m.term, m._tag === "RequestVoteResponse" && m.granted ? m.to : null)
    if (this.rng.chance(this.knobs.dropProbability)) return
    const bytes = packr.pack(m)
    this.inflight.push({ at: this.tick + this.rng.int(1, this.knobs.delayTicksMax), seq: this.seq++, from, to: m.to, bytes, snapshot: envelope.snapshot })
  }

  /** Delivers what is due this tick, in send order. */
  deliverDue(): Effect.Effect<void> {
    return Effect.gen(this, function*() {
      const due = this.inflight.filter((f) => f.at <= this.tick)
      if (due.length === 0) return
      this.inflight = this.inflight.filter((f) => f.at > this.tick)
      for (const f of due) {
        const node = this.nodes.get(f.to)
        if (node?.raft == null || node.snapshots === null || this.blocked.has(`${f.from}->${f.to}`)) continue
        const snapshot = f.snapshot === null ? null : yield* transferSnapshot(f.snapshot, node.snapshots.inbox, 4096)
        if (f.snapshot !== null && snapshot === null) continue
        yield* node.raft.deliver({ message: packr.unpack(f.bytes) as Message, snapshot })
      }
    })
  }

  up(): ReadonlyArray<FullNode & { raft: KvNode; machine: KvMachine }> {
    return [...this.nodes.values()].filter((n): n is FullNode & { raft: KvNode; machine: KvMachine } => n.raft !== null && n.machine !== null)
  }
}

export type { Applied }
