// A strict parser of the Prometheus text exposition format 0.0.4, for tests: it throws on
// anything a Prometheus server would reject or that the format says must not happen (a family's
// samples split up, TYPE after a sample or twice, a duplicate series, an unknown escape, a
// histogram whose buckets are not cumulative or lack +Inf, `_count` ≠ the +Inf bucket).
export type FamilyType = "counter" | "gauge" | "histogram" | "summary" | "untyped"

export interface Sample {
  readonly name: string
  readonly labels: Readonly<Record<string, string>>
  readonly value: number
}

export interface Family {
  readonly name: string
  type: FamilyType
  help: string | null
  readonly samples: Sample[]
}

export class ExpositionError extends Error {}

const metricNamePattern = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/
const labelNamePattern = /^[a-zA-Z_][a-zA-Z0-9_]*$/
const types = new Set(["counter", "gauge", "histogram", "summary", "untyped"])

export function parseExposition(text: string): Map<string, Family> {
  if (text.length > 0 && !text.endsWith("\n")) throw new ExpositionError("the text must end with a newline")
  const families = new Map<string, Family>()
  const closed = new Set<string>()
  const seriesSeen = new Set<string>()
  // Names whose TYPE line was read.
  const typeTold = new Set<string>()
  let current: string | null = null
  const enter = (name: string, lineNumber: number) => {
    if (current === name) return
    if (closed.has(name)) throw new ExpositionError(`line ${lineNumber}: family ${name} appears again after other families`)
    if (current !== null) closed.add(current)
    current = name
  }
  const lines = text.split("\n")
  lines.pop()
  lines.forEach((line, i) => {
    const lineNumber = i + 1
    if (line.trim() === "") return
    if (line.startsWith("#")) {
      const match = /^# (HELP|TYPE) (\S+) ?(.*)$/.exec(line)
      if (match === null) return // a plain comment
      const [, keyword, name, rest] = match as unknown as [string, "HELP" | "TYPE", string, string]
      if (!metricNamePattern.test(name)) throw new ExpositionError(`line ${lineNumber}: bad metric name ${name}`)
      enter(name, lineNumber)
      let family = families.get(name)
      if (family === undefined) {
        family = { name, type: "untyped", help: null, samples: [] }
        families.set(name, family)
      }
      if (keyword === "HELP") {
        if (family.help !== null) throw new ExpositionError(`line ${lineNumber}: second HELP for ${name}`)
        family.help = unescape(rest, "help", lineNumber)
      } else {
        if (typeTold.has(name)) throw new ExpositionError(`line ${lineNumber}: second TYPE for ${name}`)
        if (family.samples.length > 0) throw new ExpositionError(`line ${lineNumber}: TYPE for ${name} after its samples`)
        if (!types.has(rest)) throw new ExpositionError(`line ${lineNumber}: unknown type ${rest}`)
        typeTold.add(name)
        family.type = rest as FamilyType
      }
      return
    }
    const sample = parseSample(line, lineNumber)
    const familyName = familyOf(sample.name, families)
    enter(familyName, lineNumber)
    let family = families.get(familyName)
    if (family === undefined) {
      family = { name: familyName, type: "untyped", help: null, samples: [] }
      families.set(familyName, family)
    }
    checkSampleName(family, sample, lineNumber)
    const key = `${sample.name}{${Object.entries(sample.labels).sort().map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(",")}}`
    if (seriesSeen.has(key)) throw new ExpositionError(`line ${lineNumber}: duplicate series ${key}`)
    seriesSeen.add(key)
    family.samples.push(sample)
  })
  for (const family of families.values()) {
    if (family.type === "histogram") checkHistogram(family)
    if (family.type === "summary") checkSummary(family)
  }
  return families
}

/** The family a sample belongs to: `x_bucket`/`x_sum`/`x_count` belong to a histogram or
 * summary family `x` when one was declared, otherwise the sample's own name. */
function familyOf(sampleName: string, families: Map<string, Family>): string {
  for (const suffix of ["_bucket", "_sum", "_count"]) {
    if (!sampleName.endsWith(suffix)) continue
    const base = sampleName.slice(0, -suffix.length)
    const family = families.get(base)
    if (family !== undefined && (family.type === "histogram" || family.type === "summary")) return base
  }
  return sampleName
}

function checkSampleName(family: Family, sample: Sample, lineNumber: number): void {
  const suffix = sample.name.slice(family.name.length)
  const ok = family.type === "histogram"
    ? suffix === "_bucket" ? "le" in sample.labels : (suffix === "_sum" || suffix === "_count") && !("le" in sample.labels)
    : family.type === "summary"
    ? suffix === "" ? "quantile" in sample.labels : (suffix === "_sum" || suffix === "_count") && !("quantile" in sample.labels)
    : suffix === ""
  if (!ok) throw new ExpositionError(`line ${lineNumber}: sample ${sample.name} does not fit ${family.type} family ${family.name}`)
  if ((family.type === "counter" || sample.name.endsWith("_count") || sample.name.endsWith("_bucket")) && sample.value < 0) {
    throw new ExpositionError(`line ${lineNumber}: ${sample.name} is negative`)
  }
}

function parseSample(line: string, lineNumber: number): Sample {
  let at = 0
  const nameMatch = /^[a-zA-Z_:][a-zA-Z0-9_:]*/.exec(line)
  if (nameMatch === null) throw new ExpositionError(`line ${lineNumber}: no metric name in ${JSON.stringify(line)}`)
  const name = nameMatch[0]
  at = name.length
  const labels: Record<string, string> = {}
  if (line[at] === "{") {
    at++
    for (;;) {
      if (line[at] === "}") {
        at++
        break
      }
      const labelMatch = /^[a-zA-Z_][a-zA-Z0-9_]*/.exec(line.slice(at))
      if (labelMatch === null) throw new ExpositionError(`line ${lineNumber}: bad label name at column ${at + 1}`)
      const label = labelMatch[0]
      if (!labelNamePattern.test(label)) throw new ExpositionError(`line ${lineNumber}: bad label name ${label}`)
      at += label.length
      if (line[at] !== "=" || line[at + 1] !== "\"") throw new ExpositionError(`line ${lineNumber}: expected ="… after ${label}`)
      at += 2
      let raw = ""
      for (;;) {
        const c = line[at]
        if (c === undefined) throw new ExpositionError(`line ${lineNumber}: unterminated label value`)
        if (c === "\"") break
        if (c === "\\") {
          raw += c + (line[at + 1] ?? "")
          at += 2
          continue
        }
        raw += c
        at++
      }
      at++
      if (label in labels) throw new ExpositionError(`line ${lineNumber}: label ${label} twice`)
      labels[label] = unescape(raw, "label", lineNumber)
      if (line[at] === ",") at++
      else if (line[at] !== "}") throw new ExpositionError(`line ${lineNumber}: expected , or } at column ${at + 1}`)
    }
  }
  if (line[at] !== " ") throw new ExpositionError(`line ${lineNumber}: expected a space before the value`)
  const parts = line.slice(at + 1).split(" ")
  if (parts.length < 1 || parts.length > 2 || parts[0] === "") throw new ExpositionError(`line ${lineNumber}: expected value [timestamp]`)
  const value = parseValue(parts[0]!, lineNumber)
  if (parts.length === 2 && !/^-?[0-9]+$/.test(parts[1]!)) throw new ExpositionError(`line ${lineNumber}: bad timestamp ${parts[1]}`)
  return { name, labels, value }
}

export function parseValue(text: string, lineNumber = 0): number {
  if (text === "+Inf" || text === "Inf") return Number.POSITIVE_INFINITY
  if (text === "-Inf") return Number.NEGATIVE_INFINITY
  if (text === "NaN") return Number.NaN
  if (!/^[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?$/.test(text)) throw new ExpositionError(`line ${lineNumber}: bad value ${text}`)
  return Number(text)
}

function unescape(raw: string, where: "help" | "label", lineNumber: number): string {
  let out = ""
  for (let i = 0; i < raw.length; i++) {
    const c = raw[i]!
    if (c !== "\\") {
      if (where === "label" && c === "\n") throw new ExpositionError(`line ${lineNumber}: raw newline in a label value`)
      out += c
      continue
    }
    const next = raw[++i]
    if (next === "\\") out += "\\"
    else if (next === "n") out += "\n"
    else if (next === "\"" && where === "label") out += "\""
    else throw new ExpositionError(`line ${lineNumber}: unknown escape \\${next ?? ""} in a ${where}`)
  }
  return out
}

function seriesKey(labels: Readonly<Record<string, string>>, without: string): string {
  return JSON.stringify(Object.entries(labels).filter(([k]) => k !== without).sort())
}

function checkHistogram(family: Family): void {
  const series = new Map<string, { buckets: Array<{ le: number; value: number }>; sum: number | null; count: number | null }>()
  const of = (labels: Readonly<Record<string, string>>) => {
    const key = seriesKey(labels, "le")
    let s = series.get(key)
    if (s === undefined) series.set(key, s = { buckets: [], sum: null, count: null })
    return s
  }
  for (const sample of family.samples) {
    const s = of(sample.labels)
    if (sample.name.endsWith("_bucket")) s.buckets.push({ le: parseValue(sample.labels.le!), value: sample.value })
    else if (sample.name.endsWith("_sum")) s.sum = sample.value
    else s.count = sample.value
  }
  for (const [key, s] of series) {
    const where = `histogram ${family.name}${key}`
    if (s.sum === null || s.count === null) throw new ExpositionError(`${where}: _sum or _count missing`)
    const last = s.buckets[s.buckets.length - 1]
    if (last === undefined || last.le !== Number.POSITIVE_INFINITY) throw new ExpositionError(`${where}: no +Inf bucket last`)
    for (let i = 1; i < s.buckets.length; i++) {
      if (!(s.buckets[i]!.le > s.buckets[i - 1]!.le)) throw new ExpositionError(`${where}: bucket bounds not increasing`)
      if (s.buckets[i]!.value < s.buckets[i - 1]!.value) throw new ExpositionError(`${where}: buckets not cumulative at le=${s.buckets[i]!.le}`)
    }
    if (last.value !== s.count) throw new ExpositionError(`${where}: +Inf bucket ${last.value} ≠ _count ${s.count}`)
  }
}

function checkSummary(family: Family): void {
  const counts = new Set<string>()
  const sums = new Set<string>()
  for (const sample of family.samples) {
    const key = seriesKey(sample.labels, "quantile")
    if (sample.name.endsWith("_count")) counts.add(key)
    if (sample.name.endsWith("_sum")) sums.add(key)
  }
  for (const sample of family.samples) {
    const key = seriesKey(sample.labels, "quantile")
    if (!counts.has(key) || !sums.has(key)) throw new ExpositionError(`summary ${family.name}${key}: _sum or _count missing`)
  }
}

/** The one sample of `name` whose labels include `labels`; throws when none or several match. */
export function sampleValue(families: Map<string, Family>, name: string, labels: Readonly<Record<string, string>> = {}): number {
  const matches = [...families.values()].flatMap((f) => f.samples).filter((s) =>
    s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v)
  )
  if (matches.length !== 1) throw new Error(`expected one sample ${name}${JSON.stringify(labels)}, found ${matches.length}`)
  return matches[0]!.value
}

/** Every sample of `name` whose labels include `labels`. */
export function samplesOf(families: Map<string, Family>, name: string, labels: Readonly<Record<string, string>> = {}): ReadonlyArray<Sample> {
  return [...families.values()].flatMap((f) => f.samples).filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))
}
