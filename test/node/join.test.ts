// Joining as a new user meets it: a member that is not up yet is waited for (bounded backoff),
// an unreachable one gives up after the join timeout with the reason, and a data dir that belongs
// to another cluster is refused instead of quietly running its old cluster.
import { describe, expect, it } from "@effect/vitest"
import * as fs from "node:fs"
import * as path from "node:path"
import { Duration, Effect, Exit, Fiber, Scope } from "effect"
import { loadOrCreateIdentity } from "../../src/node/identity.ts"
import { JoinOtherCluster } from "../../src/node/SqlNode.ts"
import type * as SqlNode from "../../src/node/SqlNode.ts"
import { Disk } from "../../src/storage/Disk.ts"
import type { NodeOptions } from "../loopback.ts"
import { loopbackAddress, startNode, tempDirNow } from "../loopback.ts"

const base = () => tempDirNow("tqlite-join-")

const startIn = (scope: Scope.Scope, options: NodeOptions) => Scope.extend(startNode(options), scope)

const memberOf = (node: SqlNode.SqlNode) =>
  Effect.map(node.node.raft.status, (status) => status.membership.members.some((m) => m.id === node.node.identity.nodeId))

describe("join", () => {
  it.live("a data dir that never joined takes a new address (its files move aside); one that joined keeps its own", () =>
    Effect.gen(function*() {
      const dir = base()
      const scope = yield* Scope.make()
      const founder = yield* startIn(scope, { dataDir: path.join(dir, "founder"), address: yield* loopbackAddress, join: [] })
      // A first start wrote its identity for an address the cluster never heard of, then failed.
      const joinerDir = path.join(dir, "joiner")
      const first = yield* loopbackAddress
      yield* loadOrCreateIdentity(joinerDir, first, () => ({ nodeId: 4242, clusterId: founder.node.identity.clusterId })).pipe(Effect.provide(Disk.layerNode))
      const second = yield* loopbackAddress
      const joiner = yield* startIn(scope, { dataDir: joinerDir, address: second, join: [founder.node.identity.address] })
      expect(joiner.node.identity.address).toBe(second)
      expect(joiner.node.identity.nodeId).not.toBe(4242)
      const members = (yield* founder.node.raft.status).membership.members
      expect(members.find((m) => m.id === joiner.node.identity.nodeId)?.address).toBe(second)
      const aside = fs.readdirSync(joinerDir).filter((name) => name.startsWith("abandoned-"))
      expect(aside.length).toBe(1)
      expect(fs.existsSync(path.join(joinerDir, aside[0]!, "tqlite-node"))).toBe(true)
      // Now a member: another address is refused, the data dir untouched.
      yield* Scope.close(scope, Exit.void)
      const scope2 = yield* Scope.make()
      yield* startIn(scope2, { dataDir: path.join(dir, "founder"), address: founder.node.identity.address, join: [] })
      const moved = yield* Effect.exit(startIn(scope2, { dataDir: joinerDir, address: yield* loopbackAddress, join: [founder.node.identity.address] }))
      expect(Exit.isFailure(moved) && String(moved.cause)).toContain("IdentityMismatch")
      expect(fs.readdirSync(joinerDir).filter((name) => name.startsWith("abandoned-")).length).toBe(1)
      yield* Scope.close(scope2, Exit.void)
    }), 60_000)

  it.live("waits for a member that starts after it, then joins", () =>
    Effect.gen(function*() {
      const dir = base()
      const founderAddress = yield* loopbackAddress
      const scope = yield* Scope.make()
      const joining = yield* Effect.fork(startIn(scope, { dataDir: path.join(dir, "joiner"), address: yield* loopbackAddress, join: [founderAddress], joinTimeoutMs: 30_000 }))
      // Nothing listens yet: the joiner must be retrying, not failing.
      yield* Effect.sleep(Duration.millis(1_500))
      expect(joining.unsafePoll()).toBeNull()
      const founder = yield* startIn(scope, { dataDir: path.join(dir, "founder"), address: founderAddress, join: [] })
      const joiner = yield* Fiber.join(joining)
      // The founder leads and has added the joiner (as a spare, which hears nothing yet itself).
      const members = (yield* founder.node.raft.status).membership.members
      expect(members.map((m) => m.id)).toContain(joiner.node.identity.nodeId)
      yield* Scope.close(scope, Exit.void)
    }), 60_000)

  it.live("gives up after the join timeout, saying which member it could not reach", () =>
    Effect.gen(function*() {
      const nobody = yield* loopbackAddress
      const scope = yield* Scope.make()
      const started = Date.now()
      const exit = yield* Effect.exit(startIn(scope, { dataDir: path.join(base(), "lonely"), address: yield* loopbackAddress, join: [nobody], joinTimeoutMs: 1_000 }))
      expect(Exit.isFailure(exit)).toBe(true)
      if (Exit.isFailure(exit)) expect(String(exit.cause)).toContain(`cannot reach a cluster member at ${nobody}`)
      // Retried (200 + 400 ms of backoff) but bounded by the timeout.
      expect(Date.now() - started).toBeGreaterThanOrEqual(600)
      expect(Date.now() - started).toBeLessThan(15_000)
      yield* Scope.close(scope, exit)
    }), 30_000)

  it.live("a data dir of another cluster given --join is refused; a restart whose --join members are down starts anyway", () =>
    Effect.gen(function*() {
      const dir = base()
      const scopeA = yield* Scope.make()
      const clusterA = yield* startIn(scopeA, { dataDir: path.join(dir, "a"), address: yield* loopbackAddress, join: [] })
      // B founds its own cluster, then stops.
      const addressB = yield* loopbackAddress
      const scopeB = yield* Scope.make()
      yield* startIn(scopeB, { dataDir: path.join(dir, "b"), address: addressB, join: [] })
      yield* Scope.close(scopeB, Exit.void)
      const refused = yield* Effect.exit(startIn(yield* Scope.make(), { dataDir: path.join(dir, "b"), address: addressB, join: [clusterA.node.identity.address] }))
      expect(refused).toMatchObject({ _tag: "Failure" })
      if (Exit.isFailure(refused)) {
        const error = refused.cause._tag === "Fail" ? refused.cause.error : null
        expect(error).toBeInstanceOf(JoinOtherCluster)
        expect((error as JoinOtherCluster).message).toMatch(/belongs to cluster .* but .* is a member of cluster /)
      }
      // With every --join member down, B's restart runs its own cluster from its data dir.
      yield* Scope.close(scopeA, Exit.void)
      const scopeAgain = yield* Scope.make()
      const again = yield* startIn(scopeAgain, { dataDir: path.join(dir, "b"), address: addressB, join: [clusterA.node.identity.address], joinTimeoutMs: 60_000 })
      expect(yield* memberOf(again)).toBe(true)
      yield* Scope.close(scopeAgain, Exit.void)
    }), 60_000)
})
