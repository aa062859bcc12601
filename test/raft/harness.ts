// A small synchronous harness for unit tests of the Raft core: N cores, a message queue the test
// delivers by hand (or "until quiet"), drop filters and partitions, an in-memory disk per node
// that carries out each Ready in the order the core asks (persist, then send what waited on it,
// then feed `Persisted` back), and a record of everything applied and emitted. No clock, no
// randomness: every run of a test is the same run.
import { assert } from "../../src/assert.ts"
import type { RaftConfig } from "../../src/raft/config.ts"
import { defaultRaftConfig } from "../../src/raft/config.ts"
import { bootstrap, commitOwed, emptyRecovered, initialState, snapshotMetaAt, step } from "../../src/raft/core.ts"
import type { Recovered } from "../../src/raft/storage.ts"
import { lastIndex } from "../../src/raft/log.ts"
import type { Message } from "../../src/raft/messages.ts"
import type { EntryLoad, Input, RaftEvent, RaftState, Ready } from "../../src/raft/state.ts"
import type { Entry, HardState, LogIndex, Membership, NodeId, Role, SnapshotMeta, Term } from "../../src/raft/types.ts"

/** What survives a crash: only what a completed persist wrote. */
export interface Disk {
  hardState: HardState
  base: { index: LogIndex; term: Term }
  entries: Entry[]
  snapshot: SnapshotMeta | null
}

/** One Ready's durable part, plus the messages that may leave only once it is on disk. */
interface PersistJob {
  readonly hardState: HardState | null
  readonly snapshot: SnapshotMeta | null
  readonly truncateFrom: LogIndex | null
  readonly entries: ReadonlyArray<Entry>
  readonly compactUpTo: { index: LogIndex; term: Term } | null
  readonly after: Message[]
}

export class TestNode {
  state: RaftState
  readonly disk: Disk
  /** Persist jobs not yet written, oldest first. */
  jobs: PersistJob[] = []
  /** While true, persist jobs wait for `cluster.persist(id)` (asynchronous persistence). */
  holdPersist = false
  /** Read-backs of evicted entries asked for and not yet answered, oldest first. */
  loads: EntryLoad[] = []
  /** While true, read-backs wait for `cluster.serveLoads(id)`. */
  holdLoads = false
  /** How many read-backs this node's core asked for. */
  loadsAsked = 0
  /** While true, the node reports what it applied (Applied input) right after each Ready. */
  reportApplied = false
  /** Every entry handed out in `Ready.committed`, in order. */
  readonly applied: Entry[] = []
  /** The state machine's position: the last entry applied or snapshot restored. */
  appliedIndex: LogIndex
  readonly events: RaftEvent[] = []
  readonly readies: Ready[] = []

  constructor(readonly id: NodeId, config: RaftConfig, recovered: Recovered) {
    this.disk = {
      hardState: recovered.hardState,
      base: { ...recovered.base },
      entries: [...recovered.entries],
      snapshot: recovered.snapshot
    }
    this.state = initialState(config, recovered)
    this.appliedIndex = this.state.log.applied
  }

  get role() {
    return this.state.role
  }
  get term(): Term {
    return this.state.term
  }
  get committed(): LogIndex {
    return this.state.log.committed
  }
  get lastIndex(): LogIndex {
    return lastIndex(this.state.log)
  }
  /** Terms of the in-memory log above its base, e.g. [1, 2, 2] for entries 1..3. */
  get logTerms(): Term[] {
    return this.state.log.entries.map((e) => e.term)
  }
  eventsOf<T extends RaftEvent["_tag"]>(tag: T): Array<Extract<RaftEvent, { _tag: T }>> {
    return this.events.filter((e): e is Extract<RaftEvent, { _tag: T }> => e._tag === tag)
  }
}

export interface ClusterOptions {
  /** Node ids; all are founding voters unless `members` says otherwise. Default [1, 2, 3]. */
  readonly ids?: ReadonlyArray<NodeId>
  /** The bootstrap configuration (default: every id a voter). */
  readonly members?: ReadonlyArray<{ readonly id: NodeId; readonly role: Role }>
  /** Overrides of defaultRaftConfig for every node. */
  readonly config?: Partial<RaftConfig>
  /** Overrides for one node (applied after `config`). */
  readonly configFor?: (id: NodeId) => Partial<RaftConfig>
  /** Record every step as JSON in `trace` (for determinism tests; slows big runs). */
  readonly trace?: boolean
  /** A node's disk at start, instead of the bootstrap entry. */
  readonly recovered?: (id: NodeId) => Recovered | undefined
}

/** Drops a message when it returns true. */
export type MessageFilter = (m: Message) => boolean

export class Cluster {
  readonly nodes = new Map<NodeId, TestNode>()
  /** Messages sent and not yet delivered, in send order. */
  queue: Message[] = []
  /** Messages a filter dropped at send or delivery time. */
  readonly dropped: Message[] = []
  filters: MessageFilter[] = []
  /** Called with every step, before its Ready is carried out (script tests print it). */
  observer: ((id: NodeId, input: Input, ready: Ready) => void) | null = null
  /** Every step as JSON (node, input, ready): two runs of one scenario must be equal. */
  readonly trace: string[] = []
  readonly membership: Membership
  private readonly tracing: boolean

  constructor(options: ClusterOptions = {}) {
    this.tracing = options.trace === true
    const ids = options.ids ?? [1, 2, 3]
    const members = options.members ?? ids.map((id) => ({ id, role: "voter" as const }))
    this.membership = { members: members.map((m) => ({ id: m.id, address: address(m.id), role: m.role })) }
    for (const id of ids) {
      const founding = members.some((m) => m.id === id)
      const recovered = options.recovered?.(id) ?? (founding ? bootstrap(this.membership) : emptyRecovered)
      this.addNode(id, recovered, options)
    }
  }

  /** A node with the given recovered state (a brand-new node has `emptyRecovered`). */
  addNode(id: NodeId, recovered: Recovered, options: ClusterOptions = {}): TestNode {
    assert(!this.nodes.has(id), `node ${id} exists`)
    // Strict reads unless a test asks for the lease: most tests turn checkQuorum off, and a
    // lease-mode node refuses votes for its first election timeout, which every test that
    // campaigns at once would have to wait out.
    // The eager commit broadcast unless a test opts in (carryCommit=true): the scripts show the
    // message flow of each feature, and one script shows the carried commit.
    const config: RaftConfig = { ...defaultRaftConfig(id), readMode: "readIndex", carryCommit: false, ...options.config, ...options.configFor?.(id) }
    const node = new TestNode(id, config, recovered)
    this.nodes.set(id, node)
    return node
  }

  node(id: NodeId): TestNode {
    const node = this.nodes.get(id)
    assert(node !== undefined, `no node ${id}`)
    return node
  }

  /** Steps one core and carries out its Ready. */
  step(id: NodeId, input: Input): Ready {
    const node = this.node(id)
    const { ready } = step(node.state, input)
    if (this.tracing) this.trace.push(JSON.stringify({ id, input, ready }, jsonReplacer))
    this.observer?.(id, input, ready)
    node.readies.push(ready)
    node.events.push(...ready.events)
    for (const m of ready.messages) this.send(m)
    const durable =
      ready.hardState !== null || ready.snapshot !== null || ready.truncateFrom !== null || ready.entries.length > 0 || ready.compactUpTo !== null
    if (durable || ready.messagesAfterPersist.length > 0) {
      node.jobs.push({
        hardState: ready.hardState,
        snapshot: ready.snapshot,
        truncateFrom: ready.truncateFrom,
        entries: [...ready.entries],
        compactUpTo: ready.compactUpTo,
        after: [...ready.messagesAfterPersist]
      })
    }
    if (ready.snapshot !== null) node.appliedIndex = ready.snapshot.index
    for (const entry of ready.committed) {
      assert(entry.index === node.appliedIndex + 1, `applied ${entry.index} after ${node.appliedIndex}`)
      node.appliedIndex = entry.index
      node.applied.push(entry)
    }
    // The state machine here applies at once; a node told to report it steps Applied (the others
    // never reach applyInflightBytesMax with a test's few bytes).
    if ((ready.committed.length > 0 || ready.snapshot !== null) && node.reportApplied) this.step(id, { _tag: "Applied", index: node.appliedIndex })
    node.loads.push(...ready.loads)
    node.loadsAsked += ready.loads.length
    if (!node.holdPersist) this.persist(id)
    if (!node.holdLoads) this.serveLoads(id)
    return ready
  }

  /** Answers a node's waiting read-backs from its disk (what a log store holds), in order;
   * `count` limits how many. */
  serveLoads(id: NodeId, count = Infinity): void {
    const node = this.node(id)
    let done = 0
    while (node.loads.length > 0 && done < count) {
      const load = node.loads.shift() as EntryLoad
      done++
      const entries = node.disk.entries.filter((e) => e.index >= load.lo && e.index <= load.hi)
      this.step(id, { _tag: "EntriesLoaded", seq: load.seq, entries })
    }
  }

  tick(id: NodeId, count = 1): void {
    for (let i = 0; i < count; i++) this.step(id, { _tag: "Tick" })
  }

  /** Ticks every node `count` times, delivering nothing. */
  tickAll(count = 1): void {
    for (let i = 0; i < count; i++) for (const id of this.nodes.keys()) this.step(id, { _tag: "Tick" })
  }

  propose(id: NodeId, ...payloads: string[]): Ready {
    const first = this.nextRequestId
    this.nextRequestId += payloads.length
    return this.step(id, {
      _tag: "Propose",
      proposals: payloads.map((p, i) => ({ id: first + i, data: new TextEncoder().encode(p) }))
    })
  }
  private nextRequestId = 1000

  /** Writes a node's waiting persist jobs to its disk, in order: each releases the messages that
   * waited on it and feeds `Persisted` back. `count` limits how many jobs complete. */
  persist(id: NodeId, count = Infinity): void {
    const node = this.node(id)
    let done = 0
    while (node.jobs.length > 0 && done < count) {
      const job = node.jobs.shift()
      assert(job !== undefined, "job present")
      done++
      writeJob(node.disk, job)
      for (const m of job.after) this.send(m)
      if (job.entries.length > 0 || job.truncateFrom !== null || job.snapshot !== null) {
        const last = node.disk.entries[node.disk.entries.length - 1]
        this.step(id, { _tag: "Persisted", index: last?.index ?? node.disk.base.index, term: last?.term ?? node.disk.base.term })
      }
    }
  }

  send(m: Message): void {
    // Copy, as a network would: nothing the receiver holds may alias the sender's state.
    const copy = structuredClone(m)
    if (this.filters.some((f) => f(copy))) this.dropped.push(copy)
    else this.queue.push(copy)
  }

  /** Removes and returns queued messages matching `match` without delivering them. */
  take(match: (m: Message) => boolean = () => true): Message[] {
    const taken = this.queue.filter(match)
    this.queue = this.queue.filter((m) => !match(m))
    return taken
  }

  /** Delivers the messages queued now that match (in order); what they cause stays queued.
   * Returns how many were delivered. */
  deliver(match: (m: Message) => boolean = () => true): number {
    const batch = this.take(match)
    let delivered = 0
    for (const m of batch) {
      if (this.filters.some((f) => f(m))) {
        this.dropped.push(m)
        continue
      }
      if (!this.nodes.has(m.to)) continue
      this.step(m.to, { _tag: "Message", message: m })
      delivered++
    }
    return delivered
  }

  /** Delivers (and persists, unless a node holds persistence) until no message is left; then,
   * as the driver's delay would, a leader that still owes a follower the commit index flushes it
   * (FlushCommit), and delivery goes on. */
  stabilize(roundsMax = 1000): number {
    let delivered = 0
    for (let round = 0; ; round++) {
      assert(round < roundsMax, `no quiet after ${roundsMax} rounds`)
      if (this.queue.length === 0) {
        const owing = [...this.nodes.values()].filter((n) => commitOwed(n.state))
        if (owing.length === 0) break
        for (const n of owing) this.step(n.id, { _tag: "FlushCommit" })
        continue
      }
      delivered += this.deliver()
    }
    return delivered
  }

  /** Ticks every node once and delivers until quiet, `count` times (a perfect network, minus
   * whatever the filters drop). */
  run(count: number): void {
    for (let i = 0; i < count; i++) {
      this.tickAll(1)
      this.stabilize()
    }
  }

  /** Runs until some node is leader; returns it. */
  runUntilLeader(ticksMax = 100): NodeId {
    for (let i = 0; i < ticksMax; i++) {
      const leaders = this.leaders()
      if (leaders.length > 0) {
        assert(leaders.length === 1, `two leaders: ${leaders.join(", ")}`)
        return leaders[0] as NodeId
      }
      this.run(1)
    }
    throw new Error(`no leader after ${ticksMax} ticks`)
  }

  /** A crash and restart: unwritten persist jobs are lost, the core restarts from the disk. */
  restart(id: NodeId): TestNode {
    const old = this.node(id)
    const d = old.disk
    const recovered: Recovered = { hardState: d.hardState, base: d.base, entries: d.entries, snapshot: d.snapshot }
    this.nodes.delete(id)
    const node = new TestNode(id, old.state.config, recovered)
    node.disk.snapshot = d.snapshot
    this.nodes.set(id, node)
    return node
  }

  /** Drops every message between the groups (nodes in no group can talk to everyone). */
  partition(...groups: ReadonlyArray<ReadonlyArray<NodeId>>): void {
    const groupOf = (id: NodeId) => groups.findIndex((g) => g.includes(id))
    this.filters.push((m) => {
      const a = groupOf(m.from)
      const b = groupOf(m.to)
      return a !== -1 && b !== -1 && a !== b
    })
  }

  isolate(id: NodeId): void {
    this.filters.push((m) => m.from === id || m.to === id)
  }

  heal(): void {
    this.filters = []
  }

  /** Campaigns on `id` and delivers until quiet; asserts it became leader. */
  elect(id: NodeId): void {
    this.step(id, { _tag: "Campaign" })
    this.stabilize()
    assert(this.node(id).role === "leader", `node ${id} did not become leader (${this.node(id).role})`)
  }

  leaders(): NodeId[] {
    return [...this.nodes.values()].filter((n) => n.role === "leader").map((n) => n.id)
  }

  /** The snapshot of `id` at its applied index (or `index`), handed to its core. */
  takeSnapshot(id: NodeId, index?: LogIndex): SnapshotMeta {
    const node = this.node(id)
    const meta = snapshotMetaAt(node.state, index ?? node.state.log.applied)
    node.disk.snapshot = meta
    this.step(id, { _tag: "SnapshotTaken", meta })
    return meta
  }

  /** Messages of one kind still queued. */
  queued<T extends Message["_tag"]>(tag: T, match: (m: Extract<Message, { _tag: T }>) => boolean = () => true): Array<Extract<Message, { _tag: T }>> {
    return this.queue.filter((m): m is Extract<Message, { _tag: T }> => m._tag === tag && match(m as Extract<Message, { _tag: T }>))
  }
}

export function address(id: NodeId): string {
  return `node${id}`
}

/** A recovered disk whose log has the given terms: entry 1 is the configuration `membership`
 * (its term is terms[0]), the others are commands named by their index. */
export function recoveredLog(membership: Membership, terms: ReadonlyArray<Term>, hardState: HardState): Recovered {
  const entries: Entry[] = terms.map((term, i): Entry =>
    i === 0 ? { kind: "config", term, index: 1, config: membership } : { kind: "command", term, index: i + 1, data: new TextEncoder().encode(`e${i + 1}`) }
  )
  return { hardState, base: { index: 0, term: 0 }, entries, snapshot: null }
}

export function text(entry: Entry): string | null {
  return entry.kind === "command" ? new TextDecoder().decode(entry.data) : null
}

function writeJob(disk: Disk, job: PersistJob): void {
  if (job.hardState !== null) disk.hardState = job.hardState
  if (job.snapshot !== null) {
    disk.snapshot = job.snapshot
    disk.base = { index: job.snapshot.index, term: job.snapshot.term }
    disk.entries = []
  }
  if (job.truncateFrom !== null) {
    const from = job.truncateFrom
    disk.entries = disk.entries.filter((e) => e.index < from)
  }
  for (const entry of job.entries) {
    const expected = disk.base.index + disk.entries.length + 1
    assert(entry.index === expected, `disk append at ${entry.index}, expected ${expected}`)
    disk.entries.push(entry)
  }
  if (job.compactUpTo !== null && job.compactUpTo.index > disk.base.index) {
    const upTo = job.compactUpTo
    disk.entries = disk.entries.filter((e) => e.index > upTo.index)
    disk.base = { ...upTo }
  }
}

function jsonReplacer(_key: string, value: unknown): unknown {
  if (value instanceof Uint8Array) return Array.from(value)
  if (value instanceof Set) return [...(value as Set<unknown>)]
  if (value instanceof Map) return [...(value as Map<unknown, unknown>)]
  return value
}
