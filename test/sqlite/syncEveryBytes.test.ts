// A follower's pages are synced (and recorded) every `syncEveryEntries` entries or once entries
// of `syncEveryBytes` were applied, whichever comes first (issue 17: 64 entries of 20 MiB left
// 1.3 GB dirty, and the kernel's writeback of them throttled every write on the machine).
import fs from "node:fs"
import path from "node:path"
import { Effect } from "effect"
import { afterAll, describe, expect, it } from "vitest"
import { SqliteMachine } from "../../src/sqlite/SqliteMachine.ts"
import { pageSize, recordingLeader, tempDirectory } from "./helpers.ts"

const dirs: Array<{ remove(): void }> = []
afterAll(() => dirs.forEach((d) => d.remove()))

describe("syncEveryBytes", () => {
  it("syncs after entries of that many bytes, long before syncEveryEntries", async () => {
    const source = tempDirectory("tqlite-syncbytes-")
    dirs.push(source)
    const { leader, entries, record, close } = recordingLeader(source.path)
    leader.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB)")
    record()
    for (let i = 0; i < 20; i++) {
      leader.prepare("INSERT INTO t(b) VALUES (randomblob(?))").run(40_000)
      record()
    }
    close()
    const entryBytes = entries.map((e) => (e.kind === "command" ? e.data.byteLength : 0))
    const total = entryBytes.reduce((a, b) => a + b, 0)
    const syncEveryBytes = 200_000
    expect(total).toBeGreaterThan(3 * syncEveryBytes)

    const dir = path.join(source.path, "node")
    fs.mkdirSync(dir)
    const machine = await Effect.runPromise(SqliteMachine.open({ dataDir: dir, nodeId: 2, pageSize, fsync: "sync", bootSnapshot: null, syncEveryEntries: 1000, syncEveryBytes }))
    // As the applier does: `sync` after each batch (one entry per batch here).
    let unsynced = 0
    let unsyncedMax = 0
    for (const [i, entry] of entries.entries()) {
      await Effect.runPromise(machine.apply(entry))
      unsynced += entryBytes[i]!
      const before = machine.stats.syncs
      await Effect.runPromise(machine.sync)
      if (machine.stats.syncs > before) unsynced = 0
      unsyncedMax = Math.max(unsyncedMax, unsynced)
    }
    // Never more than the bound plus one entry applied and not synced; with only the entry count
    // (1000) nothing would have been synced at all.
    expect(machine.stats.syncs).toBeGreaterThanOrEqual(Math.floor(total / (syncEveryBytes + Math.max(...entryBytes))))
    expect(unsyncedMax).toBeLessThan(syncEveryBytes + Math.max(...entryBytes))
    machine.close()
  })
})
