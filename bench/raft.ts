// `npm run bench -- raft`: proposals per second through a 3-node in-process cluster of the real
// actor stack (Raft actor, log writer with group commit, applier) on segment logs on the real
// disk (fsync on), for 1, 8 and 64 concurrent proposers, beside a single node in the same run.
// Shows what the Raft layer costs before SQLite is on top.
import { snapshotOfBytes } from "../src/actors/snapshotData.ts"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Effect, Logger, LogLevel } from "effect"
import type { StateMachine } from "../src/actors/Applier.ts"
import type { Envelope } from "../src/raft/messages.ts"
import type { RaftNode } from "../src/actors/RaftActor.ts"
import type { NodeTransport } from "../src/node/Node.ts"
import * as Node from "../src/node/Node.ts"
import type { Entry, Membership, NodeId } from "../src/raft/types.ts"
import { nodeDisk } from "../src/storage/Disk.ts"

class Sink implements StateMachine<number> {
  applied = 0
  readonly apply = (entry: Entry) => Effect.sync(() => (entry.kind === "command" ? ++this.applied : this.applied))
  readonly snapshot = snapshotOfBytes(Effect.sync(() => Uint8Array.of(0)))
  readonly restore = () => Effect.void
}

/** `size` nodes wired as production wires them (Node.wire, segment logs and snapshots on the real
 * disk, the system clock) but linked by direct calls instead of TCP: the Raft layer's own cost. */
const cluster = (size: number, dir: string) =>
  Effect.gen(function*() {
    const ids = Array.from({ length: size }, (_, i) => i + 1)
    const membership: Membership = { members: ids.map((id) => ({ id, address: `n${id}`, role: "voter" as const })) }
    const handlers = new Map<NodeId, (envelope: Envelope) => Effect.Effect<void>>()
    const inProcess = (id: NodeId): NodeTransport => ({
      address: `n${id}`,
      send: (envelope) => Effect.suspend(() => handlers.get(envelope.message.to)?.(envelope) ?? Effect.void),
      serve: (onEnvelope) => Effect.sync(() => void handlers.set(id, onEnvelope)),
      setPeers: () => Effect.void
    })
    const nodes: Array<RaftNode<number, Sink>> = []
    for (const id of ids) {
      const node = yield* Node.wire({
        identity: { nodeId: id, clusterId: "bench", address: `n${id}` },
        founding: membership,
        stateMachine: () => Effect.succeed(new Sink()),
        storage: { logDir: path.join(dir, `n${id}`, "log"), snapshotsDir: path.join(dir, `n${id}`, "snap") },
        raft: { electionTicks: 10 },
        bounds: { snapshotEveryEntries: 1_000_000 }
      }, { disk: nodeDisk, transport: () => Effect.succeed(inProcess(id)), clock: yield* Effect.clock, tickMs: 20, randomSeed: id * 7 }).pipe(
        // The table is the output: a leadership won is not news here; warnings still show.
        Logger.withMinimumLogLevel(LogLevel.Warning)
      )
      nodes.push(node.raft)
    }
    for (let i = 0; i < 500; i++) {
      for (const node of nodes) if ((yield* node.status).role === "leader") return node
      yield* Effect.sleep("20 millis")
    }
    return yield* Effect.dieMessage("no leader")
  })

const measure = (size: number, proposers: number, seconds: number) =>
  Effect.scoped(
    Effect.gen(function*() {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tqlite-bench-raft-"))
      const leader = yield* cluster(size, dir)
      const payload = new Uint8Array(100)
      let done = 0
      let errors = 0
      const deadline = Date.now() + seconds * 1000
      const worker = Effect.gen(function*() {
        while (Date.now() < deadline) {
          const result = yield* Effect.either(leader.propose(payload))
          if (result._tag === "Right") done++
          else errors++
        }
      })
      const started = Date.now()
      yield* Effect.all(Array.from({ length: proposers }, () => worker), { concurrency: "unbounded", discard: true })
      const elapsed = (Date.now() - started) / 1000
      fs.rmSync(dir, { recursive: true, force: true })
      return { perSecond: done / elapsed, errors }
    })
  )

export async function main(args: ReadonlyArray<string>): Promise<void> {
  const seconds = Number(args[0] ?? 3)
  process.stdout.write(`raft: 100-byte proposals, ${seconds} s per cell, fsync on, segment logs in ${os.tmpdir()}\n`)
  process.stdout.write(`| proposers | 1 node /s | 3 nodes /s | 3 nodes / 1 node | errors |\n|---|---|---|---|---|\n`)
  for (const proposers of [1, 8, 64]) {
    const one = await Effect.runPromise(measure(1, proposers, seconds))
    const three = await Effect.runPromise(measure(3, proposers, seconds))
    process.stdout.write(`| ${proposers} | ${one.perSecond.toFixed(0)} | ${three.perSecond.toFixed(0)} | ${(three.perSecond / one.perSecond).toFixed(2)} | ${one.errors + three.errors} |\n`)
  }
}
