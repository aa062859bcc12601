// The pure half of `npm run bench -- versus-dqlite` and `long-query` (bench/versusReport.ts,
// bench/dqload.ts's parser): --rows, dqload's JSON, the ratio table, the SVG plot, and the long
// query's verdicts — each verdict shown to fail when its own input is made bad.
import { describe, expect, it } from "vitest"
import { DqloadOutputInvalid, type DqloadResult, parseDqloadOutput } from "../../bench/dqload.ts"
import { UsageError, wholeSeconds } from "../../bench/versusDqlite.ts"
import {
  cpuPerOk,
  defaultRows,
  formatCpuTable,
  formatTable,
  type LongQueryMeasurement,
  loadLine,
  niceTicks,
  parseRows,
  percentile,
  ratio,
  renderSvg,
  type RowResult,
  RowsInvalid,
  seriesOf,
  verdicts
} from "../../bench/versusReport.ts"

const result = (over: Partial<DqloadResult> = {}): DqloadResult => ({
  workload: "kvwrite",
  workers: 1,
  wall_s: 10,
  ok: 5000,
  ok_per_s: 500,
  errors: 0,
  error_kinds: { busy: 0, notleader: 0, timeout: 0, conn: 0, other: 0 },
  p50_ms: 1.5,
  p99_ms: 5,
  max_ms: 50,
  mean_ms: 2,
  read_missing: 0,
  acked_writes: 5000,
  ...over
})

// What dqload --json prints (the text line, then the JSON line), abridged from a real run.
const realOutput = `dqload: kvwrite workers=8 secs=2 ok=352 ok_per_s=175.6 errors=24420 (busy=24420 notleader=0 timeout=0 conn=0 other=0) p50_ms=4.110 p99_ms=43.220 max_ms=61.000
{"workload":"kvwrite","workers":8,"secs":2,"wall_s":2.004,"ok":352,"ok_per_s":175.6,"errors":24420,"error_kinds":{"busy":24420,"conn":0,"notleader":0,"other":0,"timeout":0},"read_missing":0,"p50_ms":4.11,"p99_ms":43.22,"max_ms":61,"mean_ms":5.2,"acked_writes":352,"driver_connects":9,"driver_badconn_notleader":0,"driver_badconn_network":0,"servers":"127.0.0.1:1","db":"row1","leader":"127.0.0.1:1"}
`

describe("versus-dqlite: arguments", () => {
  it("parses --rows and names the bad item", () => {
    expect(parseRows(defaultRows)).toEqual([
      { workload: "kvwrite", workers: 1 },
      { workload: "kvwrite", workers: 8 },
      { workload: "kvwrite", workers: 64 },
      { workload: "kvreadwrite", workers: 1 },
      { workload: "kvreadwrite", workers: 64 }
    ])
    expect(parseRows(" kvreadwrite:3 ")).toEqual([{ workload: "kvreadwrite", workers: 3 }])
    for (const [bad, named] of [["kvread:1", "kvread:1"], ["kvwrite", "kvwrite"], ["kvwrite:0", "1..500"], ["kvwrite:501", "1..500"], ["kvwrite:1,x:2", "x:2"], ["", "empty"]]) {
      expect(() => parseRows(bad!)).toThrow(RowsInvalid)
      expect(() => parseRows(bad!)).toThrow(named!)
    }
  })

  it("takes whole seconds only", () => {
    expect(wholeSeconds(["--seconds", "3"], "seconds", 10)).toBe(3)
    expect(wholeSeconds([], "seconds", 10)).toBe(10)
    for (const bad of ["0", "1.5", "x", "-2"]) expect(() => wholeSeconds(["--seconds", bad], "seconds", 10)).toThrow(UsageError)
  })
})

describe("dqload's output", () => {
  it("reads the JSON line of a real run", () => {
    const parsed = parseDqloadOutput(realOutput)
    expect(parsed.ok_per_s).toBe(175.6)
    expect(parsed.error_kinds["busy"]).toBe(24420)
    expect(parsed.p99_ms).toBe(43.22)
    expect(parsed.driver_connects).toBe(9)
  })

  it("refuses output without a result, or a result without a field, saying which", () => {
    expect(() => parseDqloadOutput("dqload: no leader found\n")).toThrow(DqloadOutputInvalid)
    expect(() => parseDqloadOutput("{not json\n")).toThrow("not JSON")
    const withoutP99 = realOutput.replace(`"p99_ms":43.22,`, "")
    expect(() => parseDqloadOutput(withoutP99)).toThrow("p99_ms")
  })
})

describe("versus-dqlite: the table", () => {
  const rows: Array<RowResult> = [
    { spec: { workload: "kvwrite", workers: 1 }, first: "dqlite", dqlite: { result: result({ ok_per_s: 500 }) }, tqlite: { result: result({ ok_per_s: 250, p50_ms: 3.64 }) } },
    {
      spec: { workload: "kvwrite", workers: 8 },
      first: "tqlite",
      dqlite: { result: result({ ok_per_s: 361, errors: 145478, error_kinds: { busy: 145478, other: 0 } }) },
      tqlite: { result: result({ ok_per_s: 947 }) }
    },
    { spec: { workload: "kvreadwrite", workers: 64 }, first: "dqlite", dqlite: { error: "dqload exited (code 2) | no leader" }, tqlite: { result: result({ ok_per_s: 2503 }) } }
  ]

  it("divides tqlite's ok/s by dqlite's, and has no ratio without both", () => {
    expect(ratio(rows[0]!)).toBe(0.5)
    expect(ratio(rows[1]!)).toBeCloseTo(947 / 361, 9)
    expect(ratio(rows[2]!)).toBeNull()
    expect(ratio({ ...rows[0]!, dqlite: { result: result({ ok_per_s: 0 }) } })).toBeNull()
  })

  it("prints one row per workload and workers, with latencies and errors by kind", () => {
    const lines = formatTable(rows).split("\n")
    expect(lines).toHaveLength(2 + rows.length)
    expect(lines[2]).toBe("| kvwrite | 1 | 500 (p50 1.50 ms, p99 5.00 ms; 0 errors) | 250 (p50 3.64 ms, p99 5.00 ms; 0 errors) | 0.50 |")
    expect(lines[3]).toContain("361 (p50 1.50 ms, p99 5.00 ms; busy 145,478)")
    expect(lines[3]).toMatch(/\| 2\.62 \|$/)
    // A failed run is shown, and its text cannot break the Markdown table.
    expect(lines[4]).toContain("failed: dqload exited (code 2) / no leader")
    expect(lines[4]!.split("|")).toHaveLength(7)
    expect(lines[4]).toMatch(/\| — \|$/)
  })

  it("divides each system's server CPU by its ok ops: all nodes and the busiest, and none without a measure", () => {
    const measured: RowResult = { ...rows[0]!, cpuMicros: { dqlite: [2_000_000, 500_000, 500_000], tqlite: [3_000_000, 1_000_000, 1_000_000] } }
    // 10 s rows: dqlite 5,000 ok ops, tqlite 2,500.
    expect(cpuPerOk(measured, "dqlite", 10)).toEqual({ total: 600, busiest: 400 })
    expect(cpuPerOk(measured, "tqlite", 10)).toEqual({ total: 2_000, busiest: 1_200 })
    expect(cpuPerOk(rows[0]!, "tqlite", 10)).toBeNull()
    expect(cpuPerOk({ ...measured, dqlite: { error: "no leader" } }, "dqlite", 10)).toBeNull()
    const lines = formatCpuTable([measured, rows[1]!], 10).split("\n")
    expect(lines[2]).toBe("| kvwrite | 1 | 600 (400) | 2,000 (1,200) | 3.33 |")
    expect(lines[3]).toBe("| kvwrite | 8 | — | — | — |")
  })

  it("flags a loaded machine", () => {
    expect(loadLine({ before: [0.2, 0.3, 0.4], after: [0.5, 0.4, 0.4], cpus: 2 })).not.toContain("NOISY")
    expect(loadLine({ before: [0.2, 0.3, 0.4], after: [8, 3, 1], cpus: 2 })).toContain("NOISY")
  })
})

describe("versus-dqlite: the plot", () => {
  const row = (workload: "kvwrite" | "kvreadwrite", workers: number, d: number, t: number): RowResult => ({
    spec: { workload, workers }, first: "dqlite", dqlite: { result: result({ ok_per_s: d }) }, tqlite: { result: result({ ok_per_s: t }) }
  })
  const rows = [row("kvwrite", 1, 500, 200), row("kvwrite", 8, 360, 950), row("kvwrite", 64, 255, 2800), row("kvreadwrite", 1, 1000, 400), row("kvreadwrite", 64, 12000, 2500)]

  it("picks round ticks that cover the largest value", () => {
    expect(niceTicks(12000)).toEqual([0, 5000, 10000, 15000])
    expect(niceTicks(950)).toEqual([0, 200, 400, 600, 800, 1000])
    expect(niceTicks(0)).toEqual([0, 1])
  })

  it("draws one line per system and workload, workers on a log axis, ok/s upwards", () => {
    expect(seriesOf(rows).map((s) => `${s.system} ${s.workload} ${s.points.length}`)).toEqual([
      "dqlite kvwrite 3", "dqlite kvreadwrite 2", "tqlite kvwrite 3", "tqlite kvreadwrite 2"
    ])
    const svg = renderSvg(rows, "a & b <test>")
    expect(svg.startsWith("<svg xmlns=\"http://www.w3.org/2000/svg\"")).toBe(true)
    expect(svg.trim().endsWith("</svg>")).toBe(true)
    expect(svg).toContain("a &#38; b &#60;test&#62;")
    for (const legend of ["dqlite kvwrite", "tqlite kvwrite", "dqlite kvreadwrite", "tqlite kvreadwrite", "workers (log scale)", "successful ops/s"]) {
      expect(svg).toContain(`>${legend}<`)
    }
    const line = /<polyline class="series" data-system="tqlite" data-workload="kvwrite" points="([^"]+)"/.exec(svg)
    const points = line![1]!.split(" ").map((p) => p.split(",").map(Number) as [number, number])
    expect(points).toHaveLength(3)
    // Log scale: 1 → 8 and 8 → 64 are the same distance; more ok/s is higher (smaller y).
    expect(points[1]![0] - points[0]![0]).toBeCloseTo(points[2]![0] - points[1]![0], 0)
    expect(points[0]![1]).toBeGreaterThan(points[1]![1])
    expect(points[1]![1]).toBeGreaterThan(points[2]![1])
  })

  it("draws what it has when a run failed or only one worker count was run", () => {
    const svg = renderSvg([{ ...row("kvwrite", 1, 500, 200), dqlite: { error: "x" } }], "one")
    expect(svg.match(/<polyline class="series"/g)).toHaveLength(1)
    expect(svg).not.toContain("NaN")
  })
})

describe("long-query: the verdicts", () => {
  const good: LongQueryMeasurement = {
    system: "tqlite",
    baseline: result({ p99_ms: 10 }),
    during: { result: result({ p99_ms: 15 }) },
    query: { seconds: 10.2, error: null },
    probeLatenciesMs: [1, 2, 3, 40],
    probeFailuresAfterMs: [],
    leaderChanges: 0,
    leaderBefore: "127.0.0.1:1",
    leaderAfter: "127.0.0.1:1"
  }
  const passes = (m: LongQueryMeasurement) => verdicts(m).map((v) => v.pass)

  it("passes a run that meets all three targets", () => {
    expect(passes(good)).toEqual([true, true, true])
  })

  it("fails each target on its own bad input", () => {
    expect(passes({ ...good, leaderChanges: 1 })).toEqual([false, true, true])
    expect(passes({ ...good, leaderAfter: "127.0.0.1:2" })).toEqual([false, true, true])
    expect(passes({ ...good, leaderChanges: null, leaderAfter: "127.0.0.1:2" })).toEqual([false, true, true])
    expect(passes({ ...good, probeLatenciesMs: [1, 2, 50] })).toEqual([true, false, true])
    expect(passes({ ...good, probeFailuresAfterMs: [7845] })).toEqual([true, false, true])
    expect(passes({ ...good, probeLatenciesMs: [] })).toEqual([true, false, true])
    expect(passes({ ...good, during: { result: result({ p99_ms: 20.1 }) } })).toEqual([true, true, false])
    expect(passes({ ...good, during: { result: result({ p99_ms: 1, ok: 0 }) } })).toEqual([true, true, false])
    expect(passes({ ...good, during: { error: "dqload exited without a result" } })).toEqual([true, true, false])
  })

  it("reports the longest wait, counting probes that failed", () => {
    const probe = verdicts({ ...good, probeFailuresAfterMs: [7845] })[1]!
    expect(probe.detail).toContain("longest wait 7845.0 ms")
    expect(probe.detail).toContain("1 failed")
  })

  it("takes nearest-rank percentiles", () => {
    const values = Array.from({ length: 100 }, (_, i) => 100 - i)
    expect(percentile(values, 99)).toBe(99)
    expect(percentile(values, 50)).toBe(50)
    expect(percentile([7], 99)).toBe(7)
    expect(percentile([], 99)).toBeNaN()
  })
})
