// The node's logger layer in-process: a running SqlNode logs through the chosen format, every
// line carries the node id, and the minimum level filters.
import { describe, expect, it } from "@effect/vitest"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Cause, Duration, Effect, Exit, FiberId, FiberRefs, HashMap, List, LogLevel, Scope } from "effect"
import { vi } from "vitest"
import * as SqlNodes from "../../src/node/SqlNode.ts"
import type { LogFormat } from "../../src/observability/logging.ts"
import { formatPrettyLine, loggerLayer, parseLogFormat, parseLogLevel } from "../../src/observability/logging.ts"
import { Disk } from "../../src/storage/Disk.ts"

/** Runs a single-node cluster until it leads, under `loggerLayer(format, level)`; returns the
 * node id and the lines written to the console meanwhile. */
const runNode = (format: LogFormat, level: LogLevel.LogLevel) =>
  Effect.gen(function*() {
    const lines: string[] = []
    const spy = vi.spyOn(console, "log").mockImplementation((...args: Array<unknown>) => void lines.push(args.map(String).join(" ")))
    const scope = yield* Scope.make()
    const nodeId = yield* Effect.gen(function*() {
      const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "tqlite-obs-log-"))
      const { node } = yield* SqlNodes.start({ dataDir, address: "127.0.0.1:0", join: [], tickMs: 20 }).pipe(Scope.extend(scope))
      for (let i = 0; (yield* node.raft.status).role !== "leader"; i++) {
        if (i > 200) return yield* Effect.dieMessage("no leader")
        yield* Effect.sleep(Duration.millis(20))
      }
      return String(node.identity.nodeId)
    }).pipe(
      Effect.ensuring(Scope.close(scope, Exit.void)),
      Effect.provide(Disk.layerNode),
      Effect.provide(loggerLayer(format, level)),
      Effect.ensuring(Effect.sync(() => spy.mockRestore()))
    )
    return { nodeId, lines }
  })

describe("the node's logger layer", () => {
  it.live("json: one object per line, each annotated with the node id", () =>
    Effect.gen(function*() {
      const { nodeId, lines } = yield* runNode("json", LogLevel.Info)
      expect(lines.length).toBeGreaterThan(0)
      for (const line of lines) {
        const entry = JSON.parse(line) as { message: unknown; logLevel: string; annotations: Record<string, string> }
        expect(entry.annotations.node_id).toBe(nodeId)
        expect(entry.logLevel).not.toBe("DEBUG")
      }
      expect(lines.some((l) => (JSON.parse(l) as { message: string }).message.startsWith(`node ${nodeId} of cluster`))).toBe(true)
    }), 30_000)

  it.live("logfmt: key=value lines with node_id", () =>
    Effect.gen(function*() {
      const { nodeId, lines } = yield* runNode("logfmt", LogLevel.Info)
      expect(lines.length).toBeGreaterThan(0)
      for (const line of lines) {
        expect(line).toMatch(/^timestamp=\S+ level=(INFO|WARN|ERROR|FATAL) fiber=#\d+ message=/)
        expect(line).toContain(`node_id=${nodeId}`)
      }
    }), 30_000)

  it.live("pretty: one line per event — time, level, message and the annotations on the same line", () =>
    Effect.gen(function*() {
      const { nodeId, lines } = yield* runNode("pretty", LogLevel.Info)
      expect(lines.length).toBeGreaterThan(0)
      for (const line of lines) {
        expect(line).not.toContain("\n")
        expect(line).toMatch(/^\d\d:\d\d:\d\d\.\d{3} (INFO |WARN |ERROR|FATAL) \S/)
        expect(line).toContain(`node_id=${nodeId}`)
      }
      expect(lines.some((l) => l.includes(`node ${nodeId} of cluster`))).toBe(true)
    }), 30_000)

  it("pretty: a cause is cut to its first line; values with spaces are quoted", () => {
    const line = formatPrettyLine({
      fiberId: FiberId.none,
      logLevel: LogLevel.Error,
      message: ["peer lost", 3],
      cause: Cause.fail(new Error("boom\nsecond line")),
      context: FiberRefs.empty(),
      spans: List.empty(),
      annotations: HashMap.make(["node_id", "7"], ["peer", "a b"]),
      date: new Date("2026-12-07T01:02:03.456Z")
    }, false)
    expect(line).toBe('01:02:03.456 ERROR peer lost 3 node_id=7 peer="a b" cause="Error: boom"')
  })

  it.live("the minimum level drops what is below it", () =>
    Effect.gen(function*() {
      const { lines } = yield* runNode("json", LogLevel.Error)
      expect(lines).toEqual([])
    }), 30_000)

  it("parses formats and levels as operators write them", () => {
    expect(parseLogFormat("JSON")).toBe("json")
    expect(parseLogFormat("xml")).toBeNull()
    expect(parseLogLevel("warn")).toBe(LogLevel.Warning)
    expect(parseLogLevel("DEBUG")).toBe(LogLevel.Debug)
    expect(parseLogLevel("loud")).toBeNull()
  })
})
