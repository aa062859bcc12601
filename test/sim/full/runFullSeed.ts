// One seed of the full simulator: the real actor stack on every node, a workload of client
// fibers recording a history, faults from a seeded scheduler, then healing, convergence and the
// same checkers as the fast simulator.
import { makeTrace } from "../trace.ts"
import { Effect, Exit } from "effect"
import type { ReadConsistency } from "../../../src/actors/RaftActor.ts"
import type { Entry, LogIndex, NodeId } from "../../../src/raft/types.ts"
import type { HistoryOp, KvInput, KvOutput } from "../checkers/linearizability.ts"
import { checkKvHistory } from "../checkers/linearizability.ts"
import type { Violation } from "../checkers/safety.ts"
import { SafetyChecker } from "../checkers/safety.ts"
import type { AckedWrite, LevelRead } from "../checkers/staleness.ts"
import { checkLevelReads, effectiveWrites } from "../checkers/staleness.ts"
import { encodeCommand } from "../kv.ts"
import { Prng } from "../Prng.ts"
import { cacheKnobs } from "../cacheKnobs.ts"
import type { SeedResult } from "../fast/runSeed.ts"
import { FullCluster, tickMs } from "./FullCluster.ts"
import { runSimulated } from "./SimRuntime.ts"

/** Deliberate bugs the full simulator's checkers must catch (test/sim/simFullMutations.test.ts). */
export type FullMutation = "lease-too-long" | "follower-reads-local" | "session-reads-at-once" | "bounded-ignores-lag" | "deferred-votes-early"

export interface FullSeedOptions {
  readonly seed: number
  readonly mutation?: FullMutation
  readonly trace?: (line: string) => void
  readonly faultTicks?: number
  /** RaftConfig.carryCommit, on or off (absent: the config's default). */
  readonly carryCommit?: boolean
}

/** How long a client waits for an answer before it gives up on that node. */
const clientTimeoutTicks = 20

/** Bounded reads in the workload: at most this many ticks behind the leader, as this node last
 * heard from it. */
const boundedLagTicks = 4

/** The safety checker, also keeping one copy of each applied entry (the staleness checkers
 * replay the committed log to place every value at its index). */
class RecordingChecker extends SafetyChecker {
  readonly entries = new Map<LogIndex, Entry>()
  override onApplied(node: NodeId, entry: Entry): void {
    super.onApplied(node, entry)
    if (!this.entries.has(entry.index)) this.entries.set(entry.index, entry)
  }
}

type Recorded = { -readonly [K in keyof HistoryOp]: HistoryOp[K] }

export function runFullSeed(options: FullSeedOptions): SeedResult {
  const recorder = makeTrace(options.trace)
  const trace = recorder.line
  const root = new Prng(options.seed)
  const swarm = root.fork("swarm")
  // Clock drift and the read-only clients have their own generator (not forked from root), so
  // adding them reshuffled nothing else.
  const extra = new Prng(options.seed ^ 0x6c6f636b)
  const size = swarm.pick([1, 3, 3, 5])
  const knobs = {
    dropProbability: swarm.pick([0, 0.02, 0.1]),
    delayTicksMax: swarm.pick([1, 2, 4]),
    snapshotEveryEntries: swarm.pick([20, 100, 1000]),
    // Within the lease's margin: electionTicks 10, leaseDriftTicks 2 tolerate a follower's clock
    // running up to (10 − 1) / (10 − 2) = 1.125 times the leader's; 1.05 / 0.95 ≈ 1.105.
    clockDriftMax: extra.pick([0, 0.02, 0.05]),
    // Its own generator too. Without follower reads, a read sent to a follower is refused and
    // the client looks for the leader, so more reads reach a deposed leader: the lease mutation
    // is caught that way.
    followerReads: options.mutation === "lease-too-long" ? false : new Prng(options.seed ^ 0x72656164).chance(0.75),
    // The entry cache, from its own generator too: most seeds keep a few entries' data at most,
    // so replication and the applier read entries back from the segment log all the time.
    ...cacheKnobs(new Prng(options.seed ^ 0x63616368)),
    ...(options.carryCommit !== undefined ? { carryCommit: options.carryCommit } : {}),
    ...(options.mutation === "lease-too-long" ? { bugs: { leaseTooLong: true } } : {}),
    ...(options.mutation === "follower-reads-local" ? { bugs: { followerReadsLocal: true } } : {}),
    ...(options.mutation === "session-reads-at-once" ? { bugs: { sessionReadsAtOnce: true } } : {}),
    ...(options.mutation === "bounded-ignores-lag" ? { bugs: { boundedIgnoresLag: true } } : {}),
    ...(options.mutation === "deferred-votes-early" ? { bugs: { deferredVotesEarly: true } } : {})
  }
  const checker = new RecordingChecker()
  const cluster = new FullCluster(root.fork("cluster"), knobs, checker, trace, extra.fork("rates"))
  const history: Recorded[] = []
  // Reads at the weaker levels (not linearizable: checked on their own) and the writes clients
  // saw acknowledged, with their index and tick.
  const levelReads: LevelRead[] = []
  const acked: AckedWrite[] = []
  const boundTicks = Math.ceil(boundedLagTicks * (1 + knobs.clockDriftMax) * 1.01) + knobs.delayTicksMax + 2
  const dropped = new Set<number>()
  let logical = 0
  let issuing = true
  let completedAfterHeal = 0
  let healed = false
  const faultTicks = options.faultTicks ?? 300
  const faultEveryTicks = swarm.pick([10, 30, 60])
  trace(`full seed ${options.seed} size=${size} ${JSON.stringify({ ...knobs, faultEveryTicks })}`)

  /** A closed-loop client; a reader only reads (so it keeps reading while every writer waits
   * on a deposed leader until its request times out). */
  const client = (id: number, rng: Prng, readsOnly = false) =>
    Effect.gen(function*() {
      // The node that last answered a read, and the one that last took a write: a write stuck on
      // a deposed leader (until its timeout) does not stop this client's reads, nor the reverse.
      let guess: NodeId | null = null
      let writeGuess: NodeId | null = null
      let opSeq = 0
      // The read level of each read, from the client's own generator (so choosing levels
      // reshuffled nothing else); the session index is its last acknowledged write's.
      const levels = new Prng((options.seed ^ 0x6c65766c) + id * 7919)
      let sessionIndex = 0
      while (issuing) {
        yield* Effect.sleep(rng.int(1, 4) * tickMs)
        const up = cluster.up()
        if (up.length === 0) continue
        const key = `k${rng.int(1, 3)}`
        const op = id * 1_000_000 + ++opSeq
        const roll = readsOnly ? 0.5 : rng.float()
        const input: KvInput = roll < 0.45 ? { kind: "write", key, value: `v${op}` } : roll < 0.85 ? { kind: "read", key } : { kind: "cas", key, expected: null, value: `v${op}` }
        // Half the reads go to any node, not the last one that answered: during a partition or a
        // leader change some reach a deposed leader, where only a sound lease may answer them.
        const anyNode = input.kind === "read" && rng.chance(0.5)
        const preferred: NodeId | null = input.kind === "read" ? guess : writeGuess
        const node: (typeof up)[number] = (anyNode ? undefined : up.find((n) => n.id === preferred)) ?? rng.pick(up)
        if (input.kind === "read") {
          const level = levels.pick(["linearizable", "linearizable", "session", "bounded"] as const)
          if (level !== "linearizable") {
            const consistency: ReadConsistency = level === "session" ? { level, index: sessionIndex } : { level, maxLagMs: boundedLagTicks * tickMs }
            const asked = { index: sessionIndex, tick: cluster.tick }
            const exit = yield* Effect.exit(Effect.timeout(node.raft.read((sm) => sm.read(input.key), consistency), clientTimeoutTicks * tickMs))
            if (Exit.isSuccess(exit)) {
              levelReads.push({ client: id, key: input.key, value: exit.value, level, invokedTick: asked.tick, sessionIndex: asked.index, boundTicks })
              guess = node.id
              if (healed) completedAfterHeal++
            } else {
              guess = null
            }
            continue
          }
        }
        const at = history.length
        history.push({ id: op, client: id, input, invokedAt: ++logical, completedAt: null, output: null })
        const done = (output: KvOutput) => {
          const h = history[at] as Recorded
          h.completedAt = ++logical
          h.output = output
          if (input.kind === "read") guess = node.id
          else writeGuess = node.id
          if (healed) completedAfterHeal++
        }
        const effect = input.kind === "read"
          ? Effect.map(node.raft.read((sm) => sm.read(key)), (value): KvOutput => ({ kind: "value", value }))
          : Effect.map(
            node.raft.propose(encodeCommand(input.kind === "write" ? { op, kind: "write", key, value: input.value } : { op, kind: "cas", key, expected: input.expected, value: input.value })),
            (applied): KvOutput => {
              if (applied.result?.result.kind === "cas-failed") return { kind: "cas-failed" }
              acked.push({ key, value: input.value, index: applied.index, ackedTick: cluster.tick })
              sessionIndex = Math.max(sessionIndex, applied.index)
              return { kind: "ok" }
            }
          )
        // The client gives up before the node's own request timeout (50 ticks), as a real one
        // would, and tries another node: writers do not all sit on a deposed leader while the
        // new one commits nothing for the readers to miss.
        const exit = yield* Effect.exit(Effect.timeout(effect, clientTimeoutTicks * tickMs))
        if (Exit.isSuccess(exit)) {
          done(exit.value)
          continue
        }
        if (input.kind === "read") guess = null
        else writeGuess = null
        const error = Exit.isFailure(exit) && exit.cause._tag === "Fail" ? exit.cause.error : null
        const unknown = input.kind !== "read" && (error === null || error._tag === "OutcomeUnknown" || error._tag === "RaftRequestTimeout" || error._tag === "TimeoutException")
        if (!unknown) dropped.add(at) // definitely no effect (or a read): leave it out
      }
    })

  const program = Effect.gen(function*() {
    yield* cluster.bootstrap(Array.from({ length: size }, (_, i) => i + 1))
    trace(`clock rates ${[...cluster.clockRates.values()].map((r) => r.toFixed(4)).join(" ")}`)
    const clients = swarm.int(1, 4)
    for (let i = 1; i <= clients; i++) yield* Effect.forkDaemon(client(i, root.fork(`client${i}`)))
    // Readers draw from their own generator, like the clocks, so adding them reshuffled nothing.
    const readers = extra.int(1, 2)
    for (let i = 1; i <= readers; i++) yield* Effect.forkDaemon(client(clients + i, extra.fork(`reader${i}`), true))
    const faults = root.fork("faults")
    const restartAt = new Map<NodeId, number>()
    const lastSeen = new Map<NodeId, string>()
    const step = Effect.gen(function*() {
      cluster.tick++
      yield* cluster.deliverDue()
      yield* Effect.sleep(tickMs)
      for (const node of cluster.up()) {
        const status = yield* node.raft.status
        if (status.role === "leader") checker.onLeader(status.term, node.id)
        const seen = `${status.role}/${status.term}/${status.leader ?? "-"}`
        if (lastSeen.get(node.id) !== seen) {
          lastSeen.set(node.id, seen)
          trace(`${cluster.tick} n${node.id} ${seen} commit=${status.commitIndex}`)
        }
      }
      for (const [id, at] of restartAt) {
        if (at > cluster.tick) continue
        restartAt.delete(id)
        yield* cluster.start(id)
      }
    })
    for (let t = 0; t < faultTicks; t++) {
      yield* step
      if (t % faultEveryTicks !== 0) continue
      const nodes = [...cluster.nodes.values()]
      const roll = faults.float()
      if (roll < 0.25) {
        cluster.faults++
        cluster.blocked.clear()
        const side = new Set(nodes.filter(() => faults.chance(0.5)).map((n) => n.id))
        for (const a of nodes) for (const b of nodes) if (side.has(a.id) !== side.has(b.id)) cluster.blocked.add(`${a.id}->${b.id}`)
        trace(`${cluster.tick} PARTITION {${[...side].join(",")}}`)
      } else if (roll < 0.4) {
        cluster.blocked.clear()
        trace(`${cluster.tick} HEAL`)
      } else if (roll < 0.65) {
        const victim = faults.pick(nodes)
        if (victim.raft !== null) {
          yield* cluster.crash(victim.id)
          restartAt.set(victim.id, cluster.tick + faults.int(1, 40))
        }
      } else if (roll < 0.7) {
        trace(`${cluster.tick} POWER LOSS`)
        for (const node of nodes) {
          yield* cluster.crash(node.id)
          restartAt.set(node.id, cluster.tick + faults.int(1, 20))
        }
      } else if (roll < 0.8) {
        const leader = yield* currentLeader
        if (leader !== undefined) {
          cluster.faults++
          trace(`${cluster.tick} TRANSFER from n${leader.id}`)
          yield* Effect.forkDaemon(Effect.ignore(leader.raft.transferLeadership(null)))
        }
      } else if (roll < 0.9 && cluster.nodes.size < 7) {
        const leader = yield* currentLeader
        const id = Math.max(...cluster.nodes.keys()) + 1
        if (leader !== undefined) {
          cluster.faults++
          trace(`${cluster.tick} ADD n${id} via n${leader.id}`)
          yield* cluster.addEmpty(id)
          yield* Effect.forkDaemon(
            Effect.ignore(
              leader.raft.changeMembership({ kind: "add", node: id, address: `node${id}`, role: "standby" }).pipe(
                Effect.zipRight(leader.raft.changeMembership({ kind: "assign", node: id, role: "voter" }))
              )
            )
          )
        }
      }
    }
    // Liveness: heal and restart everything; operations must complete and replicas converge.
    cluster.blocked.clear()
    for (const id of restartAt.keys()) yield* cluster.start(id)
    restartAt.clear()
    healed = true
    trace(`${cluster.tick} HEAL ALL`)
    for (let t = 0; t < 150; t++) yield* step
    issuing = false
    for (let t = 0; t < 800; t++) {
      yield* step
      if (yield* converged) return true
    }
    return false
  })

  const currentLeader = Effect.gen(function*() {
    for (const node of cluster.up()) {
      if ((yield* node.raft.status).role === "leader") return node
    }
    return undefined
  })

  const converged = Effect.gen(function*() {
    const up = cluster.up()
    if (up.length !== cluster.nodes.size) return false
    const statuses = yield* Effect.forEach(up, (n) => n.raft.status)
    const leaders = statuses.filter((s) => s.role === "leader")
    if (leaders.length !== 1) return false
    const leader = leaders[0]
    if (leader === undefined) return false
    const digests = new Set<string>()
    for (const member of leader.membership.members) {
      if (member.role === "spare") continue
      const node = up.find((n) => n.id === member.id)
      if (node === undefined) return false
      if (node.machine.appliedIndex !== leader.commitIndex) return false
      digests.add(node.machine.store.digest())
    }
    return digests.size === 1
  })

  const violations: Violation[] = []
  const exit = runSimulated(program, { tasksPerInstantMax: 5_000_000 })
  violations.push(...checker.violations)
  if (Exit.isFailure(exit)) {
    violations.push({ invariant: "crash", detail: String(Exit.isFailure(exit) ? exit.cause : "") })
  } else if (!exit.value) {
    violations.push({ invariant: "liveness", detail: "no convergence after healing" })
  } else if (completedAfterHeal === 0) {
    violations.push({ invariant: "liveness", detail: "no operation completed after healing" })
  }
  const recorded = history.filter((_, i) => !dropped.has(i))
  const verdict = checkKvHistory(recorded, { stepsMax: 200_000 })
  if (verdict._tag === "NotLinearizable") violations.push({ invariant: "linearizability", detail: `key ${verdict.partition ?? "?"}: ${verdict.explanation}` })
  violations.push(...checkLevelReads(levelReads, acked, effectiveWrites(checker.entries)))
  trace(`end elections=${checker.elections} applied=${checker.appliedIndexMax} ops=${recorded.length} levelReads=${levelReads.length} (session ${levelReads.filter((r) => r.level === "session").length}) lin=${verdict._tag} violations=${violations.length}`)
  return {
    seed: options.seed,
    elections: checker.elections,
    committed: checker.appliedIndexMax,
    faults: cluster.faults,
    operations: recorded.length,
    violations,
    linearizabilityUndecided: verdict._tag === "Unknown",
    readBacks: cluster.readBacks,
    traceHash: recorder.hash()
  }
}

