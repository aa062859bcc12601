// `npm run bench -- snapshot-transfer [--mb N]`: one snapshot of N MB (default 200) streamed
// between two TCP transports on loopback, file to file (the sender's store → the receiver's
// incoming file, fsynced), beside the raw copy speed of the same file on this disk. Reports MB/s,
// the CPU time of both ends per MB (load-independent), the longest event-loop delay during the transfer (both ends share this process) and the RSS
// growth (no whole-snapshot buffer: it stays far below N).
import fs from "node:fs"
import os from "node:os"
import path from "node:path"
import { monitorEventLoopDelay } from "node:perf_hooks"
import { parseArgs } from "node:util"
import { Context, Effect, Exit, Layer, Scope } from "effect"
import { makeTcp } from "../src/net/peers/PeerTransport.ts"
import type { Envelope } from "../src/raft/messages.ts"
import { Disk } from "../src/storage/Disk.ts"
import { Snapshots, snapshotFileName, writeSnapshotFrom } from "../src/storage/Snapshots.ts"

const store = (dir: string) =>
  Effect.map(Layer.build(Snapshots.layer({ dir }).pipe(Layer.provide(Disk.layerNode))), (context) => Context.get(context, Snapshots)).pipe(Effect.orDie)

export async function main(args: ReadonlyArray<string>): Promise<void> {
  const { values } = parseArgs({ args: [...args], options: { mb: { type: "string", default: "200" } } })
  const sizeBytes = Number(values.mb) * 1024 * 1024
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tqlite-bench-snapshot-"))
  const meta = { index: 1000, term: 1, config: { members: [] } }
  try {
    await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
      const sender = yield* store(path.join(dir, "a"))
      const receiver = yield* store(path.join(dir, "b"))
      const chunk = new Uint8Array(1024 * 1024)
      for (let i = 0; i < chunk.length; i++) chunk[i] = (i * 2654435761) >>> 24
      yield* Effect.orDie(writeSnapshotFrom(sender, meta, (sink) =>
        Effect.gen(function*() {
          for (let at = 0; at < sizeBytes; at += chunk.length) {
            chunk[0] = at & 0xff
            yield* sink.write(chunk.subarray(0, Math.min(chunk.length, sizeBytes - at)))
          }
        })))
      const file = path.join(dir, "a", snapshotFileName(meta.index, meta.term))
      let started = performance.now()
      fs.copyFileSync(file, path.join(dir, "raw-copy"))
      const fd = fs.openSync(path.join(dir, "raw-copy"), "r+")
      fs.fdatasyncSync(fd)
      fs.closeSync(fd)
      const rawMBs = sizeBytes / 1e6 / ((performance.now() - started) / 1000)
      fs.rmSync(path.join(dir, "raw-copy"))

      const scope = yield* Scope.make()
      const a = yield* makeTcp({ nodeId: 1, clusterId: "bench", listen: "127.0.0.1:0" }).pipe(Scope.extend(scope))
      const b = yield* makeTcp({ nodeId: 2, clusterId: "bench", listen: "127.0.0.1:0", snapshotInbox: receiver.inbox }).pipe(Scope.extend(scope))
      let received: Envelope | null = null
      yield* b.serve((envelope) => Effect.sync(() => void (received = envelope)))
      yield* a.setPeers(new Map([[2, b.address]]))
      const rssBefore = process.memoryUsage().rss
      let rssPeak = rssBefore
      const delay = monitorEventLoopDelay({ resolution: 1 })
      delay.enable()
      const sampler = setInterval(() => void (rssPeak = Math.max(rssPeak, process.memoryUsage().rss)), 20)
      started = performance.now()
      const cpuBefore = process.cpuUsage()
      yield* a.send({ message: { _tag: "InstallSnapshot", from: 1, to: 2, term: 1, meta }, snapshot: yield* Effect.orDie(sender.source(meta)) })
      while (received === null) yield* Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 5)))
      const seconds = (performance.now() - started) / 1000
      // CPU time of both ends (one process), the figure that does not depend on the machine's load.
      const cpu = process.cpuUsage(cpuBefore)
      clearInterval(sampler)
      delay.disable()
      yield* Scope.close(scope, Exit.void)
      const mb = sizeBytes / 1e6
      console.log(`snapshot of ${mb.toFixed(0)} MB over loopback, file to file: ${seconds.toFixed(2)} s = ${(mb / seconds).toFixed(0)} MB/s (raw copy + fdatasync of the file on this disk: ${rawMBs.toFixed(0)} MB/s, ratio ${((mb / seconds) / rawMBs).toFixed(2)})`)
      console.log(`CPU (both ends) ${((cpu.user + cpu.system) / 1000 / mb).toFixed(2)} ms per MB (user ${(cpu.user / 1000 / mb).toFixed(2)}, system ${(cpu.system / 1000 / mb).toFixed(2)})`)
      console.log(`event loop max delay during the transfer ${(delay.max / 1e6).toFixed(1)} ms; RSS +${((rssPeak - rssBefore) / 1e6).toFixed(0)} MB at peak; load average ${os.loadavg()[0]!.toFixed(1)} on ${os.cpus().length} CPUs`)
    })))
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
}
