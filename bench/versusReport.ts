// The pure half of `versus-dqlite` and `long-query`: parsing --rows, the ratio table, the SVG
// plot and the long query's pass/fail verdicts. No processes, no clock: unit-tested in
// test/bench/versusReport.test.ts.
import type { DqloadResult } from "./dqload.ts"

export type Workload = "kvwrite" | "kvreadwrite"
export type System = "dqlite" | "tqlite"

export interface RowSpec {
  readonly workload: Workload
  readonly workers: number
}

export const defaultRows = "kvwrite:1,kvwrite:8,kvwrite:64,kvreadwrite:1,kvreadwrite:64"

/** dqload's pool has ≤ 500 connections; more workers would only queue inside database/sql. */
export const workersMax = 500

export class RowsInvalid extends Error {
  override readonly name = "RowsInvalid"
}

/** "kvwrite:1,kvreadwrite:64" → rows; throws RowsInvalid naming the bad item. */
export function parseRows(text: string): Array<RowSpec> {
  const items = text.split(",").map((s) => s.trim()).filter((s) => s !== "")
  if (items.length === 0) throw new RowsInvalid(`--rows is empty; e.g. ${defaultRows}`)
  return items.map((item) => {
    const match = /^(kvwrite|kvreadwrite):(\d+)$/.exec(item)
    if (match === null) throw new RowsInvalid(`--rows item "${item}" is not WORKLOAD:WORKERS with WORKLOAD kvwrite or kvreadwrite`)
    const workers = Number(match[2])
    if (workers < 1 || workers > workersMax) throw new RowsInvalid(`--rows item "${item}": workers must be 1..${workersMax}`)
    return { workload: match[1] as Workload, workers }
  })
}

/** One system's outcome in a row: dqload's result, or why there is none. */
export type Outcome = { readonly result: DqloadResult } | { readonly error: string }

export interface RowResult {
  readonly spec: RowSpec
  /** Which system ran first in this row (they alternate). */
  readonly first: System
  readonly dqlite: Outcome
  readonly tqlite: Outcome
  /** Each server process's CPU time (utime + stime, µs) over the system's run in this row, in the
   * order of its servers; absent when not measured. */
  readonly cpuMicros?: Readonly<Record<System, ReadonlyArray<number>>>
}

const resultOf = (outcome: Outcome): DqloadResult | null => ("result" in outcome ? outcome.result : null)

/** tqlite's successful ops/s over dqlite's; null when either has no result or dqlite has 0. */
export function ratio(row: RowResult): number | null {
  const d = resultOf(row.dqlite)
  const t = resultOf(row.tqlite)
  if (d === null || t === null || d.ok_per_s === 0) return null
  return t.ok_per_s / d.ok_per_s
}

const thousands = (n: number) => Math.round(n).toLocaleString("en-US")

/** "busy 145,478, timeout 3" or "0 errors"; read_missing rides along since it is a wrong answer. */
export function errorsText(result: DqloadResult): string {
  const kinds = Object.entries(result.error_kinds).filter(([, n]) => n > 0).map(([kind, n]) => `${kind} ${thousands(n)}`)
  if (result.read_missing > 0) kinds.push(`of which reads missing ${thousands(result.read_missing)}`)
  return kinds.length === 0 ? "0 errors" : kinds.join(", ")
}

export function cellText(outcome: Outcome): string {
  const result = resultOf(outcome)
  if (result === null) return `failed: ${"error" in outcome ? outcome.error.replaceAll("|", "/").slice(0, 120) : ""}`
  return `${thousands(result.ok_per_s)} (p50 ${result.p50_ms.toFixed(2)} ms, p99 ${result.p99_ms.toFixed(2)} ms; ${errorsText(result)})`
}

export interface LoadAverages {
  readonly before: ReadonlyArray<number>
  readonly after: ReadonlyArray<number>
  readonly cpus: number
}

export function loadLine(load: LoadAverages): string {
  const f = (l: ReadonlyArray<number>) => l.map((x) => x.toFixed(2)).join(" ")
  const busiest = Math.max(...load.before, ...load.after)
  const noisy = busiest > load.cpus * 0.5 ? ` — NOISY: load above half of ${load.cpus} CPUs; rerun on a quiet machine before trusting ratios` : ""
  return `machine load (1/5/15 min) before ${f(load.before)}, after ${f(load.after)}, ${load.cpus} CPUs${noisy}`
}

/** The Markdown table: workload | workers | dqlite ok/s (…) | tqlite ok/s (…) | ratio. */
export function formatTable(rows: ReadonlyArray<RowResult>): string {
  const lines = [
    "| workload | workers | dqlite ok/s | tqlite ok/s | tqlite / dqlite |",
    "|---|--:|---|---|--:|"
  ]
  for (const row of rows) {
    const r = ratio(row)
    lines.push(`| ${row.spec.workload} | ${row.spec.workers} | ${cellText(row.dqlite)} | ${cellText(row.tqlite)} | ${r === null ? "—" : r.toFixed(2)} |`)
  }
  return lines.join("\n")
}

/** CPU µs per successful op for one system in a row: all three nodes, and the busiest one; null
 * without a measure or without an ok op. dqload's warm-up is inside the measured span, so this
 * errs high by the warm-up's share. */
export function cpuPerOk(row: RowResult, system: System, seconds: number): { readonly total: number; readonly busiest: number } | null {
  const result = resultOf(row[system])
  const cpu = row.cpuMicros?.[system]
  if (result === null || cpu === undefined || cpu.length === 0) return null
  const ok = result.ok_per_s * seconds
  if (ok <= 0) return null
  return { total: cpu.reduce((a, b) => a + b, 0) / ok, busiest: Math.max(...cpu) / ok }
}

/** The CPU table: what each system's servers spent per successful op, side by side. A measure the
 * machine's load moves far less than ops/s (a busy core slows both the work and the count). */
export function formatCpuTable(rows: ReadonlyArray<RowResult>, seconds: number): string {
  const lines = [
    "| workload | workers | dqlite CPU µs per ok op: 3 nodes (busiest) | tqlite CPU µs per ok op: 3 nodes (busiest) | tqlite / dqlite |",
    "|---|--:|--:|--:|--:|"
  ]
  const cell = (c: { total: number; busiest: number } | null) => c === null ? "—" : `${thousands(c.total)} (${thousands(c.busiest)})`
  for (const row of rows) {
    const d = cpuPerOk(row, "dqlite", seconds)
    const t = cpuPerOk(row, "tqlite", seconds)
    lines.push(`| ${row.spec.workload} | ${row.spec.workers} | ${cell(d)} | ${cell(t)} | ${d === null || t === null || d.total === 0 ? "—" : (t.total / d.total).toFixed(2)} |`)
  }
  return lines.join("\n")
}

// ---------------------------------------------------------------------------------------------
// SVG plot: ok/s by workers, log x, one line per system and workload
// ---------------------------------------------------------------------------------------------

const escapeXml = (s: string) => s.replace(/[<>&"']/g, (c) => `&#${c.charCodeAt(0)};`)

/** Round tick values from 0 to at least `max`: steps of 1, 2 or 5 × 10^k, about five ticks. */
export function niceTicks(max: number): Array<number> {
  if (!(max > 0)) return [0, 1]
  const rough = max / 5
  const power = 10 ** Math.floor(Math.log10(rough))
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= rough) ?? 10 * power
  const ticks: Array<number> = []
  for (let v = 0; v < max + step; v += step) ticks.push(v)
  return ticks
}

export interface Series {
  readonly system: System
  readonly workload: Workload
  readonly points: ReadonlyArray<{ readonly workers: number; readonly okPerSecond: number }>
}

export function seriesOf(rows: ReadonlyArray<RowResult>): Array<Series> {
  const series: Array<Series> = []
  for (const system of ["dqlite", "tqlite"] as const) {
    for (const workload of ["kvwrite", "kvreadwrite"] as const) {
      const points = rows
        .filter((row) => row.spec.workload === workload)
        .flatMap((row) => {
          const result = resultOf(row[system])
          return result === null ? [] : [{ workers: row.spec.workers, okPerSecond: result.ok_per_s }]
        })
        .sort((a, b) => a.workers - b.workers)
      if (points.length > 0) series.push({ system, workload, points })
    }
  }
  return series
}

const colors: Record<System, string> = { dqlite: "#1f77b4", tqlite: "#d62728" }
const dashes: Record<Workload, string> = { kvwrite: "", kvreadwrite: "6 4" }

export function renderSvg(rows: ReadonlyArray<RowResult>, title: string): string {
  const width = 760
  const height = 440
  const left = 80
  const right = 200
  const top = 40
  const bottom = 60
  const plotW = width - left - right
  const plotH = height - top - bottom
  const series = seriesOf(rows)
  const workers = [...new Set(rows.map((r) => r.spec.workers))].sort((a, b) => a - b)
  const xMin = Math.log10(workers[0] ?? 1)
  const xMaxRaw = Math.log10(workers.at(-1) ?? 10)
  const xMax = xMaxRaw > xMin ? xMaxRaw : xMin + 1
  const x = (w: number) => left + ((Math.log10(w) - xMin) / (xMax - xMin)) * plotW
  const yTicks = niceTicks(Math.max(1, ...series.flatMap((s) => s.points.map((p) => p.okPerSecond))))
  const yMax = yTicks.at(-1)!
  const y = (v: number) => top + plotH - (v / yMax) * plotH
  const parts: Array<string> = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="${width}" height="${height}" fill="white"/>`,
    `<text x="${left + plotW / 2}" y="22" text-anchor="middle" font-size="14">${escapeXml(title)}</text>`,
    `<line x1="${left}" y1="${top + plotH}" x2="${left + plotW}" y2="${top + plotH}" stroke="black"/>`,
    `<line x1="${left}" y1="${top}" x2="${left}" y2="${top + plotH}" stroke="black"/>`
  ]
  for (const w of workers) {
    parts.push(`<line x1="${x(w).toFixed(1)}" y1="${top + plotH}" x2="${x(w).toFixed(1)}" y2="${top + plotH + 5}" stroke="black"/>`)
    parts.push(`<text x="${x(w).toFixed(1)}" y="${top + plotH + 20}" text-anchor="middle">${w}</text>`)
  }
  parts.push(`<text x="${left + plotW / 2}" y="${height - 15}" text-anchor="middle">workers (log scale)</text>`)
  for (const v of yTicks) {
    parts.push(`<line x1="${left - 5}" y1="${y(v).toFixed(1)}" x2="${left + plotW}" y2="${y(v).toFixed(1)}" stroke="#ddd"/>`)
    parts.push(`<text x="${left - 8}" y="${(y(v) + 4).toFixed(1)}" text-anchor="end">${thousands(v)}</text>`)
  }
  parts.push(`<text transform="translate(18 ${top + plotH / 2}) rotate(-90)" text-anchor="middle">successful ops/s</text>`)
  series.forEach((s, i) => {
    const stroke = `stroke="${colors[s.system]}"${dashes[s.workload] === "" ? "" : ` stroke-dasharray="${dashes[s.workload]}"`}`
    const points = s.points.map((p) => `${x(p.workers).toFixed(1)},${y(p.okPerSecond).toFixed(1)}`).join(" ")
    parts.push(`<polyline class="series" data-system="${s.system}" data-workload="${s.workload}" points="${points}" fill="none" stroke-width="2" ${stroke}/>`)
    for (const p of s.points) parts.push(`<circle cx="${x(p.workers).toFixed(1)}" cy="${y(p.okPerSecond).toFixed(1)}" r="3" fill="${colors[s.system]}"/>`)
    const ly = top + 10 + i * 22
    parts.push(`<line x1="${left + plotW + 15}" y1="${ly}" x2="${left + plotW + 45}" y2="${ly}" stroke-width="2" ${stroke}/>`)
    parts.push(`<text x="${left + plotW + 52}" y="${ly + 4}">${s.system} ${s.workload}</text>`)
  })
  parts.push("</svg>")
  return parts.join("\n") + "\n"
}

// ---------------------------------------------------------------------------------------------
// long-query: the issue's targets while a long read runs on the leader
// ---------------------------------------------------------------------------------------------

/** Nearest-rank percentile (as dqload computes its own); NaN for no values. */
export function percentile(values: ReadonlyArray<number>, p: number): number {
  if (values.length === 0) return Number.NaN
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!
}

export interface LongQueryMeasurement {
  readonly system: System
  readonly baseline: DqloadResult
  /** The load while the query ran; an error when dqload gave no result. */
  readonly during: Outcome
  readonly query: { readonly seconds: number; readonly error: string | null }
  /** Latencies (ms) of the SELECT 1 probes answered during the query; for the failed ones,
   * how long each waited for its error. */
  readonly probeLatenciesMs: ReadonlyArray<number>
  readonly probeFailuresAfterMs: ReadonlyArray<number>
  /** Elections won from the query's start to a little after its end; null when unknown. */
  readonly leaderChanges: number | null
  readonly leaderBefore: string
  readonly leaderAfter: string
}

export interface Verdict {
  readonly target: string
  readonly pass: boolean
  readonly detail: string
}

export const probeTargetMs = 50
export const p99FactorMax = 2

export function verdicts(m: LongQueryMeasurement): Array<Verdict> {
  const waits = [...m.probeLatenciesMs, ...m.probeFailuresAfterMs]
  const probeMax = waits.length === 0 ? Number.NaN : Math.max(...waits)
  const changed = m.leaderChanges === null ? m.leaderBefore !== m.leaderAfter : m.leaderChanges > 0 || m.leaderBefore !== m.leaderAfter
  const during = resultOf(m.during)
  const factor = during === null ? Number.NaN : during.p99_ms / m.baseline.p99_ms
  return [
    {
      target: "no leader change",
      pass: !changed,
      detail: `leader ${m.leaderBefore} → ${m.leaderAfter}${m.leaderChanges === null ? "" : `, ${m.leaderChanges} election(s) won meanwhile`}`
    },
    {
      target: `SELECT 1 < ${probeTargetMs} ms`,
      // No answered probe is a failure too: the check must not pass by measuring nothing.
      pass: m.probeLatenciesMs.length > 0 && m.probeFailuresAfterMs.length === 0 && probeMax < probeTargetMs,
      detail: `${m.probeLatenciesMs.length} answered, ${m.probeFailuresAfterMs.length} failed; longest wait ${probeMax.toFixed(1)} ms, p99 of answered ${percentile(m.probeLatenciesMs, 99).toFixed(1)} ms`
    },
    {
      target: `kvwrite p99 ≤ ${p99FactorMax}× baseline`,
      pass: during !== null && during.ok > 0 && m.baseline.ok > 0 && factor <= p99FactorMax,
      detail: during === null
        ? `no result during the query: ${"error" in m.during ? m.during.error : ""}`
        : `p99 ${during.p99_ms.toFixed(2)} ms during vs ${m.baseline.p99_ms.toFixed(2)} ms baseline (${Number.isFinite(factor) ? factor.toFixed(2) : "—"}×); ok ${during.ok} during vs ${m.baseline.ok} baseline`
    }
  ]
}

export function formatLongQuery(m: LongQueryMeasurement): string {
  const lines = [
    `${m.system}: long query ${m.query.error === null ? `took ${m.query.seconds.toFixed(1)} s` : `failed after ${m.query.seconds.toFixed(1)} s: ${m.query.error}`}`,
    "| | kvwrite ok/s | p50 ms | p99 ms | max ms | errors |",
    "|---|--:|--:|--:|--:|---|",
    ...([["baseline", { result: m.baseline }], ["during the query", m.during]] as const).map(([label, outcome]) => {
      const r = resultOf(outcome)
      return r === null
        ? `| ${label} | — | — | — | — | ${cellText(outcome)} |`
        : `| ${label} | ${thousands(r.ok_per_s)} | ${r.p50_ms.toFixed(2)} | ${r.p99_ms.toFixed(2)} | ${r.max_ms.toFixed(2)} | ${errorsText(r)} |`
    }),
    ...verdicts(m).map((v) => `${v.pass ? "PASS" : "FAIL"}  ${v.target}: ${v.detail}`)
  ]
  return lines.join("\n")
}
