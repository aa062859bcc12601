// Why a small write waited (issue 17): the scale benchmark times every small insert on the
// monotonic clock the nodes' TQLITE_TRACE stamps use (process.hrtime, CLOCK_MONOTONIC), so each
// slow one can be laid beside what the nodes were doing at that moment:
// - `load`: one of the load's own 20 MiB transactions was in flight (client side). One writer per
//   database: a small write queued behind it waits for it, whatever else happens; reported apart.
// - `checkpoint`: a leader's checkpoint ran (`writer.checkpoint.ms`, its end and duration).
// - `snapshot`: a node was taking or installing a snapshot (`snapshot.take.start` … `.end`,
//   `snapshot.install.start` … `.end`).
// - `apply`: a node applied one entry for ≥ `applyMsMin` (`machine.apply.ms`), or an applier
//   batch took that long (`apply.batch.ms`).
// - `gc`: a garbage collection of ≥ `gcMsMin` (`gc.ms`).
// - `fsync`: a node's log append took ≥ `fsyncMsMin` from its write to its fsync (`log.write` …
//   `log.synced` of the same index): the disk, not the loop (writeback of what the load and the
//   snapshots dirtied).
// Each slow write also names the longest held event loop (`loop.held`) overlapping it, on which
// node, and the stamps inside that hold: what held it (as scripts/trace-holds.mjs prints).
// Pure functions over the stamps: the benchmark gathers them, a test feeds made-up ones.

/** A trace dump's stamps: [stage, hrtime ns, index (or ms for *.ms and loop.held)]. */
export type Stamp = readonly [string, number, number]

export interface TimedWrite {
  readonly startNs: number
  readonly endNs: number
}

export type StallCause = "load" | "checkpoint" | "snapshot" | "apply" | "gc" | "fsync"

export interface SlowWrite {
  readonly atMs: number
  readonly ms: number
  readonly causes: ReadonlyArray<StallCause>
  /** The longest event-loop hold that overlaps the write: node, ms, and the stamps inside it. */
  readonly heldBy: { readonly node: string; readonly ms: number; readonly cpuMs: number | null; readonly inside: string } | null
}

export interface StallAttribution {
  readonly thresholdMs: number
  /** Small writes slower than the threshold, slowest first (at most `listedMax`)… */
  readonly slowest: ReadonlyArray<SlowWrite>
  /** …and those of them with no load transaction in flight (the stalls that are ours). */
  readonly slowestNoLoad: ReadonlyArray<SlowWrite>
  readonly slowCount: number
  /** Per cause: slow writes that overlap it, and the longest of them. */
  readonly byCause: Readonly<Record<StallCause | "none", { readonly count: number; readonly maxMs: number }>>
  /** The longest small write that overlapped no load transaction, split by whether a snapshot or
   * checkpoint ran meanwhile: the stalls that are ours. */
  readonly noLoad: { readonly withSnapshotOrCheckpointMaxMs: number; readonly withoutMaxMs: number; readonly writes: number }
  /** Per node, its event loop's holds of ≥ `thresholdMs` (loop.held): how many, the longest, and
   * the longest of those in which the process computed (its CPU at least half the held time;
   * the others waited: a blocking syscall, or a loaded machine that did not schedule it). */
  readonly holds: Readonly<Record<string, { readonly count: number; readonly maxMs: number; readonly computingMaxMs: number; readonly computingCount: number }>>
}

const applyMsMin = 20
const gcMsMin = 20
const fsyncMsMin = 50
const listedMax = 15

interface Interval {
  readonly fromNs: number
  readonly toNs: number
}

const overlaps = (a: Interval, fromNs: number, toNs: number) => a.fromNs <= toNs && a.toNs >= fromNs

/** Intervals between a start stage and its end stage (one at a time per process; a start with no
 * end runs to `endNs`). */
function spans(stamps: ReadonlyArray<Stamp>, start: string, end: string, endNs: number): Array<Interval> {
  const out: Array<Interval> = []
  let openNs: number | null = null
  for (const [name, t] of stamps) {
    if (name === start) openNs = t
    else if (name === end && openNs !== null) {
      out.push({ fromNs: openNs, toNs: t })
      openNs = null
    }
  }
  if (openNs !== null) out.push({ fromNs: openNs, toNs: endNs })
  return out
}

/** Each log append, from its write to the fsync that covered it (`log.synced` of an index at or
 * past it). */
function appends(stamps: ReadonlyArray<Stamp>): Array<Interval> {
  const out: Array<Interval> = []
  let open: Array<{ readonly index: number; readonly t: number }> = []
  for (const [name, t, k] of stamps) {
    if (name === "log.write") open.push({ index: k, t })
    else if (name === "log.synced") {
      for (const w of open) if (w.index <= k) out.push({ fromNs: w.t, toNs: t })
      open = open.filter((w) => w.index > k)
    }
  }
  return out
}

/** Stamps whose index is a duration in ms ending at the stamp, at least `minMs`. */
function durations(stamps: ReadonlyArray<Stamp>, names: ReadonlyArray<string>, minMs: number): Array<Interval> {
  return stamps.filter(([name, , k]) => names.includes(name) && k >= minMs).map(([, t, k]) => ({ fromNs: t - k * 1e6, toNs: t }))
}

export function attributeStalls(
  writes: ReadonlyArray<TimedWrite>,
  loadTransactions: ReadonlyArray<TimedWrite>,
  nodes: ReadonlyMap<string, ReadonlyArray<Stamp>>,
  thresholdMs = 100
): StallAttribution {
  const endNs = Math.max(0, ...writes.map((w) => w.endNs))
  const kinds: Record<Exclude<StallCause, "load">, Array<Interval>> = { checkpoint: [], snapshot: [], apply: [], gc: [], fsync: [] }
  const holds: Array<{ readonly node: string; readonly interval: Interval; readonly ms: number; readonly cpuMs: number | null; readonly stamps: ReadonlyArray<Stamp> }> = []
  for (const [node, stamps] of nodes) {
    kinds.checkpoint.push(...durations(stamps, ["writer.checkpoint.ms"], 0))
    kinds.snapshot.push(...spans(stamps, "snapshot.take.start", "snapshot.take.end", endNs), ...spans(stamps, "snapshot.install.start", "snapshot.install.end", endNs))
    kinds.apply.push(...durations(stamps, ["machine.apply.ms", "apply.batch.ms"], applyMsMin))
    kinds.gc.push(...durations(stamps, ["gc.ms"], gcMsMin))
    kinds.fsync.push(...appends(stamps).filter((i) => i.toNs - i.fromNs >= fsyncMsMin * 1e6))
    stamps.forEach(([name, t, k], i) => {
      if (name !== "loop.held") return
      const next = stamps[i + 1]
      holds.push({ node, interval: { fromNs: t - k * 1e6, toNs: t }, ms: k, cpuMs: next?.[0] === "loop.held.cpu" ? next[2] : null, stamps })
    })
  }
  const loads = loadTransactions.map((l) => ({ fromNs: l.startNs, toNs: l.endNs }))
  const byCause: Record<StallCause | "none", { count: number; maxMs: number }> = {
    load: { count: 0, maxMs: 0 },
    checkpoint: { count: 0, maxMs: 0 },
    snapshot: { count: 0, maxMs: 0 },
    apply: { count: 0, maxMs: 0 },
    gc: { count: 0, maxMs: 0 },
    fsync: { count: 0, maxMs: 0 },
    none: { count: 0, maxMs: 0 }
  }
  const noLoad = { withSnapshotOrCheckpointMaxMs: 0, withoutMaxMs: 0, writes: 0 }
  const slow: Array<SlowWrite> = []
  for (const write of writes) {
    const ms = (write.endNs - write.startNs) / 1e6
    const causes: Array<StallCause> = []
    if (loads.some((l) => overlaps(l, write.startNs, write.endNs))) causes.push("load")
    for (const kind of ["checkpoint", "snapshot", "apply", "gc", "fsync"] as const) {
      if (kinds[kind].some((i) => overlaps(i, write.startNs, write.endNs))) causes.push(kind)
    }
    if (!causes.includes("load")) {
      noLoad.writes++
      if (causes.includes("snapshot") || causes.includes("checkpoint")) noLoad.withSnapshotOrCheckpointMaxMs = Math.max(noLoad.withSnapshotOrCheckpointMaxMs, ms)
      else noLoad.withoutMaxMs = Math.max(noLoad.withoutMaxMs, ms)
    }
    if (ms < thresholdMs) continue
    for (const cause of causes.length === 0 ? (["none"] as const) : causes) {
      byCause[cause].count++
      byCause[cause].maxMs = Math.max(byCause[cause].maxMs, ms)
    }
    let longest: (typeof holds)[number] | null = null
    for (const hold of holds) if (overlaps(hold.interval, write.startNs, write.endNs) && (longest === null || hold.ms > longest.ms)) longest = hold
    slow.push({
      atMs: write.startNs / 1e6,
      ms,
      causes,
      heldBy: longest === null ? null : { node: longest.node, ms: longest.ms, cpuMs: longest.cpuMs, inside: summarize(longest.stamps, longest.interval) }
    })
  }
  slow.sort((a, b) => b.ms - a.ms)
  const holdsByNode: Record<string, { count: number; maxMs: number; computingMaxMs: number; computingCount: number }> = {}
  for (const node of nodes.keys()) holdsByNode[node] = { count: 0, maxMs: 0, computingMaxMs: 0, computingCount: 0 }
  for (const hold of holds) {
    if (hold.ms < thresholdMs) continue
    const h = holdsByNode[hold.node]!
    h.count++
    h.maxMs = Math.max(h.maxMs, hold.ms)
    if (hold.cpuMs !== null && hold.cpuMs * 2 >= hold.ms) {
      h.computingCount++
      h.computingMaxMs = Math.max(h.computingMaxMs, hold.ms)
    }
  }
  return { thresholdMs, holds: holdsByNode, slowest: slow.slice(0, listedMax), slowestNoLoad: slow.filter((w) => !w.causes.includes("load")).slice(0, listedMax), slowCount: slow.length, byCause, noLoad }
}

/** The stages stamped inside a hold (20 ms of slack before it), each with up to 4 indexes. */
function summarize(stamps: ReadonlyArray<Stamp>, hold: Interval): string {
  const seen = new Map<string, Array<number>>()
  for (const [name, t, k] of stamps) {
    if (t < hold.fromNs - 20e6 || t > hold.toNs || name.startsWith("mem.") || name.startsWith("loop.held")) continue
    const list = seen.get(name) ?? []
    if (list.length < 4) list.push(k)
    seen.set(name, list)
  }
  return [...seen].map(([name, ks]) => `${name}[${ks.join(",")}]`).join(" ")
}

/** The peaks of a node's mem.* samples (MB). */
export function memoryPeaks(stamps: ReadonlyArray<Stamp>): Record<string, number> {
  const peaks: Record<string, number> = {}
  for (const [name, , k] of stamps) if (name.startsWith("mem.")) peaks[name.slice(4)] = Math.max(peaks[name.slice(4)] ?? 0, k)
  return peaks
}

export function renderAttribution(a: StallAttribution, startMs: number): string {
  const lines = [
    `small writes over ${a.thresholdMs} ms: ${a.slowCount}; by what overlapped them (a write can count under several):`,
    `  ${Object.entries(a.byCause).map(([cause, c]) => `${cause} ${c.count} (max ${c.maxMs.toFixed(0)} ms)`).join(", ")}`,
    `  no load transaction in flight (${a.noLoad.writes} writes): longest with a snapshot or checkpoint running ${a.noLoad.withSnapshotOrCheckpointMaxMs.toFixed(0)} ms, without ${a.noLoad.withoutMaxMs.toFixed(0)} ms`
  ]
  lines.push(`  event-loop holds ≥ ${a.thresholdMs} ms (computing: the process's CPU ≥ half the hold): ${Object.entries(a.holds).map(([n, h]) => `${n} ${h.count} (max ${h.maxMs} ms; computing ${h.computingCount}, max ${h.computingMaxMs} ms)`).join(", ")}`)
  const line = (w: SlowWrite) =>
    lines.push(`  ${w.ms.toFixed(0)} ms at +${(w.atMs - startMs).toFixed(0)} ms [${w.causes.join(",") || "none"}]${w.heldBy === null ? "" : ` loop of ${w.heldBy.node} held ${w.heldBy.ms} ms${w.heldBy.cpuMs === null ? "" : ` (process CPU ${w.heldBy.cpuMs} ms)`}: ${w.heldBy.inside}`}`)
  lines.push("  slowest:")
  a.slowest.slice(0, 8).forEach(line)
  lines.push("  slowest with no load transaction in flight:")
  a.slowestNoLoad.slice(0, 10).forEach(line)
  return `${lines.join("\n")}\n`
}
