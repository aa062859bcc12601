// The fast simulator: a whole cluster of Raft cores in one process, driven the way the actors
// drive them (persist, then send what waits on persistence, then apply), with a simulated
// network and disk. No Effect, no real time: one seed gives one run, bit for bit.
import { Packr } from "msgpackr"
import { assert } from "../../../src/assert.ts"
import type { RaftBugs, RaftConfig } from "../../../src/raft/config.ts"
import { defaultRaftConfig } from "../../../src/raft/config.ts"
import { applyPending, bootstrap, emptyRecovered, initialState, snapshotMetaAt, step } from "../../../src/raft/core.ts"
import type { Recovered } from "../../../src/raft/storage.ts"
import { cacheProblem, entryAt, slotAt } from "../../../src/raft/log.ts"
import type { Message } from "../../../src/raft/messages.ts"
import type { EntryLoad, Input, RaftState, Ready } from "../../../src/raft/state.ts"
import type { Entry, HardState, LogIndex, Membership, NodeId, SnapshotMeta, Term } from "../../../src/raft/types.ts"
import { KvStore } from "../kv.ts"
import type { Prng } from "../Prng.ts"
import type { SafetyChecker } from "../checkers/safety.ts"

/** The entry at `index` as the node's log holds it: from memory, or — evicted — from its disk
 * (where every evicted entry is, being durable). For the checkers, which look at whole logs. */
function logEntry(node: SimNode, index: LogIndex): Entry | undefined {
  const fromMemory = entryAt(node.state.log, index)
  if (fromMemory !== undefined) return fromMemory
  const slot = slotAt(node.state.log, index)
  if (slot === undefined) return undefined
  const d = node.disk
  const onDisk = d.entries[index - d.base.index - 1]
  assert(onDisk !== undefined && onDisk.index === index && onDisk.term === slot.term, `evicted entry ${index} of node ${node.id} is not on its disk`)
  return onDisk
}

/** Simulated time: a Raft tick is this many time units. */
export const unitsPerTick = 10

export interface ClusterKnobs {
  readonly dropProbability: number
  readonly duplicateProbability: number
  readonly delayUnitsMax: number
  readonly persistUnitsMax: number
  readonly snapshotEvery: number
  /** Swarmed Raft settings (timeouts, batching and pipelining bounds, pre-vote, check-quorum). */
  readonly raft: Partial<RaftConfig>
  readonly bugs: RaftBugs
  /** Driver bug: the vote is never written to disk. */
  readonly forgetVote: boolean
  /** Storage bug: a read-back of evicted entries serves, for a command, the data of the command
   * before it when the two are the same size (what an offset index one record off would do,
   * without the record checks that SegmentLog makes). */
  readonly loadWrongEntry?: boolean
  /** Check the cache's bookkeeping after every step (O(log) per step). */
  readonly checkCache?: boolean
}

/** What survives a crash: only what a completed persist wrote. */
interface Disk {
  hardState: HardState
  base: { index: LogIndex; term: Term }
  entries: Entry[]
  snapshot: { meta: SnapshotMeta; data: Uint8Array } | null
}

interface PersistJob {
  readonly doneAt: number
  readonly hardState: HardState | null
  readonly snapshot: { meta: SnapshotMeta; data: Uint8Array } | null
  readonly truncateFrom: LogIndex | null
  readonly entries: ReadonlyArray<Entry>
  readonly compactUpTo: { index: LogIndex; term: Term } | null
  readonly after: Message[]
}

export interface NodeHooks {
  /** A committed command was applied on `node`. */
  onApplied(node: SimNode, entry: Entry, result: unknown): void
  /** The node applied up to `index` (reads waiting on it may complete). */
  onAppliedIndex(node: SimNode): void
  onReady(node: SimNode, ready: Ready): void
}

export class SimNode {
  up = true
  state: RaftState
  readonly disk: Disk
  jobs: PersistJob[] = []
  /** Read-backs of evicted entries, answered at `doneAt`. */
  loads: Array<{ readonly doneAt: number; readonly load: EntryLoad }> = []
  sm = new KvStore()
  lastSnapshotIndex: LogIndex = 0
  /** The newest snapshot this node holds in memory (taken or installed): what it sends. */
  latestSnapshot: { meta: SnapshotMeta; data: Uint8Array } | null = null
  checkedCommit: LogIndex = 0
  restarts = 0

  constructor(readonly id: NodeId, recovered: Recovered, private readonly knobs: ClusterKnobs) {
    this.disk = {
      hardState: recovered.hardState,
      base: { ...recovered.base },
      entries: [...recovered.entries],
      snapshot: null
    }
    this.state = this.boot()
  }

  boot(): RaftState {
    const d = this.disk
    const config = { ...defaultRaftConfig(this.id, this.id * 7919 + this.restarts * 104729), snapshotTrailingEntries: 8, ...this.knobs.raft, bugs: this.knobs.bugs }
    const state = initialState(config, { hardState: d.hardState, base: d.base, entries: d.entries, snapshot: d.snapshot?.meta ?? null })
    this.sm = new KvStore()
    if (d.snapshot !== null) this.sm.restore(d.snapshot.data)
    this.lastSnapshotIndex = d.snapshot?.meta.index ?? 0
    this.latestSnapshot = d.snapshot
    this.checkedCommit = state.log.committed
    return state
  }
}

interface InFlight {
  readonly at: number
  readonly seq: number
  readonly to: NodeId
  readonly from: NodeId
  readonly bytes: Uint8Array
  readonly snapshotData: Uint8Array | null
}

const packr = new Packr({ useRecords: false })

export class FastCluster {
  readonly nodes = new Map<NodeId, SimNode>()
  now = 0
  private seq = 0
  private inflight: InFlight[] = []
  /** Links that drop everything: "from->to". */
  readonly blocked = new Set<string>()
  faults = 0
  /** Entries read back from a node's disk because its core had evicted them. */
  readBacks = 0

  constructor(
    private readonly rng: Prng,
    readonly knobs: ClusterKnobs,
    private readonly checker: SafetyChecker,
    private readonly hooks: NodeHooks,
    private readonly trace: ((line: string) => void) | undefined
  ) {}

  bootstrapNodes(ids: ReadonlyArray<NodeId>): void {
    const config: Membership = { members: ids.map((id) => ({ id, address: `node${id}`, role: "voter" as const })) }
    for (const id of ids) this.nodes.set(id, new SimNode(id, bootstrap(config), this.knobs))
  }

  /** A brand-new node with an empty log, waiting to be added. */
  addEmptyNode(id: NodeId): SimNode {
    assert(!this.nodes.has(id), `node ${id} exists`)
    const node = new SimNode(id, emptyRecovered, this.knobs)
    this.nodes.set(id, node)
    return node
  }

  log(line: string): void {
    this.trace?.(`${this.now} ${line}`)
  }

  /** Steps a node's core and carries out its Ready. */
  input(node: SimNode, input: Input): Ready | null {
    if (!node.up) return null
    const before = node.state.log.committed
    const { ready } = step(node.state, input)
    if (this.knobs.checkCache === true) {
      const problem = cacheProblem(node.state.log)
      if (problem !== null) this.checker.fail("crash", `n${node.id} entry cache: ${problem}`)
    }
    this.observe(node, before, ready)
    this.carryOut(node, ready)
    return ready
  }

  private observe(node: SimNode, committedBefore: LogIndex, ready: Ready): void {
    const s = node.state
    for (const event of ready.events) {
      if (event._tag === "StateChanged") {
        this.log(`n${node.id} ${event.role} term=${event.term} leader=${event.leader ?? "-"}`)
        if (event.role === "leader") {
          this.checker.onLeader(event.term, node.id)
          this.checker.onLeaderLog(node.id, event.term, s.log.base.index, (i) => logEntry(node, i))
        }
      }
    }
    if (s.log.committed > node.checkedCommit) {
      this.checker.onCommitted(node.id, Math.max(node.checkedCommit, committedBefore) + 1, s.log.committed, (i) => logEntry(node, i))
      node.checkedCommit = s.log.committed
    }
  }

  private carryOut(node: SimNode, ready: Ready): void {
    for (const load of ready.loads) node.loads.push({ doneAt: this.now + this.rng.int(0, this.knobs.persistUnitsMax), load })
    for (const m of ready.messages) this.send(m, node)
    const needsPersist =
      ready.hardState !== null || ready.snapshot !== null || ready.truncateFrom !== null || ready.entries.length > 0 || ready.compactUpTo !== null
    if (needsPersist) {
      const previous = node.jobs[node.jobs.length - 1]
      const doneAt = Math.max(previous?.doneAt ?? 0, this.now + this.rng.int(0, this.knobs.persistUnitsMax))
      node.jobs.push({
        doneAt,
        hardState: ready.hardState,
        snapshot: ready.snapshot === null ? null : { meta: ready.snapshot, data: this.pendingSnapshotData(node, ready.snapshot) },
        truncateFrom: ready.truncateFrom,
        entries: ready.entries,
        compactUpTo: ready.compactUpTo,
        after: [...ready.messagesAfterPersist]
      })
    } else if (ready.messagesAfterPersist.length > 0) {
      // Answers may depend on state an earlier, unfinished persist carries: wait for it.
      const last = node.jobs[node.jobs.length - 1]
      if (last !== undefined) last.after.push(...ready.messagesAfterPersist)
      else for (const m of ready.messagesAfterPersist) this.send(m, node)
    }
    if (ready.snapshot !== null) {
      const data = this.pendingSnapshotData(node, ready.snapshot)
      node.sm.restore(data)
      node.lastSnapshotIndex = ready.snapshot.index
      node.latestSnapshot = { meta: ready.snapshot, data }
    }
    for (const entry of ready.committed) {
      this.checker.onApplied(node.id, entry)
      const result = entry.kind === "command" ? node.sm.apply(entry.data) : undefined
      this.hooks.onApplied(node, entry, result)
    }
    if (ready.committed.length > 0) {
      this.hooks.onAppliedIndex(node)
      this.maybeSnapshot(node)
    }
    if (ready.committed.length > 0 || ready.snapshot !== null) {
      const last = ready.committed[ready.committed.length - 1]
      this.input(node, { _tag: "Applied", index: last?.index ?? node.state.log.applied })
    }
    this.hooks.onReady(node, ready)
  }

  /** Snapshot data received with an InstallSnapshot, keyed by node and index. */
  private readonly receivedSnapshots = new Map<string, Uint8Array>()

  private pendingSnapshotData(node: SimNode, meta: SnapshotMeta): Uint8Array {
    const data = this.receivedSnapshots.get(`${node.id}/${meta.index}`)
    assert(data !== undefined, `snapshot data for ${meta.index} did not arrive with its message`)
    return data
  }

  private maybeSnapshot(node: SimNode): void {
    const s = node.state
    if (s.log.applied - node.lastSnapshotIndex < this.knobs.snapshotEvery) return
    const meta = snapshotMetaAt(s, s.log.applied)
    // The snapshot store is its own durable file: written whole before the core hears of it.
    node.disk.snapshot = { meta, data: node.sm.snapshot() }
    node.latestSnapshot = node.disk.snapshot
    node.lastSnapshotIndex = meta.index
    this.log(`n${node.id} snapshot at ${meta.index}`)
    this.input(node, { _tag: "SnapshotTaken", meta })
  }

  send(m: Message, node: SimNode): void {
    const copies = this.rng.chance(this.knobs.duplicateProbability) ? 2 : 1
    const snapshotData = m._tag === "InstallSnapshot" ? (node.latestSnapshot?.data ?? null) : null
    if (m._tag === "InstallSnapshot") {
      assert(node.latestSnapshot?.meta.index === m.meta.index, "leader sends its latest snapshot")
    }
    const bytes = packr.pack(m)
    // Pre-votes speak in a future term without changing anything: they promise nothing.
    const isPre = (m._tag === "RequestVote" || m._tag === "RequestVoteResponse") && m.pre
    if (!isPre) this.checker.onSent(node.id, m.term, m._tag === "RequestVoteResponse" && m.granted ? m.to : null)
    for (let i = 0; i < copies; i++) {
      if (this.rng.chance(this.knobs.dropProbability)) continue
      this.inflight.push({ at: this.now + this.rng.int(1, this.knobs.delayUnitsMax), seq: this.seq++, to: m.to, from: m.from, bytes, snapshotData })
    }
  }

  /** Advances one time unit: deliveries, finished persists, ticks. */
  advance(): void {
    this.now++
    const due = this.inflight.filter((f) => f.at <= this.now).sort((a, b) => a.at - b.at || a.seq - b.seq)
    if (due.length > 0) this.inflight = this.inflight.filter((f) => f.at > this.now)
    for (const f of due) {
      const node = this.nodes.get(f.to)
      if (node === undefined || !node.up || this.blocked.has(`${f.from}->${f.to}`)) continue
      const message = packr.unpack(f.bytes) as Message
      if (message._tag === "InstallSnapshot" && f.snapshotData !== null) {
        this.receivedSnapshots.set(`${node.id}/${message.meta.index}`, f.snapshotData)
      }
      this.input(node, { _tag: "Message", message })
    }
    for (const node of this.nodes.values()) this.finishPersists(node)
    for (const node of this.nodes.values()) this.finishLoads(node)
    for (const node of this.nodes.values()) {
      if (node.up && this.now % unitsPerTick === node.id % unitsPerTick) {
        this.input(node, { _tag: "Tick" })
        if (applyPending(node.state)) this.input(node, { _tag: "Drain" })
      }
    }
  }

  private finishPersists(node: SimNode): void {
    while (node.up && node.jobs.length > 0 && (node.jobs[0]?.doneAt ?? Infinity) <= this.now) {
      const job = node.jobs.shift() as PersistJob
      this.writeJob(node, job, 1)
      for (const m of job.after) this.send(m, node)
      const last = node.disk.entries[node.disk.entries.length - 1]
      const index = last?.index ?? node.disk.base.index
      const term = last?.term ?? node.disk.base.term
      this.input(node, { _tag: "Persisted", index, term })
    }
  }

  /** Answers the read-backs that are due from what the node's disk holds now. */
  private finishLoads(node: SimNode): void {
    const due = node.loads.filter((l) => l.doneAt <= this.now)
    if (due.length === 0) return
    node.loads = node.loads.filter((l) => l.doneAt > this.now)
    for (const { load } of due) {
      if (!node.up) return
      const d = node.disk
      const entries: Entry[] = []
      for (let i = load.lo; i <= load.hi; i++) {
        const entry = d.entries[i - d.base.index - 1]
        if (entry === undefined) break
        const before = d.entries[i - d.base.index - 2]
        // The mutation: the neighbour's data under this entry's index and term.
        const wrong = this.knobs.loadWrongEntry === true && entry.kind === "command" && before?.kind === "command" && before.data.length === entry.data.length
        entries.push(wrong && before?.kind === "command" ? { ...entry, data: before.data } : entry)
      }
      this.readBacks += entries.length
      this.input(node, { _tag: "EntriesLoaded", seq: load.seq, entries })
    }
  }

  /** Writes a job to the node's disk; `fraction` < 1 writes a torn prefix (a crash mid-write). */
  private writeJob(node: SimNode, job: PersistJob, fraction: number): void {
    const d = node.disk
    const whole = fraction >= 1
    if (job.hardState !== null && (whole || this.rng.chance(0.5))) {
      d.hardState = this.knobs.forgetVote ? { ...job.hardState, vote: null } : job.hardState
    }
    if (job.snapshot !== null) {
      if (!whole && this.rng.chance(0.5)) return
      d.snapshot = job.snapshot
      d.base = { index: job.snapshot.meta.index, term: job.snapshot.meta.term }
      d.entries = []
    }
    if (job.truncateFrom !== null) {
      if (!whole && this.rng.chance(0.5)) return
      const from = job.truncateFrom
      d.entries = d.entries.filter((e) => e.index < from)
    }
    const count = whole ? job.entries.length : this.rng.int(0, job.entries.length)
    for (const entry of job.entries.slice(0, count)) {
      const expected = d.base.index + d.entries.length + 1
      assert(entry.index === expected, `disk append at ${entry.index}, expected ${expected}`)
      d.entries.push(entry)
    }
    if (whole && job.compactUpTo !== null && job.compactUpTo.index > d.base.index) {
      const upTo = job.compactUpTo
      d.entries = d.entries.filter((e) => e.index > upTo.index)
      d.base = { ...upTo }
    }
  }

  crash(node: SimNode): void {
    if (!node.up) return
    this.faults++
    this.log(`n${node.id} CRASH (${node.jobs.length} persists unfinished)`)
    const torn = node.jobs[0]
    if (torn !== undefined && this.rng.chance(0.5)) this.writeJob(node, torn, 0.5)
    node.jobs = []
    node.loads = []
    node.up = false
  }

  restart(node: SimNode): void {
    if (node.up) return
    node.restarts++
    node.up = true
    node.state = node.boot()
    this.checker.onRestart(node.id, node.state.term, node.state.vote)
    this.log(`n${node.id} RESTART term=${node.state.term} last=${node.disk.base.index + node.disk.entries.length}`)
  }

  inflightCount(): number {
    return this.inflight.length
  }
}
