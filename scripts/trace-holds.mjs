// `node scripts/trace-holds.mjs DIR [MIN_MS]`: reads the TQLITE_TRACE dumps in DIR (one per
// process) and prints, per process, the peaks of the mem.* samples, the count of each stamp, and
// every `loop.held` of at least MIN_MS (default 100) with the stamps that fell inside it (the
// stage names and their indexes; *.ms stamps carry a duration): what held that event loop.
import fs from "node:fs"
import path from "node:path"
const dir = process.argv[2]
const minHeld = Number(process.argv[3] ?? 100)
for (const f of fs.readdirSync(dir)) {
  const { pid, stamps } = JSON.parse(fs.readFileSync(path.join(dir, f), "utf8"))
  const t0 = stamps[0]?.[1] ?? 0
  const ms = (t) => ((t - t0) / 1e6)
  const mem = {}
  for (const [n, t, k] of stamps) if (n.startsWith("mem.")) { if (!(n in mem) || k > mem[n].v) mem[n] = { v: k, at: ms(t).toFixed(0) } }
  console.log(`== pid ${pid} (${stamps.length} stamps) mem peaks: ${Object.entries(mem).map(([n, m]) => `${n}=${m.v}MB@${m.at}`).join(" ")}`)
  const counts = {}
  for (const [n] of stamps) counts[n] = (counts[n] ?? 0) + 1
  console.log("   counts:", JSON.stringify(counts))
  for (const [i, [n, t, k]] of stamps.entries()) {
    if (n !== "loop.held" || k < minHeld) continue
    // The process's CPU during the hold (loop.held.cpu, stamped right after): far below it, the
    // thread waited (a blocking syscall, or not scheduled) rather than computed.
    const cpu = stamps[i + 1]?.[0] === "loop.held.cpu" ? ` (cpu ${stamps[i + 1][2]} ms)` : ""
    const from = t - k * 1e6 - 20e6
    const inside = stamps.filter(([n2, t2]) => t2 >= from && t2 <= t && !n2.startsWith("mem.") && !n2.startsWith("loop.held"))
    const summary = {}
    for (const [n2, , k2] of inside) { summary[n2] ??= []; if (summary[n2].length < 6) summary[n2].push(k2) }
    console.log(`  held ${k} ms${cpu} at ${ms(t).toFixed(0)} ms:`, Object.entries(summary).map(([a, b]) => `${a}[${b.join(",")}]`).join(" "))
  }
}
