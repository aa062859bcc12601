// Preloaded with `node --import` by bench/rowCost.mjs into any build of tqlite: this process's
// event-loop delay (perf_hooks monitorEventLoopDelay, 1 ms resolution), one JSON line per second
// (p50, p99, max in ms) to $LOOP_DELAY_DIR/<pid>.jsonl. Does nothing without LOOP_DELAY_DIR.
import { monitorEventLoopDelay } from "node:perf_hooks"
import fs from "node:fs"
import path from "node:path"
const dir = process.env.LOOP_DELAY_DIR
if (dir) {
  const h = monitorEventLoopDelay({ resolution: 1 })
  h.enable()
  const file = path.join(dir, `${process.pid}.jsonl`)
  setInterval(() => {
    fs.appendFileSync(file, JSON.stringify({ t: Date.now(), p50: h.percentile(50) / 1e6, p99: h.percentile(99) / 1e6, max: h.max / 1e6, n: h.count }) + "\n")
    h.reset()
  }, 1000).unref()
}
