// One seed of the fast simulator: swarm the knobs, run a workload under faults (safety phase),
// heal everything and demand progress and convergence (liveness phase), then check the history.
import { makeTrace } from "../trace.ts"
import type { RaftBugs } from "../../../src/raft/config.ts"
import { isVoter } from "../../../src/raft/membership.ts"
import type { NodeId } from "../../../src/raft/types.ts"
import { checkKvHistory } from "../checkers/linearizability.ts"
import type { Violation } from "../checkers/safety.ts"
import { SafetyChecker } from "../checkers/safety.ts"
import { Prng } from "../Prng.ts"
import { cacheKnobs } from "../cacheKnobs.ts"
import type { SimNode } from "./FastCluster.ts"
import { FastCluster, unitsPerTick } from "./FastCluster.ts"
import { Workload, defaultOpTimeoutUnits } from "./Workload.ts"

export type Mutation = "commit-old-term" | "double-vote" | "forget-vote" | "follower-reads-local" | "load-wrong-entry"

export interface SeedOptions {
  readonly seed: number
  readonly mutation?: Mutation
  readonly trace?: (line: string) => void
  /** Ticks of the faulty phase. */
  readonly faultTicks?: number
  /** RaftConfig.carryCommit, on or off (absent: the config's default). */
  readonly carryCommit?: boolean
}

export interface SeedResult {
  readonly seed: number
  readonly elections: number
  readonly committed: number
  readonly faults: number
  readonly operations: number
  readonly violations: ReadonlyArray<Violation>
  /** The linearizability search ran out of budget: the history was neither proven nor refuted. */
  readonly linearizabilityUndecided: boolean
  /** FNV-1a of the trace: equal runs give equal hashes. */
  readonly traceHash: string
  /** Entries read back from storage because a core had evicted them (the entry cache at work). */
  readonly readBacks?: number
}

const nodeIdsMax = 9

function readsFor(checkQuorum: boolean): { checkQuorum: boolean; readMode: "lease" | "readIndex" } {
  return { checkQuorum, readMode: checkQuorum ? "lease" : "readIndex" }
}

export function runSeed(options: SeedOptions): SeedResult {
  const root = new Prng(options.seed)
  const swarm = root.fork("swarm")
  const recorder = makeTrace(options.trace)
  const trace = recorder.line
  const bugs: RaftBugs = {
    commitOldTerm: options.mutation === "commit-old-term",
    doubleVote: options.mutation === "double-vote",
    followerReadsLocal: options.mutation === "follower-reads-local"
  }
  const size = swarm.pick([1, 3, 3, 3, 5, 5])
  const knobs = {
    dropProbability: swarm.pick([0, 0.01, 0.05, 0.15]),
    duplicateProbability: swarm.pick([0, 0.01, 0.05]),
    delayUnitsMax: swarm.pick([5, 15, 40]),
    persistUnitsMax: swarm.pick([1, 5, 20]),
    snapshotEvery: swarm.pick([10, 40, 200]),
    raft: {
      electionTicks: swarm.pick([5, 10, 10, 20]),
      heartbeatTicks: swarm.pick([1, 1, 2]),
      preVote: swarm.chance(0.8),
      // Lease reads wherever check-quorum allows them (the config refuses them without it).
      ...readsFor(swarm.chance(0.8)),
      appendEntriesMax: swarm.pick([1, 3, 64]),
      inflightAppendsMax: swarm.pick([1, 4, 64]),
      uncommittedBytesMax: swarm.pick([2_000, 256 * 1024 * 1024]),
      // The entry cache, from a generator of its own (the other knobs of a seed stay as they
      // were): tiny in most seeds, so replication and the applier read entries back all the time.
      ...cacheKnobs(new Prng(options.seed ^ 0x63616368)),
      ...(options.carryCommit !== undefined ? { carryCommit: options.carryCommit } : {})
    },
    bugs,
    forgetVote: options.mutation === "forget-vote",
    loadWrongEntry: options.mutation === "load-wrong-entry",
    checkCache: true
  }
  const faultEveryTicks = swarm.pick([10, 30, 80])
  const restartTicksMax = swarm.pick([3, 20, 80])
  const checker = new SafetyChecker()
  let workload: Workload | undefined
  const cluster = new FastCluster(root.fork("cluster"), knobs, checker, {
    onApplied: (node, entry, result) => workload?.onApplied(node, entry, result),
    onAppliedIndex: (node) => workload?.onAppliedIndex(node),
    onReady: (node, ready) => workload?.onEvents(node, ready.events as never)
  }, trace)
  trace(`seed ${options.seed} size=${size} ${JSON.stringify({ ...knobs, bugs: undefined, faultEveryTicks, restartTicksMax })}`)
  cluster.bootstrapNodes(Array.from({ length: size }, (_, i) => i + 1))
  workload = new Workload(root.fork("workload"), { clients: swarm.int(1, 5), keys: swarm.int(1, 4), thinkUnitsMax: 40, opTimeoutUnits: defaultOpTimeoutUnits }, cluster)
  const faults = new Faults(root.fork("faults"), cluster, workload, restartTicksMax)

  let undecided = false
  const result = (violations: ReadonlyArray<Violation>, operations: number): SeedResult => ({
    linearizabilityUndecided: undecided,
    seed: options.seed,
    elections: checker.elections,
    committed: checker.committedIndexMax,
    faults: cluster.faults,
    operations,
    violations,
    readBacks: cluster.readBacks,
    traceHash: recorder.hash()
  })
  function healAndFinish(): SeedResult {
  if (workload === undefined) throw new Error("no workload")
  // Liveness phase: heal everything; new operations must complete and all replicas converge.
  cluster.blocked.clear()
  for (const node of cluster.nodes.values()) if (!node.up) cluster.restart(node)
  workload.healed = true
  const violations = [...checker.violations]
  let converged = false
  const healBudget = 1500 * unitsPerTick
  for (let t = 0; t < healBudget; t++) {
    cluster.advance()
    workload.tick()
    if (t === 300 * unitsPerTick) workload.issuing = false
    if (!workload.issuing && workload.pendingCount === 0 && convergedNow(cluster)) {
      converged = true
      break
    }
  }
  violations.push(...checker.violations.slice(violations.length))
  if (!converged) {
    const why = workload.pendingCount > 0 ? `${workload.pendingCount} operations still pending` : `replicas differ: ${describe(cluster)}`
    violations.push({ invariant: "liveness", detail: `no convergence ${healBudget / unitsPerTick} ticks after healing: ${why}` })
  } else if (workload.completedAfterHeal === 0 && workload.history.length > 0) {
    violations.push({ invariant: "liveness", detail: "no operation completed after healing" })
  }
  const history = workload.recorded()
  const verdict = checkKvHistory(history, { stepsMax: 200_000 })
  undecided = verdict._tag === "Unknown"
  if (verdict._tag === "NotLinearizable") {
    violations.push({ invariant: "linearizability", detail: `key ${verdict.partition ?? "?"}: ${verdict.explanation}` })
  }
  trace(`end elections=${checker.elections} committed=${checker.committedIndexMax} ops=${history.length} lin=${verdict._tag} violations=${violations.length}`)
  return result(violations, history.length)

  }
  try {
    // Safety phase: workload under faults.
    const faultTicks = options.faultTicks ?? 600
    for (let t = 0; t < faultTicks * unitsPerTick; t++) {
      cluster.advance()
      workload.tick()
      if (cluster.now % (faultEveryTicks * unitsPerTick) === 0) faults.inject()
      faults.restartDue()
    }
    return healAndFinish()
  } catch (error) {
    // An assertion inside the core or the simulated driver: a crash-class failure of this seed.
    trace(`CRASH ${String(error)}`)
    return result([...checker.violations, { invariant: "crash", detail: error instanceof Error ? (error.stack ?? error.message) : String(error) }], workload.recorded().length)
  }

}

/** Every replicated member of the leader's configuration has applied the leader's commit index
 * and holds the same data. */
function convergedNow(cluster: FastCluster): boolean {
  const leaders = [...cluster.nodes.values()].filter((n) => n.up && n.state.role === "leader")
  if (leaders.length !== 1) return false
  const leader = leaders[0] as SimNode
  const commit = leader.state.log.committed
  if (leader.state.log.applied !== commit) return false
  const digest = leader.sm.digest()
  for (const member of leader.state.membership.members) {
    if (member.role === "spare") continue
    const node = cluster.nodes.get(member.id)
    if (node === undefined || !node.up) return false
    if (node.state.log.applied !== commit || node.sm.digest() !== digest) return false
  }
  return true
}

function describe(cluster: FastCluster): string {
  return [...cluster.nodes.values()]
    .map((n) => `n${n.id}:${n.up ? n.state.role : "down"}/t${n.state.term}/c${n.state.log.committed}/a${n.state.log.applied}`)
    .join(" ")
}

/** The fault scheduler: partitions, crashes (one node, the leader, or all), membership changes,
 * leadership transfers; every downed node comes back after a bounded time. */
class Faults {
  private readonly restartAt = new Map<NodeId, number>()
  private nextRequest = 1_000_000

  constructor(private readonly rng: Prng, private readonly cluster: FastCluster, private readonly workload: Workload, private readonly restartTicksMax: number) {}

  inject(): void {
    const c = this.cluster
    const nodes = [...c.nodes.values()]
    const leader = nodes.find((n) => n.up && n.state.role === "leader")
    const roll = this.rng.float()
    if (roll < 0.2) {
      this.partition(nodes)
    } else if (roll < 0.35) {
      if (c.blocked.size > 0) c.log("HEAL")
      c.blocked.clear()
    } else if (roll < 0.5) {
      this.crash(this.rng.pick(nodes), 1, this.restartTicksMax)
    } else if (roll < 0.58 && leader !== undefined) {
      this.crash(leader, 1, this.restartTicksMax)
    } else if (roll < 0.6) {
      c.log("POWER LOSS")
      for (const node of nodes) this.crash(node, 1, this.restartTicksMax)
    } else if (roll < 0.68 && leader !== undefined) {
      this.isolate(leader, nodes)
    } else if (roll < 0.8 && leader !== undefined) {
      this.changeMembership(leader)
    } else if (roll < 0.88 && leader !== undefined) {
      c.faults++
      c.log(`TRANSFER from n${leader.id}`)
      c.input(leader, { _tag: "TransferLeadership", id: this.nextRequest++, to: null })
    }
  }

  restartDue(): void {
    for (const [id, at] of this.restartAt) {
      if (this.cluster.now < at) continue
      this.restartAt.delete(id)
      const node = this.cluster.nodes.get(id)
      if (node !== undefined) this.cluster.restart(node)
    }
  }

  private crash(node: SimNode, ticksMin: number, ticksMax: number): void {
    if (!node.up) return
    this.workload.onCrash(node)
    this.cluster.crash(node)
    this.restartAt.set(node.id, this.cluster.now + this.rng.int(ticksMin, ticksMax) * unitsPerTick)
  }

  private partition(nodes: ReadonlyArray<SimNode>): void {
    const c = this.cluster
    c.faults++
    c.blocked.clear()
    const side = new Set(nodes.filter(() => this.rng.chance(0.5)).map((n) => n.id))
    const asymmetric = this.rng.chance(0.2)
    for (const a of nodes) {
      for (const b of nodes) {
        if (side.has(a.id) && !side.has(b.id)) {
          c.blocked.add(`${a.id}->${b.id}`)
          if (!asymmetric) c.blocked.add(`${b.id}->${a.id}`)
        }
      }
    }
    c.log(`PARTITION {${[...side].join(",")}} ${asymmetric ? "one-way" : ""}`)
  }

  private isolate(leader: SimNode, nodes: ReadonlyArray<SimNode>): void {
    const c = this.cluster
    c.faults++
    for (const other of nodes) {
      if (other.id === leader.id) continue
      c.blocked.add(`${leader.id}->${other.id}`)
      c.blocked.add(`${other.id}->${leader.id}`)
    }
    c.log(`ISOLATE leader n${leader.id}`)
  }

  private changeMembership(leader: SimNode): void {
    const c = this.cluster
    const members = leader.state.membership.members
    const voterCount = members.filter((m) => m.role === "voter").length
    const roll = this.rng.float()
    const id = this.nextRequest++
    const free = Array.from({ length: nodeIdsMax }, (_, i) => i + 1).filter((i) => !c.nodes.has(i))
    if (roll < 0.3 && free.length > 0) {
      const node = c.addEmptyNode(this.rng.pick(free))
      c.log(`ADD n${node.id}`)
      c.input(leader, { _tag: "ChangeMembership", id, change: { kind: "add", node: node.id, address: `node${node.id}`, role: this.rng.pick(["spare", "standby"] as const) } })
    } else if (roll < 0.65) {
      const candidates = members.filter((m) => m.role !== "voter")
      if (candidates.length === 0) return
      const member = this.rng.pick(candidates)
      c.log(`PROMOTE n${member.id}`)
      c.input(leader, { _tag: "ChangeMembership", id, change: { kind: "assign", node: member.id, role: "voter" } })
    } else if (roll < 0.85 && voterCount > 3) {
      const member = this.rng.pick(members.filter((m) => m.role === "voter"))
      c.log(`DEMOTE n${member.id}`)
      c.input(leader, { _tag: "ChangeMembership", id, change: { kind: "assign", node: member.id, role: this.rng.pick(["standby", "spare"] as const) } })
    } else if (members.length > 3) {
      const member = this.rng.pick(members.filter((m) => !isVoter(leader.state.membership, m.id) || voterCount > 3))
      c.log(`REMOVE n${member.id}`)
      c.input(leader, { _tag: "ChangeMembership", id, change: { kind: "remove", node: member.id } })
    } else {
      return
    }
    c.faults++
  }
}
