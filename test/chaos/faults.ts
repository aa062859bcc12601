// The chaos faults, one at a time: inject, hold, heal. Every choice (kind, target, duration,
// partition shape, bit position) is drawn from the seeded PRNG; which node leads at the time is
// the cluster's doing, so a seed replays the same plan, not necessarily the same run.
import * as fs from "node:fs"
import * as path from "node:path"
import type { Prng } from "../sim/Prng.ts"
import type { ChaosNode } from "./cluster.ts"
import { eventually, leaderOf, sleep, withClient } from "./cluster.ts"
import { cut, fillDisk, healNetwork } from "./sandbox.ts"

export const faultKinds = ["kill", "pause", "partition", "cluster-kill", "disk-full", "bitflip"] as const
export type FaultKind = (typeof faultKinds)[number]

export function parseFaultKinds(text: string): ReadonlyArray<FaultKind> {
  const kinds = text.split(",").map((s) => s.trim()).filter((s) => s.length > 0)
  for (const kind of kinds) {
    if (!(faultKinds as ReadonlyArray<string>).includes(kind)) throw new Error(`unknown fault kind "${kind}" (known: ${faultKinds.join(", ")})`)
  }
  return kinds as ReadonlyArray<FaultKind>
}

export interface FaultRecord {
  readonly kind: FaultKind
  /** What was done, e.g. "kill -9 node 2 (leader) for 1800 ms". */
  description: string
  startedAt: number
  healedAt: number | null
  /** When the killed node(s) were started again (kill, cluster-kill, bitflip). */
  restartedAt: number | null
  /** When every node answered /metrics again after the heal (its process is up). */
  upAt: number | null
  /** The fault could not be carried out or healed as planned (e.g. a repair failed). */
  problem: string | null
  readonly notes: Array<string>
}

/** Bounds on the fault durations (ms). The election timeout is 1–2 s (10 ticks of 100 ms), so
 * pauses always outlast it. */
const holds = {
  kill: [200, 4_000],
  pause: [2_500, 8_000],
  partition: [3_000, 10_000],
  "cluster-kill": [200, 3_000],
  "disk-full": [3_000, 10_000]
} as const
const refuseToStartMs = 30_000
const repairTimeoutMs = 120_000
const nodeUpTimeoutMs = 60_000
const wholeTimeoutMs = 180_000

export class FaultInjector {
  /** Nodes the suite gave up on (a failed repair): left down, and never targeted again. */
  readonly broken = new Set<number>()
  private readonly fillFiles = new Set<string>()

  constructor(
    private readonly nodes: ReadonlyArray<ChaosNode>,
    private readonly prng: Prng,
    private readonly log: (line: string) => void,
    /** Voters the role manager keeps when every node is in play. */
    private readonly voterTarget: number
  ) {}

  private get servers(): ReadonlyArray<string> {
    return this.nodes.map((node) => node.address)
  }

  /** The leader half the time (when there is one), else any node still in play. */
  private async target(): Promise<{ node: ChaosNode; isLeader: boolean }> {
    const live = this.nodes.filter((node) => !this.broken.has(node.index))
    const preferLeader = this.prng.chance(0.5)
    const pick = this.prng.pick(live)
    if (preferLeader) {
      const leader = await leaderOf(this.servers)
      const node = live.find((n) => n.address === leader)
      if (node !== undefined) return { node, isLeader: true }
    }
    return { node: pick, isLeader: (await leaderOf(this.servers)) === pick.address }
  }

  async inject(kind: FaultKind): Promise<FaultRecord> {
    const record: FaultRecord = { kind, description: kind, startedAt: Date.now(), healedAt: null, restartedAt: null, upAt: null, problem: null, notes: [] }
    try {
      switch (kind) {
        case "kill":
          await this.kill(record)
          break
        case "pause":
          await this.pause(record)
          break
        case "partition":
          await this.partition(record)
          break
        case "cluster-kill":
          await this.clusterKill(record)
          break
        case "disk-full":
          await this.diskFull(record)
          break
        case "bitflip":
          await this.bitflip(record)
          break
      }
    } catch (error) {
      record.problem = `${error instanceof Error ? error.message : String(error)}`
    } finally {
      await this.healAll(record)
      record.healedAt ??= Date.now()
    }
    this.log(`fault ${kind}: ${record.description}${record.problem !== null ? ` — PROBLEM: ${record.problem}` : ""}${record.notes.length > 0 ? ` (${record.notes.join("; ")})` : ""}`)
    return record
  }

  private hold(kind: keyof typeof holds): number {
    const [min, max] = holds[kind]
    return this.prng.int(min, max)
  }

  private async kill(record: FaultRecord): Promise<void> {
    const { node, isLeader } = await this.target()
    const holdMs = this.hold("kill")
    record.startedAt = Date.now()
    await node.kill()
    record.description = `kill -9 node ${node.index}${isLeader ? " (leader)" : ""}, restarted after ${holdMs} ms`
    await sleep(holdMs)
    record.restartedAt = Date.now()
    node.start()
  }

  private async pause(record: FaultRecord): Promise<void> {
    const { node, isLeader } = await this.target()
    const holdMs = this.hold("pause")
    record.startedAt = Date.now()
    node.pause()
    record.description = `SIGSTOP node ${node.index}${isLeader ? " (leader)" : ""} for ${holdMs} ms`
    await sleep(holdMs)
    node.resume()
  }

  private async partition(record: FaultRecord): Promise<void> {
    const indexes = this.nodes.map((node) => node.index)
    const modes = indexes.length >= 3 ? ["isolate-leader", "majority-minority", "bridge"] as const : ["isolate-leader", "majority-minority"] as const
    const mode = this.prng.pick(modes)
    const shuffled = shuffle(this.prng, indexes)
    const holdMs = this.hold("partition")
    let description: string
    record.startedAt = Date.now()
    if (mode === "isolate-leader") {
      const leader = await leaderOf(this.servers)
      const isolated = this.nodes.find((node) => node.address === leader)?.index ?? shuffled[0]!
      await cut([isolated], indexes.filter((i) => i !== isolated))
      description = `isolate ${leader !== null ? "leader " : ""}node ${isolated}`
    } else if (mode === "majority-minority") {
      const minority = shuffled.slice(0, Math.floor((indexes.length - 1) / 2))
      const majority = shuffled.slice(minority.length)
      await cut(minority, majority)
      description = `split {${minority.join(",")}} | {${majority.join(",")}}`
    } else {
      // One node sees both sides; the sides do not see each other.
      const [bridge, ...rest] = shuffled
      const left = rest.slice(0, Math.ceil(rest.length / 2))
      const right = rest.slice(left.length)
      await cut(left, right)
      description = `bridge: {${left.join(",")}} – ${bridge} – {${right.join(",")}}`
    }
    record.description = `partition ${description} for ${holdMs} ms`
    await sleep(holdMs)
    await healNetwork()
  }

  private async clusterKill(record: FaultRecord): Promise<void> {
    const holdMs = this.hold("cluster-kill")
    const live = this.nodes.filter((node) => !this.broken.has(node.index))
    record.startedAt = Date.now()
    await Promise.all(live.map((node) => node.kill()))
    record.description = `kill -9 all ${live.length} nodes, restarted after ${holdMs} ms`
    await sleep(holdMs)
    record.restartedAt = Date.now()
    for (const node of live) node.start()
  }

  private async diskFull(record: FaultRecord): Promise<void> {
    const { node, isLeader } = await this.target()
    const holdMs = this.hold("disk-full")
    const fill = path.join(node.dataDir, "chaos-fill")
    record.startedAt = Date.now()
    this.fillFiles.add(fill)
    const bytes = await fillDisk(fill)
    record.description = `disk of node ${node.index}${isLeader ? " (leader)" : ""} full (${(bytes / 2 ** 20).toFixed(0)} MiB filler) for ${holdMs} ms`
    await sleep(holdMs)
    fs.rmSync(fill, { force: true })
    this.fillFiles.delete(fill)
  }

  /** Flips one bit in the node's oldest log segment (a closed one when there are two or more),
   * in its first half so it is never mistaken for a torn tail; the node must refuse to start;
   * `tqlite repair` makes it a spare and moves the damaged data aside; it then rejoins. */
  private async bitflip(record: FaultRecord): Promise<void> {
    if (this.broken.size > 0) {
      // Damaging a second node while one is lost could leave no majority with intact data.
      record.description = `bitflip skipped: node ${[...this.broken].join(", ")} is still lost`
      return
    }
    const live = this.nodes.filter((node) => !this.broken.has(node.index))
    const node = this.prng.pick(live)
    const others = this.nodes.filter((n) => n !== node).map((n) => n.address)
    const logDir = path.join(node.dataDir, "log")
    record.startedAt = Date.now()
    await node.kill()
    const segments = fs.readdirSync(logDir).filter((name) => /^log-\d{20}\.seg$/.test(name)).sort()
    if (segments.length === 0) throw new Error(`node ${node.index} has no log segment to damage`)
    const segment = path.join(logDir, segments[0]!)
    const size = fs.statSync(segment).size
    if (size < 64) throw new Error(`segment ${segment} has only ${size} bytes`)
    const offset = this.prng.int(16, Math.floor(size / 2))
    const bit = this.prng.int(0, 7)
    const fd = fs.openSync(segment, "r+")
    const byte = Buffer.alloc(1)
    fs.readSync(fd, byte, 0, 1, offset)
    byte[0] = byte[0]! ^ (1 << bit)
    fs.writeSync(fd, byte, 0, 1, offset)
    fs.closeSync(fd)
    record.description = `bit ${bit} of byte ${offset} flipped in ${segments.length > 1 ? "closed" : "the only (active)"} segment ${segments[0]} (${size} bytes) of node ${node.index}`
    node.start([], { mayExit: true })
    const exit = await node.exitWithin(refuseToStartMs)
    if (exit === null) {
      record.notes.push(`node ${node.index} started despite the flipped bit`)
      return
    }
    record.notes.push(`node ${node.index} refused to start (exit ${exit.code ?? exit.signal})`)
    const repair = node.spawnCli(["repair", "--data-dir", node.dataDir, "--servers", others.join(",")])
    const repaired = await Promise.race([repair.exit, sleep(repairTimeoutMs).then(() => null)])
    if (repaired === null) {
      repair.child.kill("SIGKILL")
      this.broken.add(node.index)
      throw new Error(`tqlite repair of node ${node.index} did not finish within ${repairTimeoutMs} ms (see ${node.logFile})`)
    }
    if (repaired.code !== 0) {
      this.broken.add(node.index)
      throw new Error(`tqlite repair of node ${node.index} exited ${repaired.code ?? repaired.signal} (see ${node.logFile})`)
    }
    record.restartedAt = Date.now()
    node.start()
    const again = await node.exitWithin(10_000)
    if (again !== null) {
      this.broken.add(node.index)
      throw new Error(`node ${node.index} exited ${again.code ?? again.signal} after its repair (see ${node.logFile})`)
    }
    record.notes.push(`repaired and restarted`)
  }

  /** Heals everything: links, pauses, full disks, and nodes that are down (an unexpected exit
   * is noted on the fault during which it happened). */
  async healAll(record: FaultRecord | null): Promise<void> {
    await healNetwork()
    for (const fill of this.fillFiles) fs.rmSync(fill, { force: true })
    this.fillFiles.clear()
    for (const node of this.nodes) {
      if (node.paused) node.resume()
      while (node.unexpectedExits.length > 0) {
        const exit = node.unexpectedExits.shift()!
        const what = `node ${node.index} exited on its own (${exit.code ?? exit.signal}) at ${new Date(exit.atMs).toISOString()}`
        if (record !== null) record.notes.push(what)
        else this.log(what)
        this.exits.push({ node: node.index, atMs: exit.atMs, code: exit.code, signal: exit.signal, during: record?.kind ?? null })
      }
      if (!node.running && !this.broken.has(node.index)) node.start()
    }
    // Healed means every node is back: one fault at a time, never two by a slow restart.
    for (const node of this.nodes) {
      if (this.broken.has(node.index)) continue
      const up = await eventually(`node ${node.index} to answer /metrics`, () => node.indexes(), nodeUpTimeoutMs).then(() => true, () => false)
      if (!up) {
        const what = `node ${node.index} did not come back within ${nodeUpTimeoutMs} ms`
        if (record !== null) record.problem ??= what
        else this.log(what)
      }
    }
    if (record !== null) record.upAt = Date.now()
    // …and the cluster whole again: a repaired node is a spare until it has caught up, and a
    // fault on a voter before then can cost the majority for good (two damaged logs of three).
    const voters = Math.min(this.voterTarget, this.nodes.length - this.broken.size)
    const whole = await eventually(`${voters} voters again`, () =>
      withClient(this.servers, "chaos", (client) => client.cluster).then((members) =>
        members.filter((m) => m.role === "voter").length >= voters ? true : null), wholeTimeoutMs).then(() => true, () => false)
    if (!whole) {
      const what = `the cluster did not have ${voters} voters again within ${wholeTimeoutMs} ms`
      if (record !== null) record.problem ??= what
      else this.log(what)
    }
  }

  /** Every exit nobody asked for, with the fault in progress. */
  readonly exits: Array<{ node: number; atMs: number; code: number | null; signal: NodeJS.Signals | null; during: FaultKind | null }> = []

  /** Waits until the cluster names a leader that answers. */
  async leader(timeoutMs: number): Promise<string> {
    return await eventually("a leader", () => leaderOf(this.servers), timeoutMs)
  }
}

function shuffle<A>(prng: Prng, items: ReadonlyArray<A>): Array<A> {
  const out = [...items]
  for (let i = out.length - 1; i > 0; i--) {
    const j = prng.int(0, i)
    ;[out[i], out[j]] = [out[j]!, out[i]!]
  }
  return out
}
