// Clients of the simulated cluster and the history they record. Each client runs one operation
// at a time against the node it believes leads; writes and cas go through the log, reads through
// ReadIndex. An operation's outcome is recorded only as far as the client can know it.
import type { RequestId } from "../../../src/raft/state.ts"
import type { Entry, LogIndex, NodeId, Term } from "../../../src/raft/types.ts"
import type { HistoryOp, KvInput, KvOutput } from "../checkers/linearizability.ts"
import type { KvResult } from "../kv.ts"
import { encodeCommand } from "../kv.ts"
import type { Prng } from "../Prng.ts"
import type { FastCluster, SimNode } from "./FastCluster.ts"
import { unitsPerTick } from "./FastCluster.ts"

interface Pending {
  readonly historyIndex: number
  readonly client: Client
  readonly node: NodeId
  readonly input: KvInput
  readonly deadline: number
  /** Writes: where the entry went once accepted. Reads: the index to reach once confirmed. */
  index: LogIndex | null
  term: Term | null
}

interface Client {
  readonly id: number
  pending: Pending | null
  nextAt: number
  leaderGuess: NodeId | null
  lastSeen: Map<string, string | null>
}

export interface WorkloadKnobs {
  readonly clients: number
  readonly keys: number
  readonly thinkUnitsMax: number
  readonly opTimeoutUnits: number
}

export class Workload {
  readonly history: Array<HistoryOp & { completedAt: number | null; output: KvOutput | null }> = []
  private readonly dropped = new Set<number>()
  private readonly clients: Client[] = []
  private readonly byRequest = new Map<string, Pending>()
  private nextOp = 1
  private nextRequest = 1
  issuing = true
  completedAfterHeal = 0

  constructor(private readonly rng: Prng, private readonly knobs: WorkloadKnobs, private readonly cluster: FastCluster) {
    for (let i = 0; i < knobs.clients; i++) {
      this.clients.push({ id: i + 1, pending: null, nextAt: rng.int(0, knobs.thinkUnitsMax), leaderGuess: null, lastSeen: new Map() })
    }
  }

  get pendingCount(): number {
    return this.clients.filter((c) => c.pending !== null).length
  }

  /** Operations that reached a definite outcome or stayed unknown (failed-without-effect ones are dropped). */
  recorded(): ReadonlyArray<HistoryOp> {
    return this.history.filter((_, i) => !this.dropped.has(i))
  }

  tick(): void {
    const now = this.cluster.now
    for (const client of this.clients) {
      const p = client.pending
      if (p !== null && now >= p.deadline) this.finishUnknown(p)
      if (client.pending === null && this.issuing && now >= client.nextAt) this.issue(client)
    }
  }

  private issue(client: Client): void {
    const cluster = this.cluster
    const ids = [...cluster.nodes.keys()]
    const guess = client.leaderGuess !== null && cluster.nodes.get(client.leaderGuess)?.up === true ? client.leaderGuess : this.rng.pick(ids)
    const node = cluster.nodes.get(guess)
    const key = `k${this.rng.int(1, this.knobs.keys)}`
    const op = this.nextOp++
    const roll = this.rng.float()
    const input: KvInput =
      roll < 0.45
        ? { kind: "write", key, value: `v${op}` }
        : roll < 0.85
          ? { kind: "read", key }
          : { kind: "cas", key, expected: client.lastSeen.get(key) ?? null, value: `v${op}` }
    const historyIndex = this.history.length
    this.history.push({ id: op, client: client.id, input, invokedAt: cluster.now, completedAt: null, output: null })
    const pending: Pending = { historyIndex, client, node: guess, input, deadline: cluster.now + this.knobs.opTimeoutUnits, index: null, term: null }
    client.pending = pending
    if (node === undefined || !node.up) return this.finishFailed(pending, null)
    const request: RequestId = this.nextRequest++
    this.byRequest.set(`${guess}/${request}`, pending)
    if (input.kind === "read") {
      cluster.input(node, { _tag: "ReadIndex", ids: [request] })
    } else {
      const data = encodeCommand(input.kind === "write" ? { op, kind: "write", key, value: input.value } : { op, kind: "cas", key, expected: input.expected, value: input.value })
      cluster.input(node, { _tag: "Propose", proposals: [{ id: request, data }] })
    }
  }

  /** Events of a node's step: acceptance, rejection, reads confirmed. */
  onEvents(node: SimNode, events: ReadonlyArray<{ readonly _tag: string } & Record<string, unknown>>): void {
    for (const event of events) {
      const key = `${node.id}/${String(event["id"])}`
      const pending = this.byRequest.get(key)
      if (pending === undefined || pending.client.pending !== pending) continue
      switch (event._tag) {
        case "Accepted":
          pending.index = event["index"] as LogIndex
          pending.term = event["term"] as Term
          break
        case "Rejected":
          this.byRequest.delete(key)
          this.finishFailed(pending, (event["leader"] as NodeId | null) ?? null)
          break
        case "ReadReady":
          this.byRequest.delete(key)
          pending.index = event["index"] as LogIndex
          this.onAppliedIndex(node)
          break
      }
    }
  }

  onApplied(node: SimNode, entry: Entry, result: unknown): void {
    for (const client of this.clients) {
      const p = client.pending
      if (p === null || p.node !== node.id || p.input.kind === "read" || p.index !== entry.index) continue
      if (p.term !== entry.term) {
        this.finishFailed(p, null) // another entry took its place: it can never commit
        continue
      }
      const r = (result as { op: number; result: KvResult } | undefined)?.result
      this.complete(p, r?.kind === "cas-failed" ? { kind: "cas-failed" } : { kind: "ok" })
      if (r?.kind === "ok") client.lastSeen.set(p.input.key, p.input.value)
    }
  }

  onAppliedIndex(node: SimNode): void {
    for (const client of this.clients) {
      const p = client.pending
      if (p === null || p.node !== node.id || p.input.kind !== "read" || p.index === null) continue
      if (node.state.log.applied < p.index) continue
      const value = node.sm.read(p.input.key)
      client.lastSeen.set(p.input.key, value)
      this.complete(p, { kind: "value", value })
    }
  }

  /** A node crashed: what waited on it will never be answered. */
  onCrash(node: SimNode): void {
    for (const client of this.clients) {
      const p = client.pending
      if (p !== null && p.node === node.id) this.finishUnknown(p)
    }
  }

  private complete(p: Pending, output: KvOutput): void {
    const op = this.history[p.historyIndex]
    if (op !== undefined) {
      op.completedAt = this.cluster.now
      op.output = output
    }
    p.client.leaderGuess = p.node
    this.release(p)
    if (!this.issuing || this.healed) this.completedAfterHeal++
  }

  healed = false

  /** Definitely without effect (rejected before entering the log, or replaced): left out. */
  private finishFailed(p: Pending, leader: NodeId | null): void {
    this.dropped.add(p.historyIndex)
    p.client.leaderGuess = leader
    this.release(p)
  }

  /** The client cannot know: a read is dropped, a write stays in the history as unknown. */
  private finishUnknown(p: Pending): void {
    if (p.input.kind === "read") this.dropped.add(p.historyIndex)
    p.client.leaderGuess = null
    this.release(p)
  }

  private release(p: Pending): void {
    p.client.pending = null
    p.client.nextAt = this.cluster.now + this.rng.int(1, this.knobs.thinkUnitsMax)
  }
}

export const defaultOpTimeoutUnits = 100 * unitsPerTick
