// The full simulator's cluster: every node is the real actor stack (Raft actor, log writer,
// applier, ticker) built by the node wiring (Node.wire), its I/O record a simulated network, a
// simulated disk under its log and snapshots that survives its crash (Scope close = power cut:
// whatever was not fsynced is lost or torn) and its own drifting clock. Network deliveries happen on tick boundaries, so a
// run advances the clock one tick at a time and stays deterministic. Each node's clock runs at
// its own rate (DriftClock, drawn once per node from the seed): its ticker, timeouts and the
// lease's clock drift apart from the others', within what the lease's drift margin allows.
import { Packr } from "msgpackr"
import type { Clock } from "effect"
import { Effect, Exit, Logger, LogLevel, Scope } from "effect"
import type { RaftBugs } from "../../../src/raft/config.ts"
import type { Applied } from "../../../src/actors/Applier.ts"
import type { Envelope } from "../../../src/raft/messages.ts"
import type { RaftNode } from "../../../src/actors/RaftActor.ts"
import type { Message } from "../../../src/raft/messages.ts"
import type { Membership, NodeId } from "../../../src/raft/types.ts"
import type { SnapshotInbox } from "../../../src/actors/snapshotData.ts"
import { readAllBytes } from "../../../src/actors/snapshotData.ts"
import type { NodeIo, NodeTransport } from "../../../src/node/Node.ts"
import * as Node from "../../../src/node/Node.ts"
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
/** The nodes' own log lines (a leadership won, every few ticks) would drown a run of many seeds:
 * the trace says who leads; warnings still show. */
export const nodeLogLevel = LogLevel.Warning

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
  /** RaftConfig.carryCommit (default: defaultRaftConfig's). */
  readonly carryCommit?: boolean
}

type KvResult = KvApplyResult | undefined
type SimTransport = NodeTransport
export type KvNode = RaftNode<KvResult, KvMachine>

/** A node's disk: the segment log and the snapshot store live on it and survive its crashes
 * exactly as far as they fsynced. */
interface Stored {
  readonly disk: SimDisk
  /** The founding members, written as the log's first entry at first start. */
  readonly founding: Membership | null
}

const logDir = "/data/log"
const snapshotDir = "/data/snapshots"
export const clusterId = "sim-cluster"

export interface FullNode {
  readonly id: NodeId
  raft: KvNode | null
  machine: KvMachine | null
  scope: Scope.CloseableScope | null
  /** While it runs: where snapshots sent to it are received (its snapshot store's inbox), and
   * the handler its wiring registered for inbound messages. */
  inbox: SnapshotInbox | null
  deliver: ((envelope: Envelope) => Effect.Effect<void>) | null
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
        this.stored.set(id, { disk: makeSimDisk({ seed: this.rng.u32() }), founding: config })
        this.drawClockRate(id)
        this.nodes.set(id, { id, raft: null, machine: null, scope: null, inbox: null, deliver: null, restarts: 0 })
        yield* this.start(id)
      }
    })
  }

  addEmpty(id: NodeId): Effect.Effect<void> {
    this.stored.set(id, { disk: makeSimDisk({ seed: this.rng.u32() }), founding: null })
    this.drawClockRate(id)
    this.nodes.set(id, { id, raft: null, machine: null, scope: null, inbox: null, deliver: null, restarts: 0 })
    return this.start(id)
  }

  /** Boots a node from what its storage holds, exactly as a restart after power loss would:
   * the node wiring (Node.wire) with this node's simulated disk, network and drifting clock. */
  start(id: NodeId): Effect.Effect<void> {
    return Effect.gen(this, function*() {
      const node = this.nodes.get(id)
      const stored = this.stored.get(id)
      if (node === undefined || stored === undefined || node.raft !== null) return
      stored.disk.driver.restart()
      const scope = yield* Scope.make()
      const checker = this.checker
      const io: NodeIo<SimTransport> = {
        disk: stored.disk.service,
        transport: (inbox) => Effect.succeed(this.transportOf(id, node, inbox)),
        clock: this.wrapClock(id, new DriftClock(yield* Effect.clock, this.clockRates.get(id) ?? 1)),
        tickMs,
        randomSeed: id * 7919 + node.restarts * 104729
      }
      // Opening the real segment log and snapshot store on this node's simulated disk: recovery
      // (torn tail cut, checksums checked) runs exactly as after a real power loss.
      const wired = yield* Node.wire({
        identity: { nodeId: id, clusterId, address: `node${id}` },
        founding: stored.founding,
        stateMachine: (snapshot) =>
          Effect.gen(function*() {
            const sm = new KvMachine((entry) => checker.onApplied(id, entry))
            if (snapshot !== null) {
              sm.store.restore(yield* readAllBytes(yield* snapshot.load))
              sm.appliedIndex = snapshot.meta.index
            }
            return sm
          }),
        storage: { logDir, snapshotsDir: snapshotDir, segmentBytesMax: 16 * 1024, snapshotChunkBytesMax: 4096 },
        raft: {
          snapshotTrailingEntries: 8,
          followerReads: this.knobs.followerReads ?? true,
          ...(this.knobs.entryCacheBytesMax !== undefined ? { entryCacheBytesMax: this.knobs.entryCacheBytesMax } : {}),
          ...(this.knobs.entryLoadBytesMax !== undefined ? { entryLoadBytesMax: this.knobs.entryLoadBytesMax } : {}),
          ...(this.knobs.applyInflightBytesMax !== undefined ? { applyInflightBytesMax: this.knobs.applyInflightBytesMax } : {}),
          ...(this.knobs.carryCommit !== undefined ? { carryCommit: this.knobs.carryCommit } : {}),
          ...(this.knobs.bugs !== undefined ? { bugs: this.knobs.bugs } : {})
        },
        bounds: { snapshotEveryEntries: this.knobs.snapshotEveryEntries, mailboxCapacity: 1024, batchMax: 256, requestTimeoutMs: 50 * tickMs },
        onRecovered: (recovered) => Effect.sync(() => checker.onRestart(id, recovered.hardState.term, recovered.hardState.vote)),
        onReadBack: (entries) => void (this.readBacks += entries)
      }, io).pipe(Effect.orDie, Logger.withMinimumLogLevel(nodeLogLevel), Scope.extend(scope))
      node.raft = wired.raft
      node.machine = wired.stateMachine
      node.scope = scope
      const recovered = wired.recovered
      this.trace(`${this.tick} n${id} START term=${recovered.hardState.term} log=${recovered.base.index}+${recovered.entries.length} snapshot=${recovered.snapshot?.index ?? 0}`)
    })
  }

  /** The node's end of the simulated network: sends go into the cluster's in-flight list,
   * deliveries (deliverDue) go to the handler the wiring registers. */
  private transportOf(id: NodeId, node: FullNode, inbox: SnapshotInbox): SimTransport {
    node.inbox = inbox
    return {
      address: `node${id}`,
      send: (envelope) => Effect.sync(() => this.send(id, envelope)),
      sendNow: (envelope) => {
        this.send(id, envelope)
        return true
      },
      serve: (onEnvelope) => Effect.sync(() => void (node.deliver = onEnvelope)),
      setPeers: () => Effect.void
    }
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
      node.inbox = null
      node.deliver = null
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
        if (node?.raft == null || node.inbox === null || node.deliver === null || this.blocked.has(`${f.from}->${f.to}`)) continue
        const snapshot = f.snapshot === null ? null : yield* transferSnapshot(f.snapshot, node.inbox, 4096)
        if (f.snapshot !== null && snapshot === null) continue
        yield* node.deliver({ message: packr.unpack(f.bytes) as Message, snapshot })
      }
    })
  }

  up(): ReadonlyArray<FullNode & { raft: KvNode; machine: KvMachine }> {
    return [...this.nodes.values()].filter((n): n is FullNode & { raft: KvNode; machine: KvMachine } => n.raft !== null && n.machine !== null)
  }
}

export type { Applied }
