// A node restarted on a data dir that a kill left full of leftovers (issue 17: restart < 5 s
// whatever the size; at 4 GiB a leader took 7.8 s): dozens of log segments a compaction made
// obsolete and a snapshot half taken. Before the node serves, nothing is unlinked and no obsolete
// segment is read whole; once it serves, every leftover goes, on the thread pool. Counted, not
// timed. (The state machine's own leftovers: test/sqlite/bootLeftovers.test.ts.)
import { describe, expect, it } from "@effect/vitest"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Duration, Effect, Exit, Layer, Scope } from "effect"
import { Counter, counterMachine } from "./counter.ts"
import * as Node from "../../src/node/Node.ts"
import type { TqliteNode } from "../../src/node/Node.ts"
import type { DiskService } from "../../src/storage/Disk.ts"
import { Disk, nodeDisk } from "../../src/storage/Disk.ts"
import { freePort } from "../freePort.ts"

const start = (dataDir: string, address: string, disk: DiskService, scope: Scope.Scope) =>
  Node.make<number, Counter>({
    dataDir,
    address,
    start: { _tag: "Bootstrap" },
    stateMachine: counterMachine,
    tickMs: 20,
    snapshotEveryEntries: 100,
    segmentBytesMax: 4096,
    requestTimeoutMs: 3000
  }).pipe(Scope.extend(scope), Effect.provide(Layer.succeed(Disk, disk)))

const leaderOf = (node: TqliteNode<number, Counter>) =>
  Effect.gen(function*() {
    for (let i = 0; i < 300; i++) {
      if ((yield* node.raft.status).role === "leader") return
      yield* Effect.sleep(Duration.millis(20))
    }
    return yield* Effect.dieMessage("no leader")
  })

/** The node disk on which a log segment's unlink does nothing: a node killed before the
 * segments a compaction made obsolete were gone. */
const segmentsStay: DiskService = {
  ...nodeDisk,
  unlink: (file) => (file.endsWith(".seg") ? Effect.void : nodeDisk.unlink(file)),
  unlinkAsync: (file) => (file.endsWith(".seg") ? Effect.void : nodeDisk.unlinkAsync!(file))
}

/** The node disk recording unlinks and whole-file reads of segments, until `ready` is set. */
function recordingDisk() {
  const before = { unlinks: [] as Array<string>, segmentBytesRead: 0 }
  const after = { unlinks: [] as Array<{ readonly file: string; readonly pool: boolean }> }
  let ready = false
  const disk: DiskService = {
    ...nodeDisk,
    readFile: (file, into) =>
      Effect.tap(nodeDisk.readFile(file, into), (bytes) => Effect.sync(() => {
        if (!ready && file.endsWith(".seg")) before.segmentBytesRead += bytes.byteLength
      })),
    unlink: (file) => Effect.zipRight(Effect.sync(() => void (ready ? after.unlinks.push({ file: path.basename(file), pool: false }) : before.unlinks.push(path.basename(file)))), nodeDisk.unlink(file)),
    unlinkAsync: (file) => Effect.zipRight(Effect.sync(() => void (ready ? after.unlinks.push({ file: path.basename(file), pool: true }) : before.unlinks.push(path.basename(file)))), nodeDisk.unlinkAsync!(file))
  }
  return { disk, before, after, serving: () => void (ready = true) }
}

const dirBytes = (dir: string, suffix: string) => fs.readdirSync(dir).filter((n) => n.endsWith(suffix)).reduce((sum, n) => sum + fs.statSync(path.join(dir, n)).size, 0)

describe("a restart on a data dir full of leftovers", () => {
  it.live("unlinks nothing and reads no obsolete segment before it serves; then removes every leftover on the pool", () =>
    Effect.gen(function*() {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tqlite-bootleft-"))
      const address = `127.0.0.1:${yield* freePort}`
      const first = yield* Scope.make()
      const node = yield* start(dir, address, segmentsStay, first)
      yield* leaderOf(node)
      // 1,000-byte entries in 4 KiB segments: a few per segment; a snapshot every 100 entries
      // compacts dozens of them, which stay (their unlinks do nothing on this disk).
      for (let i = 0; i < 260; i++) yield* node.raft.propose(new Uint8Array(1000).fill(1))
      yield* Scope.close(first, Exit.void)
      const logDir = path.join(dir, "log")
      const snapshotsDir = path.join(dir, "snapshots")
      const segmentsBefore = fs.readdirSync(logDir).filter((n) => n.endsWith(".seg")).length
      // A snapshot half taken when the node died: 8 MiB.
      fs.writeFileSync(path.join(snapshotsDir, "snapshot-00000000000000000900-00000000000000000001.snap.0.tmp"), new Uint8Array(8 * 1024 * 1024))

      const { disk, before, after, serving } = recordingDisk()
      const second = yield* Scope.make()
      const again = yield* start(dir, address, disk, second)
      serving()
      expect(before.unlinks).toEqual([])
      expect(segmentsBefore).toBeGreaterThan(40)
      yield* leaderOf(again)
      expect((yield* again.raft.propose(Uint8Array.of(1))).result).toBe(261)
      // Once it serves: the temporary snapshot and the obsolete segments go, on the pool.
      const segmentCount = () => fs.readdirSync(logDir).filter((n) => n.endsWith(".seg")).length
      let steady = 0
      for (let i = 0, last = -1; i < 300 && steady < 10; i++) {
        const now = segmentCount()
        steady = now === last && !fs.readdirSync(snapshotsDir).some((n) => n.includes(".tmp")) ? steady + 1 : 0
        last = now
        yield* Effect.sleep(Duration.millis(20))
      }
      expect(fs.readdirSync(snapshotsDir).filter((n) => n.includes(".tmp"))).toEqual([])
      // Dozens of segments were obsolete: the open read none of them whole, only the live log
      // left now (the newest segment twice: once to find the base; at most 4,096 bytes).
      expect(segmentCount()).toBeLessThan(segmentsBefore - 30)
      expect(before.segmentBytesRead).toBeLessThanOrEqual(dirBytes(logDir, ".seg") + 4096)
      expect(after.unlinks.length).toBeGreaterThanOrEqual(segmentsBefore - segmentCount())
      expect(after.unlinks.every((u) => u.pool)).toBe(true)
      yield* Scope.close(second, Exit.void)
      fs.rmSync(dir, { recursive: true, force: true })
    }), 60_000)
})
