// What the metrics endpoint serves for one node: at each scrape, the levels (status, peer links,
// bytes on disk) are read and set on the node's gauges, then Effect's registry is rendered,
// keeping only this node's series (and process-wide ones without a node_id label).
import { Clock, Effect, Metric } from "effect"
import * as fs from "node:fs/promises"
import * as path from "node:path"
import type { NodeCondition, NodeStatus } from "../actors/RaftActor.ts"
import type { LinkStats } from "../net/peers/PeerLink.ts"
import type { HealthLimits } from "./health.ts"
import { evaluateHealth } from "./health.ts"
import type { MetricsEndpoints } from "./MetricsServer.ts"
import type { NodeMetrics } from "./NodeMetrics.ts"
import { nodeIdLabel } from "./NodeMetrics.ts"
import type { PeerContact } from "./PeerContact.ts"
import { renderPrometheus } from "./prometheus.ts"

export interface NodeObserverOptions {
  readonly metrics: NodeMetrics
  readonly contact: PeerContact
  readonly status: Effect.Effect<NodeStatus>
  readonly condition: Effect.Effect<NodeCondition>
  readonly links: Effect.Effect<ReadonlyArray<LinkStats>>
  /** Directories whose files' bytes are reported (missing ones count 0). */
  readonly directories: { readonly log: string; readonly snapshots: string; readonly databases: string }
  readonly healthLimits: HealthLimits
}

export const endpoints = (options: NodeObserverOptions): MetricsEndpoints => {
  const self = String(options.metrics.nodeId)
  return {
    metrics: Effect.gen(function*() {
      yield* options.metrics.setStatus(yield* options.status)
      yield* options.metrics.setCondition(yield* options.condition)
      yield* options.metrics.setPeers(yield* options.links)
      const [logBytes, snapshotBytes, databaseBytes] = yield* Effect.all(
        [directoryBytes(options.directories.log), directoryBytes(options.directories.snapshots), directoryBytes(options.directories.databases)],
        { concurrency: 3 }
      )
      yield* options.metrics.setStorage({ logBytes, snapshotBytes, databaseBytes })
      const pairs = (yield* Metric.snapshot).filter((pair) => {
        const node = pair.metricKey.tags.find((tag) => tag.key === nodeIdLabel)
        return node === undefined || node.value === self
      })
      const rendered = renderPrometheus(pairs)
      for (const conflict of rendered.conflicts) yield* Effect.logWarning(`metric ${conflict.name} left out of /metrics: ${conflict.reason}`)
      return rendered.text
    }),
    health: (want) =>
      Effect.gen(function*() {
        const status = yield* options.status
        const condition = yield* options.condition
        const nowMs = yield* Clock.currentTimeMillis
        return evaluateHealth({ status, condition, nowMs, lastHeardMs: options.contact.lastHeardMs, want }, options.healthLimits)
      })
  }
}

/** Entries walked at most per directory, and levels below it: a node's directories hold a few
 * segment files, snapshots and databases, so the bounds only stop a runaway walk. */
export const directoryEntriesMax = 100_000
export const directoryDepthMax = 4

/** Total bytes of the regular files under `dir`; 0 when it does not exist. A failure to read is
 * logged and counts as 0 rather than failing the scrape. */
export const directoryBytes = (dir: string): Effect.Effect<number> =>
  Effect.tryPromise(async () => {
    let total = 0
    let seen = 0
    const walk = async (at: string, depth: number): Promise<void> => {
      let entries
      try {
        entries = await fs.readdir(at, { withFileTypes: true })
      } catch (error) {
        // Files come and go while the node runs (segments removed, snapshots replaced).
        if ((error as NodeJS.ErrnoException).code === "ENOENT") return
        throw error
      }
      for (const entry of entries) {
        if (++seen > directoryEntriesMax) return
        const full = path.join(at, entry.name)
        if (entry.isDirectory()) {
          if (depth < directoryDepthMax) await walk(full, depth + 1)
        } else if (entry.isFile()) {
          total += await fs.stat(full).then((s) => s.size, () => 0)
        }
      }
    }
    await walk(dir, 0)
    return total
  }).pipe(Effect.catchAll((error) => Effect.as(Effect.logWarning(`cannot measure ${dir}`, error), 0)))
