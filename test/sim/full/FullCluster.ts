// The full simulator's cluster: every node is the real actor stack (Raft actor, log writer,
// applier, ticker) built by RaftActor.make, running under TestClock, with a simulated network
// and in-memory durable storage that survives a node's crash (Scope close = power cut: whatever
// the log writer had not persisted is gone). Network deliveries happen on tick boundaries, so a
// run advances the clock one tick at a time and stays deterministic.
import { Packr } from "msgpackr"
import { Effect, Exit, Scope } from "effect"
import type { Applied } from "../../../src/actors/Applier.ts"
import type { Envelope, PersistBatch } from "../../../src/actors/LogWriter.ts"
import type { RaftNode } from "../../../src/actors/RaftActor.ts"
import * as RaftActor from "../../../src/actors/RaftActor.ts"
import { defaultRaftConfig } from "../../../src/raft/config.ts"
import { bootstrap, emptyRecovered } from "../../../src/raft/core.ts"
import type { Message } from "../../../src/raft/messages.ts"
import type { Entry, Membership, NodeId, SnapshotMeta } from "../../../src/raft/types.ts"
import { makeMemoryLogStore } from "../../../src/storage/LogStore.ts"
import type { LogStoreService } from "../../../src/storage/LogStore.ts"
import type { SafetyChecker } from "../checkers/safety.ts"
import type { KvApplyResult } from "../kv.ts"
import { KvMachine } from "../kv.ts"
import type { Prng } from "../Prng.ts"

export const tickMs = 10

export interface FullKnobs {
  readonly dropProbability: number
  readonly delayTicksMax: number
  readonly snapshotEveryEntries: number
}

type KvResult = KvApplyResult | undefined
export type KvNode = RaftNode<KvResult, KvMachine>

interface Stored {
  readonly log: LogStoreService
  readonly snapshots: Map<number, { meta: SnapshotMeta; data: Uint8Array }>
  readonly bootstrapped: boolean
}

export interface FullNode {
  readonly id: NodeId
  raft: KvNode | null
  machine: KvMachine | null
  scope: Scope.CloseableScope | null
  restarts: number
}

const packr = new Packr({ useRecords: false })

export class FullCluster {
  readonly nodes = new Map<NodeId, FullNode>()
  private readonly stored = new Map<NodeId, Stored>()
  private inflight: Array<{ at: number; seq: number; from: NodeId; to: NodeId; bytes: Uint8Array; snapshot: Uint8Array | null }> = []
  private seq = 0
  tick = 0
  readonly blocked = new Set<string>()
  faults = 0

  constructor(
    private readonly rng: Prng,
    private readonly knobs: FullKnobs,
    private readonly checker: SafetyChecker,
    private readonly trace: (line: string) => void
  ) {}

  bootstrap(ids: ReadonlyArray<NodeId>): Effect.Effect<void> {
    const config: Membership = { members: ids.map((id) => ({ id, address: `node${id}`, role: "voter" as const })) }
    return Effect.gen(this, function*() {
      for (const id of ids) {
        const log = makeMemoryLogStore()
        const boot = bootstrap(config)
        yield* Effect.orDie(log.persist([{ hardState: boot.hardState, entries: boot.entries }]))
        this.stored.set(id, { log, snapshots: new Map(), bootstrapped: true })
        this.nodes.set(id, { id, raft: null, machine: null, scope: null, restarts: 0 })
        yield* this.start(id)
      }
    })
  }

  addEmpty(id: NodeId): Effect.Effect<void> {
    this.stored.set(id, { log: makeMemoryLogStore(), snapshots: new Map(), bootstrapped: false })
    this.nodes.set(id, { id, raft: null, machine: null, scope: null, restarts: 0 })
    return this.start(id)
  }

  /** Boots a node from what its storage holds, exactly as a restart after power loss would. */
  start(id: NodeId): Effect.Effect<void> {
    return Effect.gen(this, function*() {
      const node = this.nodes.get(id)
      const stored = this.stored.get(id)
      if (node === undefined || stored === undefined || node.raft !== null) return
      const loaded = yield* Effect.orDie(stored.log.load)
      const newest = [...stored.snapshots.values()].sort((a, b) => b.meta.index - a.meta.index)[0] ?? null
      const snapshot = newest !== null && (loaded.snapshot === null || newest.meta.index >= loaded.snapshot.index) ? newest : null
      const recovered = stored.bootstrapped || loaded.entries.length > 0 || loaded.snapshot !== null
        ? { ...loaded, snapshot: snapshot?.meta ?? loaded.snapshot }
        : emptyRecovered
      this.checker.onRestart(id, recovered.hardState.term, recovered.hardState.vote)
      const checker = this.checker
      const sm = new KvMachine((entry) => checker.onApplied(id, entry))
      if (recovered.snapshot !== null) {
        const data = stored.snapshots.get(recovered.snapshot.index)?.data
        if (data !== undefined) {
          sm.store.restore(data)
          sm.appliedIndex = recovered.snapshot.index
        }
      }
      const scope = yield* Scope.make()
      const raft = yield* RaftActor.make<KvResult, KvMachine>({
        config: { ...defaultRaftConfig(id, id * 7919 + node.restarts * 104729), snapshotTrailingEntries: 8 },
        recovered,
        stateMachine: sm,
        io: {
          persist: (batches: ReadonlyArray<PersistBatch>) => stored.log.persist(batches),
          saveSnapshot: (meta, data) => Effect.sync(() => void stored.snapshots.set(meta.index, { meta, data })),
          loadSnapshot: (meta) => Effect.sync(() => stored.snapshots.get(meta.index)?.data ?? new Uint8Array()),
          send: (envelope) => Effect.sync(() => this.send(id, envelope))
        },
        tickMs,
        snapshotEveryEntries: this.knobs.snapshotEveryEntries,
        mailboxCapacity: 1024,
        batchMax: 256,
        requestTimeoutMs: 50 * tickMs
      }).pipe(Scope.extend(scope))
      node.raft = raft
      node.machine = sm
      node.scope = scope
      this.trace(`${this.tick} n${id} START term=${recovered.hardState.term}`)
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
      node.restarts++
      yield* Scope.close(scope, Exit.void)
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
        if (node?.raft == null || this.blocked.has(`${f.from}->${f.to}`)) continue
        yield* node.raft.deliver({ message: packr.unpack(f.bytes) as Message, snapshot: f.snapshot })
      }
    })
  }

  up(): ReadonlyArray<FullNode & { raft: KvNode; machine: KvMachine }> {
    return [...this.nodes.values()].filter((n): n is FullNode & { raft: KvNode; machine: KvMachine } => n.raft !== null && n.machine !== null)
  }
}

export type { Applied }
