// Real tqlite nodes on loopback, for the tests that need sockets (test/cli, test/embed, test/node):
// a temporary directory that goes with the scope, a free 127.0.0.1 address, a SqlNode with the
// tests' defaults (20 ms ticks, the real disk), a cluster of them (the first founds it, the
// others join it), and the waits every such test needs (a leader, n voters), each bounded.
// In-process clusters without sockets are test/sim/full/SqliteCluster.ts (test/sqlite's harness).
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Effect, Scope } from "effect"
import type { SqlNode, SqlNodeOptions } from "../src/node/SqlNode.ts"
import * as SqlNodes from "../src/node/SqlNode.ts"
import { Disk } from "../src/storage/Disk.ts"
import { eventually } from "./eventually.ts"
import { freePort } from "./freePort.ts"

export { freePort }

/** The tests' tick: elections in a fraction of a second, without starving a loaded machine. */
export const tickMs = 20

/** A fresh directory under the OS temp dir (`prefix` names the test), left for the caller. */
export const tempDirNow = (prefix: string): string => fs.mkdtempSync(path.join(os.tmpdir(), prefix))

/** A fresh directory under the OS temp dir, removed with everything in it when the scope closes. */
export const tempDir = (prefix: string): Effect.Effect<string, never, Scope.Scope> =>
  Effect.acquireRelease(Effect.sync(() => tempDirNow(prefix)), (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true })))

/** "127.0.0.1:port" with a port nothing listens on right now. */
export const loopbackAddress: Effect.Effect<string> = Effect.map(freePort, (port) => `127.0.0.1:${port}`)

export type NodeOptions = Omit<SqlNodeOptions, "address"> & { readonly address?: string }

/** A SqlNode in the current scope: on a free loopback address unless one is given, ticking every
 * {@link tickMs} unless told otherwise, on the real disk. */
export const startNode = (options: NodeOptions): Effect.Effect<SqlNode, unknown, Scope.Scope> =>
  Effect.gen(function*() {
    const address = options.address ?? (yield* loopbackAddress)
    return yield* SqlNodes.start({ tickMs, ...options, address }).pipe(Effect.provide(Disk.layerNode))
  })

/** The node that leads, waiting for one (bounded). */
export const leaderAmong = (nodes: ReadonlyArray<SqlNode>, timeoutMs = 5_000): Effect.Effect<SqlNode> =>
  eventually("a leader", timeoutMs, Effect.gen(function*() {
    for (const node of nodes) if ((yield* node.node.raft.status).role === "leader") return node
    return null
  }), 10)

/** Waits (bounded) until a leader counts at least `voters` voters. */
export const awaitVoters = (nodes: ReadonlyArray<SqlNode>, voters: number, timeoutMs = 30_000): Effect.Effect<void> =>
  Effect.asVoid(eventually(`${voters} voters`, timeoutMs, Effect.gen(function*() {
    for (const node of nodes) {
      const status = yield* node.node.raft.status
      if (status.role === "leader" && status.membership.members.filter((m) => m.role === "voter").length >= voters) return true
    }
    return null
  }), 50))

export interface LoopbackCluster {
  readonly dir: string
  readonly nodes: ReadonlyArray<SqlNode>
  readonly addresses: ReadonlyArray<string>
}

export interface ClusterOptions {
  /** Where the nodes' data directories go (`<dir>/node<i>`); default: a temporary directory
   * removed with the scope. */
  readonly dir?: string
  /** Options of node `index` (0 founds the cluster) beside data dir, address and join. */
  readonly node?: (index: number) => Partial<NodeOptions>
  /** The scope node `index` lives in (default: the current one): a test that stops one node
   * closes its scope. */
  readonly scopeOf?: (index: number) => Scope.Scope
  /** Voters to wait for once every node started (default: min(size, 3), what the role
   * manager's default target promotes); 0 does not wait. */
  readonly voters?: number
}

/** `size` nodes, the first founding the cluster (and leading before the others start), the
 * others joining it as spares the leader's role manager promotes. */
export const startCluster = (size: number, options: ClusterOptions = {}): Effect.Effect<LoopbackCluster, unknown, Scope.Scope> =>
  Effect.gen(function*() {
    const dir = options.dir ?? (yield* tempDir("tqlite-cluster-"))
    const nodes: Array<SqlNode> = []
    for (let i = 0; i < size; i++) {
      const join = i === 0 ? [] : [nodes[0]!.node.identity.address]
      const start = startNode({ dataDir: path.join(dir, `node${i + 1}`), join, ...options.node?.(i) })
      const scope = options.scopeOf?.(i)
      nodes.push(yield* (scope === undefined ? start : Scope.extend(start, scope)))
      if (i === 0) yield* leaderAmong(nodes)
    }
    const voters = options.voters ?? Math.min(size, 3)
    if (voters > 0) yield* awaitVoters(nodes, voters)
    return { dir, nodes, addresses: nodes.map((n) => n.node.identity.address) }
  })
