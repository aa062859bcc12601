// Observers run after every simulator step (DESIGN.md invariants 1–3): one leader per term;
// every node's committed prefix agrees with every other's and a new leader holds all of it; no
// two nodes apply different entries at one index. Each records violations instead of throwing,
// so a run reports all it saw with its seed.
import { crc32c } from "@node-rs/crc32"
import type { Entry, LogIndex, NodeId, Term } from "../../../src/raft/types.ts"

export interface Violation {
  readonly invariant: "election-safety" | "log-matching" | "leader-completeness" | "state-machine-safety" | "durability" | "linearizability" | "session" | "bounded-staleness" | "convergence" | "liveness" | "crash"
  readonly detail: string
}

/** A stable digest of an entry: kind, term, payload length and CRC32C (native; entries carry
 * pages and blobs, and a JS byte loop here was a seventh of a SQLite seed's time). */
export function entryDigest(entry: Entry): string {
  if (entry.kind === "command") return `command/${entry.term}/${entry.data.length}/${crc32c(entry.data).toString(16)}`
  if (entry.kind === "config") return `config/${entry.term}/${entry.config.members.map((m) => `${m.id}${m.role[0]}`).join(",")}`
  return `${entry.kind}/${entry.term}`
}

export class SafetyChecker {
  readonly violations: Violation[] = []
  private readonly leaderOfTerm = new Map<Term, NodeId>()
  /** index → digest of the entry committed there (as seen by any node). */
  private readonly committed = new Map<LogIndex, string>()
  private committedMax: LogIndex = 0
  /** index → digest of the entry applied there (by any node). */
  private readonly applied = new Map<LogIndex, string>()

  onLeader(term: Term, id: NodeId): void {
    const existing = this.leaderOfTerm.get(term)
    if (existing !== undefined && existing !== id) {
      this.fail("election-safety", `term ${term} has two leaders: ${existing} and ${id}`)
    }
    this.leaderOfTerm.set(term, id)
  }

  get elections(): number {
    return this.leaderOfTerm.size
  }

  get committedIndexMax(): LogIndex {
    return this.committedMax
  }

  /** A node's commit index reached `index`; `entryAt` reads its log (undefined = compacted). */
  onCommitted(node: NodeId, from: LogIndex, to: LogIndex, entryAt: (i: LogIndex) => Entry | undefined): void {
    for (let i = from; i <= to; i++) {
      const entry = entryAt(i)
      if (entry === undefined) continue
      const digest = entryDigest(entry)
      const known = this.committed.get(i)
      if (known === undefined) this.committed.set(i, digest)
      else if (known !== digest) this.fail("log-matching", `node ${node} committed ${digest} at ${i}, others ${known}`)
    }
    if (to > this.committedMax) this.committedMax = to
  }

  /** A node became leader: its log must hold every entry known committed. */
  onLeaderLog(node: NodeId, term: Term, baseIndex: LogIndex, entryAt: (i: LogIndex) => Entry | undefined): void {
    for (let i = baseIndex + 1; i <= this.committedMax; i++) {
      const known = this.committed.get(i)
      if (known === undefined) continue
      const entry = entryAt(i)
      if (entry === undefined || entryDigest(entry) !== known) {
        this.fail("leader-completeness", `leader ${node} of term ${term} lacks committed entry ${i} (${known}); has ${entry === undefined ? "nothing" : entryDigest(entry)}`)
        return
      }
    }
  }

  /** What each node's messages have promised about its durable state: the highest term it spoke
   * in, and whom it voted for in that term. */
  private readonly promises = new Map<NodeId, { term: Term; vote: NodeId | null }>()

  /** A message left `node`: it speaks for its term and, if a granted vote, for its vote. */
  onSent(node: NodeId, term: Term, grantedVoteTo: NodeId | null): void {
    const promise = this.promises.get(node)
    if (promise === undefined || term > promise.term) this.promises.set(node, { term, vote: grantedVoteTo })
    else if (term === promise.term && grantedVoteTo !== null) promise.vote = grantedVoteTo
  }

  /** `node` restarted from disk: its hard state must keep every promise it made (invariant 4). */
  onRestart(node: NodeId, term: Term, vote: NodeId | null): void {
    const promise = this.promises.get(node)
    if (promise === undefined) return
    if (term < promise.term) this.fail("durability", `node ${node} restarted at term ${term} after speaking in term ${promise.term}`)
    else if (term === promise.term && promise.vote !== null && vote !== promise.vote) {
      this.fail("durability", `node ${node} voted for ${promise.vote} in term ${term} but restarted with vote ${vote ?? "none"}`)
    }
  }

  get appliedIndexMax(): LogIndex {
    let max = 0
    for (const index of this.applied.keys()) if (index > max) max = index
    return max
  }

  onApplied(node: NodeId, entry: Entry): void {
    const digest = entryDigest(entry)
    const known = this.applied.get(entry.index)
    if (known === undefined) this.applied.set(entry.index, digest)
    else if (known !== digest) this.fail("state-machine-safety", `node ${node} applied ${digest} at ${entry.index}, another node ${known}`)
  }

  fail(invariant: Violation["invariant"], detail: string): void {
    if (this.violations.length < 20) this.violations.push({ invariant, detail })
  }
}
