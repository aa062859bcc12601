// A snapshot received through SqliteMachine.receiveAlongside: its images are split into files of
// their own as the bytes arrive, whatever the chunking (repeats and gaps included, as the store
// handles them), and `restore` renames them into place; a transfer resumed part way is installed
// by copying from the store's file instead. Same bytes either way.
import fs from "node:fs"
import path from "node:path"
import { Effect } from "effect"
import { afterAll, describe, expect, it } from "vitest"
import type { IncomingSnapshot, SnapshotSource } from "../../src/actors/snapshotData.ts"
import type { SnapshotMeta } from "../../src/raft/types.ts"
import { encodeManifest } from "../../src/sqlite/databaseSnapshot.ts"
import { receivedSuffix } from "../../src/sqlite/receivedImages.ts"
import { SqliteMachine } from "../../src/sqlite/SqliteMachine.ts"
import { pageSize, seededRandom, snapshotSourceOf, tempDirectory } from "./helpers.ts"

const dirs: Array<{ remove(): void }> = []
afterAll(() => dirs.forEach((d) => d.remove()))
const newDir = () => {
  const dir = tempDirectory("tqlite-received-")
  dirs.push(dir)
  return dir.path
}
const runAsync = <A, E>(effect: Effect.Effect<A, E>): Promise<A> => Effect.runPromise(effect)

/** A snapshot stream of two databases ("a" of 3 pages, "b" of 5) and its images. */
function snapshotOf(seed: number): { readonly data: Uint8Array; readonly images: Record<string, Uint8Array> } {
  const random = seededRandom(seed)
  const image = (pages: number) => Uint8Array.from({ length: pages * pageSize }, () => Math.floor(random() * 256))
  const images = { a: image(3), b: image(5) }
  const manifest = encodeManifest([
    { name: "a", lastChangeIndex: 7, sizeBytes: images.a.byteLength },
    { name: "b", lastChangeIndex: 9, sizeBytes: images.b.byteLength }
  ])
  return { data: Buffer.concat([manifest, images.a, images.b]), images }
}

/** The snapshot store's incoming file, in memory, with its rules: bytes that extend what it holds
 * are kept, repeats ignored, a chunk past its end (a gap) writes nothing. */
function storeIncoming(meta: SnapshotMeta, data: Uint8Array, heldBytes = 0): IncomingSnapshot & { readonly held: () => number } {
  let written = heldBytes
  return {
    meta,
    sizeBytes: data.byteLength,
    crc32c: 0,
    held: () => written,
    offset: Effect.sync(() => written),
    writeAt: (offset, chunk) =>
      Effect.sync(() => {
        if (offset <= written && offset + chunk.byteLength > written) written = Math.min(data.byteLength, offset + chunk.byteLength)
        return written
      }),
    finish: Effect.suspend(() => (written === data.byteLength ? Effect.succeed(snapshotSourceOf(meta, data) as SnapshotSource) : Effect.fail("incomplete"))),
    pause: Effect.void
  }
}

const meta: SnapshotMeta = { index: 12, term: 3, config: { members: [] } }

describe("images received alongside a snapshot transfer", () => {
  it("are split whatever the chunking (repeats, gaps) and renamed into place: same bytes, no copy", async () => {
    for (const chunkBytes of [11, 4096, 10_000, 1 << 20]) {
      const dataDir = newDir()
      const machine = await runAsync(SqliteMachine.open({ dataDir, nodeId: 2, pageSize, fsync: "sync", bootSnapshot: null }))
      const { data, images } = snapshotOf(chunkBytes)
      const store = storeIncoming(meta, data)
      const incoming = await runAsync(machine.receiveAlongside(store))
      const chunks: Array<[number, Uint8Array]> = []
      for (let at = 0; at < data.byteLength; at += chunkBytes) chunks.push([at, data.subarray(at, at + chunkBytes)])
      for (const [i, [at, chunk]] of chunks.entries()) {
        await runAsync(incoming.writeAt(at, chunk))
        if (i === 2) await runAsync(incoming.writeAt(chunks[0]![0], chunks[0]![1])) // a repeat
        const gap = chunks[i + 2]
        if (i === 3 && gap !== undefined) await runAsync(incoming.writeAt(gap[0], gap[1])) // a gap
      }
      expect(store.held()).toBe(data.byteLength)
      const source = await runAsync(Effect.orDie(incoming.finish))
      const received = fs.readdirSync(machine.databasesDir).filter((name) => name.endsWith(receivedSuffix))
      expect(received.length).toBe(2)
      await runAsync(machine.restore(meta, source))
      expect(machine.stats.installsByRename).toBe(1)
      expect(machine.appliedIndex).toBe(12)
      for (const [name, image] of Object.entries(images)) expect(Buffer.compare(fs.readFileSync(machine.databasePath(name)), image)).toBe(0)
      expect(fs.readdirSync(machine.databasesDir).filter((name) => name.endsWith(receivedSuffix))).toEqual([])
      machine.close()
    }
  })

  it("the same snapshot offered again while the first copy waits for its install leaves that copy alone", async () => {
    const { data, images } = snapshotOf(5)
    const machine = await runAsync(SqliteMachine.open({ dataDir: newDir(), nodeId: 2, pageSize, fsync: "sync", bootSnapshot: null }))
    const first = await runAsync(machine.receiveAlongside(storeIncoming(meta, data)))
    await runAsync(first.writeAt(0, data))
    const source = await runAsync(Effect.orDie(first.finish))
    // A Raft retry of the same snapshot begins a new transfer before the first one is installed.
    const again = await runAsync(machine.receiveAlongside(storeIncoming(meta, data)))
    await runAsync(again.writeAt(0, data.subarray(0, 20_000)))
    await runAsync(machine.restore(meta, source))
    expect(machine.stats.installsByRename).toBe(1)
    for (const [name, image] of Object.entries(images)) expect(Buffer.compare(fs.readFileSync(machine.databasePath(name)), image)).toBe(0)
    await runAsync(again.pause)
    expect(fs.readdirSync(machine.databasesDir).filter((name) => name.endsWith(receivedSuffix))).toEqual([])
    machine.close()
  })

  it("a transfer resumed part way, or received before a restart, is installed by copy: same bytes", async () => {
    const { data, images } = snapshotOf(99)
    // Resumed: the store held a prefix already (a broken connection, a restart of the receiver).
    const resumedDir = newDir()
    const resumed = await runAsync(SqliteMachine.open({ dataDir: resumedDir, nodeId: 2, pageSize, fsync: "sync", bootSnapshot: null }))
    const store = storeIncoming(meta, data, 5000)
    const incoming = await runAsync(resumed.receiveAlongside(store))
    for (let at = 5000; at < data.byteLength; at += 4096) await runAsync(incoming.writeAt(at, data.subarray(at, at + 4096)))
    await runAsync(resumed.restore(meta, await runAsync(Effect.orDie(incoming.finish))))
    expect(resumed.stats).toMatchObject({ installsByRename: 0, restores: 1 })
    for (const [name, image] of Object.entries(images)) expect(Buffer.compare(fs.readFileSync(resumed.databasePath(name)), image)).toBe(0)
    resumed.close()
    // Received whole, then the node restarted before the install: the split files are gone.
    const restartedDir = newDir()
    const first = await runAsync(SqliteMachine.open({ dataDir: restartedDir, nodeId: 2, pageSize, fsync: "sync", bootSnapshot: null }))
    const whole = await runAsync(first.receiveAlongside(storeIncoming(meta, data)))
    await runAsync(whole.writeAt(0, data))
    const source = await runAsync(Effect.orDie(whole.finish))
    first.close()
    expect(fs.readdirSync(path.join(restartedDir, "databases")).filter((name) => name.endsWith(receivedSuffix)).length).toBe(2)
    const second = await runAsync(SqliteMachine.open({ dataDir: restartedDir, nodeId: 2, pageSize, fsync: "sync", bootSnapshot: null }))
    expect(fs.readdirSync(second.databasesDir).filter((name) => name.endsWith(receivedSuffix))).toEqual([])
    await runAsync(second.restore(meta, source))
    expect(second.stats).toMatchObject({ installsByRename: 0, restores: 1 })
    for (const [name, image] of Object.entries(images)) expect(Buffer.compare(fs.readFileSync(second.databasePath(name)), image)).toBe(0)
    second.close()
  })
})
