// A three-node tqlite cluster in this process for the CLI tests: real SqlNodes (the wiring
// `tqlite start` runs, DUMP included) on loopback ports of a temporary directory, two of them
// joining the first. Plus an in-memory CliIo, a way to run a command's program, and the
// `tqlite` binary for the few tests that need a real process (exit codes, stderr).
import { execFile } from "node:child_process"
import * as path from "node:path"
import { Duration, Effect, Exit, Schedule, Scope } from "effect"
import { afterAll, beforeAll } from "vitest"
import type { CliIo } from "../../src/cli/common.ts"
import type { LoopbackCluster } from "../loopback.ts"
import { awaitVoters, freePort, leaderAmong, startCluster as startLoopbackCluster, tempDir } from "../loopback.ts"
import { cliArgs } from "../bundle.ts"

export const root = path.resolve(import.meta.dirname, "../..")

export { freePort, leaderAmong }

export type TestCluster = LoopbackCluster

/** `size` nodes, the first founding the cluster, the others joining it (as spares the role
 * manager then promotes; this waits for up to 3 voters). Removed with
 * its directory when the scope closes. */
export const startCluster = (size = 3, options: { readonly manualRoles?: boolean } = {}): Effect.Effect<TestCluster, unknown, Scope.Scope> =>
  Effect.gen(function*() {
    const manual = options.manualRoles === true
    const cluster = yield* startLoopbackCluster(size, {
      dir: yield* tempDir("tqlite-cli-"),
      node: () => ({ roles: { intervalMs: manual ? 3_600_000 : 100 } }),
      voters: 0
    })
    const nodes = cluster.nodes
    // Joiners come in as spares; the leader's role manager promotes them (bounded wait) — or,
    // for tests of manual role changes, the test makes them voters itself and no manager runs.
    if (manual) {
      for (const joiner of nodes.slice(1, 3)) {
        const leader = yield* leaderAmong(nodes)
        yield* leader.node.raft.changeMembership({ kind: "assign", node: joiner.node.identity.nodeId, role: "voter" }).pipe(
          Effect.retry(Schedule.spaced(Duration.millis(50)).pipe(Schedule.intersect(Schedule.recurs(200))))
        )
      }
    }
    yield* awaitVoters(nodes, Math.min(size, 3))
    return cluster
  })

/** A cluster shared by one test file: started before its tests, closed after them. Returns a
 * getter (the cluster exists only once `beforeAll` ran). */
export function clusterForFile(size = 3, options: { readonly manualRoles?: boolean } = {}): () => TestCluster {
  let scope: Scope.CloseableScope | null = null
  let cluster: TestCluster | null = null
  beforeAll(async () => {
    scope = await Effect.runPromise(Scope.make())
    cluster = await Effect.runPromise(startCluster(size, options).pipe(Scope.extend(scope)))
  }, 30_000)
  afterAll(async () => {
    if (scope !== null) await Effect.runPromise(Scope.close(scope, Exit.void))
  })
  return () => {
    if (cluster === null) throw new Error("the file's cluster is not started (use it inside a test)")
    return cluster
  }
}

export interface CapturedIo {
  readonly io: CliIo
  readonly out: () => string
  readonly err: () => string
}

export function captureIo(errIsTty = false): CapturedIo {
  let out = ""
  let err = ""
  return {
    io: { out: (t) => void (out += t), err: (t) => void (err += t), errIsTty },
    out: () => out,
    err: () => err
  }
}

/** Runs a command's program with captured output: its exit code and what it printed. */
export const runCaptured = (program: (io: CliIo) => Effect.Effect<number, never, Scope.Scope>) =>
  Effect.gen(function*() {
    const captured = captureIo()
    const code = yield* Effect.scoped(program(captured.io))
    return { code, out: captured.out(), err: captured.err() }
  })

/** The real `tqlite` binary (the bundle, test/bundle.ts), for exit codes and stderr of a separate process. */
export function tqlite(args: ReadonlyArray<string>, timeoutMs = 20_000): Promise<{ code: number; out: string; err: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [...cliArgs, ...args], { cwd: root, timeout: timeoutMs }, (error, stdout, stderr) =>
      resolve({ code: error === null ? 0 : typeof error.code === "number" ? error.code : -1, out: stdout, err: stderr }))
  })
}
