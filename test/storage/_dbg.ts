import { Effect } from "effect"
import { makeSimDisk } from "../sim/SimDisk.ts"
import { generateWorkload, openLog, reload } from "./workload.ts"
import { scanSegment, decodeCheckpoint } from "../../src/storage/format.ts"
const calls = generateWorkload({ seed: 2, calls: 40, payloadBytesMax: 600 })
const n = 74
const sim = makeSimDisk({ seed: 2 * 7919 + n })
const names: string[] = []
const orig = sim.service
// trace ops
const prog = Effect.gen(function* () {
  sim.driver.crashAtOp(n, "prefix")
  let acked = -1
  const ex = yield* Effect.exit(Effect.scoped(Effect.gen(function* () {
    const store = yield* openLog(sim.layer)
    acked = 0
    for (const call of calls) { console.log("call", acked, "ops", sim.driver.ops(), JSON.stringify(call.map(b => ({hs: b.hardState, snap: b.snapshot?.index, tr: b.truncateFrom, e: b.entries.map(e => e.index + "/" + e.term), c: b.compactUpTo})))); yield* store.persist(call); acked++ }
  })))
  console.log("acked", acked, ex._tag, sim.driver.ops())
  sim.driver.restart()
  for (const name of sim.driver.list("/data/log")) {
    if (!name.endsWith(".seg")) continue
    const scan = scanSegment(sim.driver.fileBytes("/data/log/" + name), false)
    console.log(name, scan.validBytes, scan.damage, scan.records.map(r => r.kind === 20 ? "cp" + JSON.stringify(decodeCheckpoint(r)) : `${r.kind}:${r.index}/${r.term}@${r.offset}w${r.writeStart}`).join(" "))
  }
  const r = yield* Effect.either(reload(sim.layer))
  console.log(r._tag === "Left" ? r.left.message : "ok")
})
Effect.runPromise(prog)
