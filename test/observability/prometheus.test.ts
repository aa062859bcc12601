// The Prometheus renderer on its own, over real Effect metrics: exact lines for escaping and
// histograms, type conflicts left out, every output accepted by the strict parser — and the
// parser itself refusing what Prometheus would refuse.
import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Metric, MetricBoundaries } from "effect"
import { escapeLabelValue, formatValue, labelName, metricName, renderPrometheus } from "../../src/observability/prometheus.ts"
import { ExpositionError, parseExposition, sampleValue } from "./exposition.ts"

let unique = 0
/** Metric names no other test in this process uses (Effect's registry is global). */
const fresh = (base: string) => `${base}_${process.pid}_${++unique}`

const snapshotOf = (...names: ReadonlyArray<string>) =>
  Effect.map(Metric.snapshot, (pairs) => pairs.filter((pair) => names.includes(pair.metricKey.name)))

describe("renderPrometheus", () => {
  it.effect("escapes label values and HELP text, and sorts families and series", () =>
    Effect.gen(function*() {
      const name = fresh("test_gauge")
      const gauge = Metric.gauge(name, { description: "a help text with \\ and\na newline" })
      yield* Metric.set(Metric.tagged(gauge, "path", "C:\\dir \"quoted\"\nnext"), 2.5)
      yield* Metric.set(Metric.tagged(gauge, "path", "plain"), -1)
      const { text, conflicts } = renderPrometheus(yield* snapshotOf(name))
      expect(conflicts).toEqual([])
      expect(text).toBe(
        `# HELP ${name} a help text with \\\\ and\\na newline\n` +
          `# TYPE ${name} gauge\n` +
          `${name}{path="C:\\\\dir \\"quoted\\"\\nnext"} 2.5\n` +
          `${name}{path="plain"} -1\n`
      )
      const parsed = parseExposition(text)
      expect(parsed.get(name)?.help).toBe("a help text with \\ and\na newline")
      expect(sampleValue(parsed, name, { path: "C:\\dir \"quoted\"\nnext" })).toBe(2.5)
    }))

  it.effect("writes a histogram as cumulative buckets ending in +Inf, then _sum and _count", () =>
    Effect.gen(function*() {
      const name = fresh("test_latency_seconds")
      const histogram = Metric.histogram(name, MetricBoundaries.fromIterable([1, 2, 5]), "latency").pipe(Metric.tagged("node_id", "7"))
      for (const value of [0.5, 1, 1.5, 3, 10]) yield* Metric.update(histogram, value)
      const { text } = renderPrometheus(yield* snapshotOf(name))
      expect(text).toBe(
        `# HELP ${name} latency\n` +
          `# TYPE ${name} histogram\n` +
          `${name}_bucket{node_id="7",le="1"} 2\n` +
          `${name}_bucket{node_id="7",le="2"} 3\n` +
          `${name}_bucket{node_id="7",le="5"} 4\n` +
          `${name}_bucket{node_id="7",le="+Inf"} 5\n` +
          `${name}_sum{node_id="7"} 16\n` +
          `${name}_count{node_id="7"} 5\n`
      )
      expect(parseExposition(text).get(name)?.type).toBe("histogram")
    }))

  it.effect("writes an empty histogram with zero buckets", () =>
    Effect.gen(function*() {
      const name = fresh("test_empty_seconds")
      const histogram = Metric.histogram(name, MetricBoundaries.fromIterable([0.1]))
      yield* Effect.sync(() => histogram.register())
      const { text } = renderPrometheus(yield* snapshotOf(name))
      expect(text).toBe(`# TYPE ${name} histogram\n${name}_bucket{le="0.1"} 0\n${name}_bucket{le="+Inf"} 0\n${name}_sum 0\n${name}_count 0\n`)
      parseExposition(text)
    }))

  it.effect("renders counters (number and bigint), frequencies and summaries the parser accepts", () =>
    Effect.gen(function*() {
      const counter = fresh("test_requests_total")
      const big = fresh("test_bytes_total")
      const frequency = fresh("test_words")
      const summary = fresh("test_summary")
      yield* Metric.incrementBy(Metric.counter(counter, { incremental: true }), 3)
      yield* Metric.incrementBy(Metric.counter(big, { bigint: true, incremental: true }), 12345678901234567890n)
      yield* Metric.update(Metric.frequency(frequency), "a\"b")
      yield* Metric.update(Metric.frequency(frequency), "a\"b")
      yield* Metric.update(Metric.frequency(frequency), "c")
      const s = Metric.summary({ name: summary, maxAge: Duration.minutes(1), maxSize: 10, error: 0.01, quantiles: [0.5, 0.99] })
      for (const value of [1, 2, 3]) yield* Metric.update(s, value)
      const { text } = renderPrometheus(yield* snapshotOf(counter, big, frequency, summary))
      expect(text).toContain(`${big} 12345678901234567890\n`)
      expect(text).toContain(`${frequency}{key="a\\"b"} 2\n`)
      const parsed = parseExposition(text)
      expect(parsed.get(counter)?.type).toBe("counter")
      expect(sampleValue(parsed, counter)).toBe(3)
      expect(sampleValue(parsed, frequency, { key: "c" })).toBe(1)
      expect(parsed.get(summary)?.type).toBe("summary")
      expect(sampleValue(parsed, `${summary}_count`)).toBe(3)
      expect(sampleValue(parsed, `${summary}_sum`)).toBe(6)
    }))

  it.effect("writes a counter that may go down (not incremental) as a gauge", () =>
    Effect.gen(function*() {
      const name = fresh("test_active")
      const upDown = Metric.counter(name)
      yield* Metric.incrementBy(upDown, 5)
      yield* Metric.incrementBy(upDown, -2)
      const { text } = renderPrometheus(yield* snapshotOf(name))
      expect(text).toBe(`# TYPE ${name} gauge\n${name} 3\n`)
    }))

  it.effect("leaves out a metric whose name another type already uses, and says so", () =>
    Effect.gen(function*() {
      const name = fresh("test_clash")
      yield* Metric.increment(Metric.counter(name, { incremental: true }))
      yield* Metric.set(Metric.gauge(name), 5)
      const { text, conflicts } = renderPrometheus(yield* snapshotOf(name))
      expect(conflicts.length).toBe(1)
      expect(conflicts[0]!.name).toBe(name)
      const parsed = parseExposition(text)
      expect(parsed.size).toBe(1)
      expect(parsed.get(name)?.samples.length).toBe(1)
    }))

  it.effect("makes names and label names legal", () =>
    Effect.gen(function*() {
      const raw = `${fresh("test")}.with-dots`
      yield* Metric.set(Metric.tagged(Metric.gauge(raw), "bad-label", "v"), 1)
      const { text } = renderPrometheus(yield* snapshotOf(raw))
      const name = metricName(raw)
      expect(name).toMatch(/^test_\d+_\d+_with_dots$/)
      expect(text).toContain(`${name}{bad_label="v"} 1\n`)
      parseExposition(text)
    }))

  it("formats values and names as Prometheus reads them", () => {
    expect(formatValue(Number.POSITIVE_INFINITY)).toBe("+Inf")
    expect(formatValue(Number.NEGATIVE_INFINITY)).toBe("-Inf")
    expect(formatValue(Number.NaN)).toBe("NaN")
    expect(formatValue(1e21)).toBe("1e+21")
    expect(formatValue(0.00025)).toBe("0.00025")
    expect(metricName("9lives")).toBe("_9lives")
    expect(labelName("le-x")).toBe("le_x")
    expect(escapeLabelValue("a\\b\"c\nd")).toBe("a\\\\b\\\"c\\nd")
  })
})

describe("the strict exposition parser used by these tests", () => {
  const refuses = (text: string, why: RegExp) => expect(() => parseExposition(text)).toThrow(why)

  it("accepts a well-formed exposition", () => {
    const parsed = parseExposition("# HELP x doc\n# TYPE x counter\nx{a=\"1\"} 2\nx{a=\"2\"} 3 1700000000000\n")
    expect(sampleValue(parsed, "x", { a: "2" })).toBe(3)
  })

  it("refuses what Prometheus would refuse", () => {
    refuses("# TYPE h histogram\nh_bucket{le=\"1\"} 3\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 2\n", /not cumulative/)
    refuses("# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n", /\+Inf/)
    refuses("# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 3\n", /≠ _count/)
    refuses("# TYPE x gauge\n# TYPE x gauge\nx 1\n", /second TYPE/)
    refuses("x 1\n# TYPE x gauge\n", /after its samples/)
    refuses("# TYPE x gauge\nx 1\n# TYPE y gauge\ny 1\nx{a=\"b\"} 2\n", /appears again/)
    refuses("x{a=\"\\t\"} 1\n", /unknown escape/)
    refuses("x{a=\"1\"} 1\nx{a=\"1\"} 2\n", /duplicate series/)
    refuses("x 1", /newline/)
    refuses("x one\n", /bad value/)
    refuses("# TYPE x counter\nx -1\n", /negative/)
    refuses("x{a=\"1\",a=\"2\"} 1\n", /twice/)
    expect(() => parseExposition("x{9a=\"1\"} 1\n")).toThrow(ExpositionError)
  })
})
