// `npm run bench -- raft`: proposals per second through a 3-node in-process cluster of the real
// actor stack (Raft actor, log writer with group commit, applier) on segment logs on the real
// disk (fsync on), for 1, 8 and 64 concurrent proposers, beside a single node in the same run.
// Shows what the Raft layer costs before SQLite is on top.
import { snapshotOfBytes } from "../src/actors/snapshotData.ts"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Context, Effect, Layer } from "effect"
import type { StateMachine } from "../src/actors/Applier.ts"
import type { Envelope } from "../src/raft/messages.ts"
import type { RaftNode } from "../src/actors/RaftActor.ts"
import * as RaftActor from "../src/actors/RaftActor.ts"
import { defaultRaftConfig } from "../src/raft/config.ts"
import { bootstrap } from "../src/raft/core.ts"
import type { Entry, Membership, NodeId } from "../src/raft/types.ts"
import { Disk } from "../src/storage/Disk.ts"
import { persistInGroups } from "../src/storage/LogStore.ts"
import { SegmentLog } from "../src/storage/SegmentLog.ts"
import { Snapshots, writeSnapshotFrom } from "../src/storage/Snapshots.ts"

class Sink implements StateMachine<number> {
  applied = 0
  readonly apply = (entry: Entry) => Effect.sync(() => (entry.kind === "command" ? ++this.applied : this.applied))
  readonly snapshot = snapshotOfBytes(Effect.sync(() => Uint8Array.of(0)))
  readonly restore = () => Effect.void
}

const cluster = (size: number, dir: string) =>
  Effect.gen(function*() {
    const ids = Array.from({ length: size }, (_, i) => i + 1)
    const membership: Membership = { members: ids.map((id) => ({ id, address: `n${id}`, role: "voter" as const })) }
    const nodes = new Map<NodeId, RaftNode<number, Sink>>()
    const deliver = (envelope: Envelope) => Effect.suspend(() => nodes.get(envelope.message.to)?.deliver(envelope) ?? Effect.void)
    for (const id of ids) {
      const log = yield* SegmentLog.open({ dir: path.join(dir, `n${id}`, "log"), clusterId: "bench" })
      const snapshots = Context.get(yield* Layer.build(Snapshots.layer({ dir: path.join(dir, `n${id}`, "snap") })), Snapshots)
      const boot = bootstrap(membership)
      yield* log.persist([{ hardState: boot.hardState, entries: boot.entries }])
      nodes.set(id, yield* RaftActor.make<number, Sink>({
        config: { ...defaultRaftConfig(id, id * 7), electionTicks: 10 },
        recovered: boot,
        stateMachine: new Sink(),
        io: {
          persist: persistInGroups(log),
          readEntries: log.read,
          saveSnapshot: (meta, produce) => writeSnapshotFrom(snapshots, meta, produce),
          adoptSnapshot: snapshots.adopt,
          snapshotSource: snapshots.source,
          send: deliver
        },
        tickMs: 20,
        snapshotEveryEntries: 1_000_000,
        mailboxCapacity: 4096,
        batchMax: 512,
        requestTimeoutMs: 10_000
      }))
    }
    for (let i = 0; i < 500; i++) {
      for (const node of nodes.values()) if ((yield* node.status).role === "leader") return node
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
  ).pipe(Effect.provide(Disk.layerNode))

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
