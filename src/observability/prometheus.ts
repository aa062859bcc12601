// Effect's metric registry (`Metric.snapshot`) rendered as the Prometheus text exposition format
// 0.0.4: one family per metric name (one HELP, one TYPE, its samples together), label values
// escaped, histograms as cumulative `_bucket{le=…}` lines ending in `+Inf`, then `_sum` and
// `_count`. Pure: the caller takes the snapshot and decides which pairs to show.
import type { MetricPair } from "effect"
import { MetricKeyType, MetricState, Option } from "effect"

export const prometheusContentType = "text/plain; version=0.0.4; charset=utf-8"

type Untyped = MetricPair.MetricPair.Untyped
type FamilyType = "counter" | "gauge" | "histogram" | "summary"

interface Family {
  readonly name: string
  readonly type: FamilyType
  help: string | null
  /** Series by their rendered label set, so a duplicate can be refused. */
  readonly series: Map<string, { readonly labels: ReadonlyArray<readonly [string, string]>; readonly state: unknown }>
}

export interface Rendered {
  readonly text: string
  /** Pairs left out: same name as another family but another type, or the same series twice. */
  readonly conflicts: ReadonlyArray<{ readonly name: string; readonly reason: string }>
}

/** Renders `pairs` (from `Metric.snapshot`); families and series come out sorted, so two scrapes
 * of the same state are byte-identical. */
export function renderPrometheus(pairs: Iterable<Untyped>): Rendered {
  const families = new Map<string, Family>()
  const conflicts: Array<{ name: string; reason: string }> = []
  for (const pair of pairs) {
    const state: unknown = pair.metricState
    const type = familyTypeOf(pair.metricKey.keyType, state)
    const name = metricName(pair.metricKey.name)
    if (type === null) {
      conflicts.push({ name, reason: "unknown metric state" })
      continue
    }
    let family = families.get(name)
    if (family === undefined) {
      family = { name, type, help: null, series: new Map() }
      families.set(name, family)
    } else if (family.type !== type) {
      conflicts.push({ name, reason: `is a ${family.type}; a ${type} of the same name is left out` })
      continue
    }
    if (family.help === null && Option.isSome(pair.metricKey.description)) family.help = pair.metricKey.description.value
    const labels = labelsOf(pair.metricKey.tags, type)
    const key = renderLabels(labels)
    if (family.series.has(key)) {
      conflicts.push({ name, reason: `series {${key}} appears twice (same name and labels, another key type)` })
      continue
    }
    family.series.set(key, { labels, state })
  }
  const lines: string[] = []
  for (const family of [...families.values()].sort((a, b) => compare(a.name, b.name))) {
    if (family.help !== null) lines.push(`# HELP ${family.name} ${escapeHelp(family.help)}`)
    lines.push(`# TYPE ${family.name} ${family.type}`)
    for (const key of [...family.series.keys()].sort(compare)) {
      const series = family.series.get(key)!
      renderSeries(lines, family.name, series.labels, series.state)
    }
  }
  return { text: lines.length === 0 ? "" : `${lines.join("\n")}\n`, conflicts }
}

function familyTypeOf(keyType: unknown, state: unknown): FamilyType | null {
  // A counter not declared `incremental` may go down (Effect's own `effect_fiber_active` does):
  // an up-down counter, which Prometheus calls a gauge (as OpenTelemetry's exporter does).
  if (MetricState.isCounterState(state)) return MetricKeyType.isCounterKey(keyType) && keyType.incremental ? "counter" : "gauge"
  if (MetricState.isFrequencyState(state)) return "counter"
  if (MetricState.isGaugeState(state)) return "gauge"
  if (MetricState.isHistogramState(state)) return "histogram"
  if (MetricState.isSummaryState(state)) return "summary"
  return null
}

function renderSeries(lines: string[], name: string, labels: ReadonlyArray<readonly [string, string]>, state: unknown): void {
  const sample = (suffix: string, extra: ReadonlyArray<readonly [string, string]>, value: number | bigint) => {
    const set = renderLabels([...labels, ...extra])
    lines.push(`${name}${suffix}${set === "" ? "" : `{${set}}`} ${formatValue(value)}`)
  }
  if (MetricState.isCounterState(state)) return sample("", [], state.count)
  if (MetricState.isGaugeState(state)) return sample("", [], state.value)
  if (MetricState.isFrequencyState(state)) {
    // One counter per observed word, told apart by a `key` label.
    for (const word of [...state.occurrences.keys()].sort(compare)) sample("", [["key", word]], state.occurrences.get(word)!)
    return
  }
  if (MetricState.isHistogramState(state)) {
    // Effect's buckets are already cumulative and end with its own +Inf boundary; the +Inf line
    // is written from `count` so it always equals `_count`.
    let previous = 0
    for (const [boundary, cumulative] of state.buckets) {
      if (!Number.isFinite(boundary)) continue
      previous = Math.max(previous, cumulative)
      sample("_bucket", [["le", formatValue(boundary)]], previous)
    }
    sample("_bucket", [["le", "+Inf"]], Math.max(previous, state.count))
    sample("_sum", [], state.sum)
    sample("_count", [], state.count)
    return
  }
  if (MetricState.isSummaryState(state)) {
    for (const [quantile, value] of state.quantiles) sample("", [["quantile", formatValue(quantile)]], Option.getOrElse(value, () => Number.NaN))
    sample("_sum", [], state.sum)
    sample("_count", [], state.count)
  }
}

/** Tags as label pairs: names made legal, the last of a repeated name kept, names the format
 * reserves for this type (`le`, `quantile`) renamed so they cannot clash. */
function labelsOf(tags: ReadonlyArray<{ readonly key: string; readonly value: string }>, type: FamilyType): ReadonlyArray<readonly [string, string]> {
  const byName = new Map<string, string>()
  for (const tag of tags) {
    let label = labelName(tag.key)
    if ((type === "histogram" && label === "le") || (type === "summary" && label === "quantile")) label = `${label}_`
    byName.set(label, tag.value)
  }
  return [...byName].sort((a, b) => compare(a[0], b[0]))
}

function renderLabels(labels: ReadonlyArray<readonly [string, string]>): string {
  return labels.map(([label, value]) => `${label}="${escapeLabelValue(value)}"`).join(",")
}

/** A legal metric name: `[a-zA-Z_:][a-zA-Z0-9_:]*`, every other character replaced by `_`. */
export function metricName(name: string): string {
  const cleaned = name.replace(/[^a-zA-Z0-9_:]/g, "_")
  return cleaned === "" || /^[0-9]/.test(cleaned) ? `_${cleaned}` : cleaned
}

/** A legal label name: `[a-zA-Z_][a-zA-Z0-9_]*`. */
export function labelName(name: string): string {
  const cleaned = name.replace(/[^a-zA-Z0-9_]/g, "_")
  return cleaned === "" || /^[0-9]/.test(cleaned) ? `_${cleaned}` : cleaned
}

export function escapeLabelValue(value: string): string {
  return value.replace(/\\/g, "\\\\").replace(/"/g, "\\\"").replace(/\n/g, "\\n")
}

export function escapeHelp(text: string): string {
  return text.replace(/\\/g, "\\\\").replace(/\n/g, "\\n")
}

/** A sample value as Prometheus reads it (Go's ParseFloat): `+Inf`, `-Inf`, `NaN` spelled out. */
export function formatValue(value: number | bigint): string {
  if (typeof value === "bigint") return value.toString()
  if (Number.isNaN(value)) return "NaN"
  if (value === Number.POSITIVE_INFINITY) return "+Inf"
  if (value === Number.NEGATIVE_INFINITY) return "-Inf"
  return String(value)
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0
}
