// Three embedded nodes on loopback for the embedding tests: the first founds the cluster, the
// second and third join it. Each node is a `TqliteService` (Tqlite.make) in the layer's scope.
import Database from "better-sqlite3"
import { Context, Duration, Effect, Layer } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import type { TqliteConfig, TqliteService } from "../../src/embed/Tqlite.ts"
import * as Tqlite from "../../src/embed/Tqlite.ts"
import { freePort, loopbackAddress, tempDirNow } from "../loopback.ts"

export const database = "notes"
export const tickMs = 20

export { freePort, loopbackAddress }

export const tempDir = tempDirNow

export interface EmbeddedNode {
  readonly service: TqliteService
  readonly dataDir: string
  readonly address: string
}

export class Cluster extends Context.Tag("test/embed/Cluster")<Cluster, { readonly nodes: ReadonlyArray<EmbeddedNode> }>() {}

/** Polls (real time, 20 ms) until `check` gives a value; dies after `timeoutMs`. */
export const eventually = <A, E, R>(what: string, check: Effect.Effect<A | undefined, E, R>, timeoutMs = 10_000) =>
  Effect.gen(function*() {
    for (let waitedMs = 0; waitedMs < timeoutMs; waitedMs += 20) {
      const value = yield* check
      if (value !== undefined) return value
      yield* Effect.sleep(Duration.millis(20))
    }
    return yield* Effect.dieMessage(`timed out waiting for ${what}`)
  })

export const leaderOf = (nodes: ReadonlyArray<EmbeddedNode>) =>
  eventually("a leader", Effect.gen(function*() {
    for (const node of nodes) if ((yield* node.service.state)?.role === "leader") return node
    return undefined
  }))

export const followersOf = (nodes: ReadonlyArray<EmbeddedNode>) =>
  Effect.flatMap(leaderOf(nodes), (leader) => Effect.succeed(nodes.filter((n) => n !== leader)))

const startNode = (join: ReadonlyArray<string>, extra: Partial<TqliteConfig>) =>
  Effect.gen(function*() {
    const dataDir = tempDir("tqlite-embed-")
    const address = yield* loopbackAddress
    const service = yield* Tqlite.make({ dataDir, address, join, tickMs, database, ...extra })
    return { service, dataDir, address }
  })

/** Three nodes, each `Tqlite.make` with the shared settings and `extra`. */
export const makeClusterLayer = (extra: Partial<TqliteConfig>): Layer.Layer<Cluster, unknown> => Layer.scoped(
  Cluster,
  Effect.gen(function*() {
    const first = yield* startNode([], extra)
    yield* leaderOf([first])
    const second = yield* startNode([first.address], extra)
    const third = yield* startNode([first.address], extra)
    const nodes = [first, second, third]
    // Every node counts three voters before a test starts.
    yield* eventually("three voters on every node", Effect.gen(function*() {
      for (const node of nodes) {
        const members = yield* node.service.members
        if (members.filter((m) => m.role === "voter").length !== 3) return undefined
      }
      return true
    }))
    return { nodes }
  })
)

export const clusterLayer: Layer.Layer<Cluster, unknown> = makeClusterLayer({})

/** What a follower's database file holds once it applied everything the leader committed: the
 * file is read into memory (no connection touches the node's own file). */
export const followerRows = (leader: EmbeddedNode, follower: EmbeddedNode, sql: string) =>
  Effect.gen(function*() {
    const committed = (yield* leader.service.state)!.commitIndex
    yield* eventually("the follower to apply", Effect.map(follower.service.state, (s) => (s !== null && s.appliedIndex >= committed ? true : undefined)))
    const image = fs.readFileSync(path.join(follower.dataDir, "sqlite", "databases", `${database}.db`))
    // Bytes 18-19 say WAL mode; an in-memory copy must read as a rollback-journal database.
    image[18] = 1
    image[19] = 1
    const db = new Database(image)
    try {
      return db.prepare(sql).raw(true).all() as Array<Array<unknown>>
    } finally {
      db.close()
    }
  })
