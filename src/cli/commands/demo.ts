// `tqlite start` until the networked node lands: a local three-node cluster in one process,
// each node the real stack (Raft actor, group-committing log writer, applier) on its own segment
// log and snapshot store under the data directory, talking through an in-process network. It
// writes a counter once a second and prints who leads, so one command shows the cluster working;
// stop it with Ctrl-C (the scope closes: actors stop, files close).
import { NodeRuntime } from "@effect/platform-node"
import { Context, Duration, Effect, Layer, Schedule } from "effect"
import * as path from "node:path"
import { parseArgs } from "node:util"
import type { StateMachine } from "../../actors/Applier.ts"
import type { Envelope } from "../../actors/LogWriter.ts"
import type { RaftNode } from "../../actors/RaftActor.ts"
import * as RaftActor from "../../actors/RaftActor.ts"
import { defaultRaftConfig } from "../../raft/config.ts"
import { bootstrap } from "../../raft/core.ts"
import type { Entry, Membership, NodeId, SnapshotMeta } from "../../raft/types.ts"
import { Disk } from "../../storage/Disk.ts"
import { persistInGroups } from "../../storage/LogStore.ts"
import { SegmentLog } from "../../storage/SegmentLog.ts"
import { readSnapshotData, Snapshots, writeSnapshotData } from "../../storage/Snapshots.ts"
import type { Command } from "./command.ts"
import { usageError } from "./command.ts"

/** A counter: each command adds the number it carries. */
class Counter implements StateMachine<number> {
  total = 0
  readonly apply = (entry: Entry) =>
    Effect.sync(() => {
      if (entry.kind === "command") this.total += new DataView(entry.data.buffer, entry.data.byteOffset).getUint32(0)
      return this.total
    })
  readonly snapshot = Effect.sync(() => {
    const data = new Uint8Array(8)
    new DataView(data.buffer).setFloat64(0, this.total)
    return data
  })
  readonly restore = (_meta: SnapshotMeta, data: Uint8Array) =>
    Effect.sync(() => {
      this.total = new DataView(data.buffer, data.byteOffset).getFloat64(0)
    })
}

export interface DemoOptions {
  readonly dataDir: string
  readonly nodes: number
}

export const runDemo = (options: DemoOptions) =>
  Effect.gen(function*() {
    const ids = Array.from({ length: options.nodes }, (_, i) => i + 1)
    const membership: Membership = { members: ids.map((id) => ({ id, address: `local-${id}`, role: "voter" as const })) }
    const nodes = new Map<NodeId, RaftNode<number, Counter>>()
    const deliver = (envelope: Envelope) => Effect.suspend(() => nodes.get(envelope.message.to)?.deliver(envelope) ?? Effect.void)
    for (const id of ids) {
      const dir = `${options.dataDir}/node-${id}`
      const log = yield* SegmentLog.open({ dir: `${dir}/log`, clusterId: "tqlite-demo" })
      const snapshots = Context.get(yield* Layer.build(Snapshots.layer({ dir: `${dir}/snapshots` })), Snapshots)
      let recovered = yield* log.load
      if (recovered.entries.length === 0 && recovered.hardState.term === 0) {
        const boot = bootstrap(membership)
        yield* log.persist([{ hardState: boot.hardState, entries: boot.entries }])
        recovered = yield* log.load
      }
      const own = yield* snapshots.latest
      const snapshot = own !== null && (recovered.snapshot === null || own.index >= recovered.snapshot.index) ? own : recovered.snapshot
      const counter = new Counter()
      if (snapshot !== null) yield* counter.restore(snapshot, yield* readSnapshotData(snapshots, snapshot))
      const node = yield* RaftActor.make<number, Counter>({
        config: defaultRaftConfig(id, Date.now() ^ id),
        recovered: { ...recovered, snapshot },
        stateMachine: counter,
        io: {
          persist: persistInGroups(log),
          saveSnapshot: (meta, data) => writeSnapshotData(snapshots, meta, data),
          loadSnapshot: (meta) => readSnapshotData(snapshots, meta),
          send: deliver
        },
        tickMs: 100,
        snapshotEveryEntries: 1000,
        mailboxCapacity: 1024,
        batchMax: 256,
        requestTimeoutMs: 5000
      })
      nodes.set(id, node)
      yield* Effect.log(`node ${id}: data in ${dir}, log from index ${recovered.base.index + 1}, ${recovered.entries.length} entries`)
    }
    yield* Effect.log(`tqlite: local ${options.nodes}-node cluster running (Ctrl-C to stop). The networked node (dqlite wire protocol) is on its way.`)
    const writeOnce = Effect.gen(function*() {
      for (const node of nodes.values()) {
        const status = yield* node.status
        if (status.role !== "leader") continue
        const data = new Uint8Array(4)
        new DataView(data.buffer).setUint32(0, 1)
        const applied = yield* Effect.either(node.propose(data))
        if (applied._tag === "Right") {
          yield* Effect.log(`leader ${status.id} term ${status.term}: counter = ${applied.right.result} at index ${applied.right.index}`)
        } else {
          yield* Effect.logWarning(`write failed: ${applied.left._tag}`)
        }
        return
      }
      yield* Effect.log("no leader yet")
    })
    // A node whose actor died past its restart budget stops the whole process on purpose.
    const anyFailed = Effect.raceAll([...nodes.values()].map((node) => node.failed))
    yield* Effect.raceFirst(writeOnce.pipe(Effect.repeat(Schedule.spaced(Duration.seconds(1)))), anyFailed)
  }).pipe(Effect.provide(Disk.layerNode))

export const demo: Command = {
  name: "demo",
  usage: `tqlite demo [--data-dir DIR] [--nodes N]
      a local cluster of N nodes (default 3) in one process, writing a counter`,
  run: (args) => {
    const { values } = parseArgs({ args: [...args], options: { "data-dir": { type: "string" }, nodes: { type: "string" } } })
    const dataDir = path.resolve(values["data-dir"] ?? ".tqlite/demo")
    const nodes = Number(values.nodes ?? 3)
    if (!Number.isSafeInteger(nodes) || nodes < 1 || nodes > 7) return usageError("demo", "--nodes must be between 1 and 7")
    NodeRuntime.runMain(Effect.scoped(runDemo({ dataDir, nodes })))
  }
}
