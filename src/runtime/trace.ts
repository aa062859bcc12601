// Stage timestamps for the latency breakdown of one request (bench/writeTrace.ts), off unless
// TQLITE_TRACE names a directory. Each stamp is a stage name and process.hrtime (CLOCK_MONOTONIC,
// the same clock in every process of the machine, so the three nodes' stamps merge by time).
// Bounded: past `stampsMax` stamps nothing more is kept. On SIGUSR2 (and at exit) the stamps go
// to `<dir>/trace-<pid>.json` and the buffer starts over. When off, `trace` is one branch.
import fs from "node:fs"
import path from "node:path"
import { PerformanceObserver } from "node:perf_hooks"

const dir = typeof process === "object" ? process.env["TQLITE_TRACE"] : undefined
/** Whether stamps are kept (TQLITE_TRACE is set). */
export const tracing = dir !== undefined && dir !== ""

const stampsMax = 2_000_000
const names: Array<string> = []
const times = tracing ? new Float64Array(stampsMax) : new Float64Array(0)
const keys = tracing ? new Float64Array(stampsMax) : new Float64Array(0)

/** Records that `stage` happened now; `index` is the log index it concerns, when one is known
 * (the highest it covers: an append's last entry, an acknowledgement's match index). */
export function trace(stage: string, index = -1): void {
  if (!tracing || names.length >= stampsMax) return
  times[names.length] = Number(process.hrtime.bigint())
  keys[names.length] = index
  names.push(stage)
}

function dump(): void {
  if (!tracing || dir === undefined) return
  const stamps = names.map((name, i) => [name, times[i], keys[i]])
  fs.mkdirSync(dir, { recursive: true })
  fs.writeFileSync(path.join(dir, `trace-${process.pid}.json`), JSON.stringify({ pid: process.pid, stamps }))
  names.length = 0
}

/** While tracing, an event loop held longer than this is stamped `loop.held` with the held
 * time in ms as its index (a 10 ms timer that fires late): where a node stops answering. */
const loopHeldStampMs = 50

if (tracing) {
  process.on("SIGUSR2", dump)
  process.on("exit", dump)
  let lastMs = performance.now()
  let lastCpu = process.cpuUsage()
  setInterval(() => {
    const nowMs = performance.now()
    const cpu = process.cpuUsage()
    if (nowMs - lastMs > loopHeldStampMs) {
      trace("loop.held", Math.round(nowMs - lastMs))
      // CPU the process (every thread) used meanwhile: far below the held time, the thread was
      // waiting (a blocking syscall, or not scheduled on a loaded machine) rather than computing.
      trace("loop.held.cpu", Math.round((cpu.user - lastCpu.user + cpu.system - lastCpu.system) / 1000))
    }
    lastMs = nowMs
    lastCpu = cpu
  }, 10).unref()
  // Where the memory goes (MB as the index): rss, V8 heap, and buffers outside it.
  setInterval(() => {
    const memory = process.memoryUsage()
    trace("mem.rss", Math.round(memory.rss / 1048576))
    trace("mem.heap", Math.round(memory.heapUsed / 1048576))
    trace("mem.external", Math.round(memory.external / 1048576))
    trace("mem.arrayBuffers", Math.round(memory.arrayBuffers / 1048576))
  }, 250).unref()
  // Garbage collections of 5 ms or more, stamped at their end with their duration: a pause
  // that holds the loop without any stage of ours in it (bench/stallCauses.ts counts them).
  const hrOffsetNs = Number(process.hrtime.bigint()) - performance.now() * 1e6
  new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      if (entry.duration < 5 || names.length >= stampsMax) continue
      times[names.length] = hrOffsetNs + (entry.startTime + entry.duration) * 1e6
      keys[names.length] = Math.round(entry.duration)
      names.push("gc.ms")
    }
  }).observe({ entryTypes: ["gc"] })
}

/** Stamps `stage` with how long (ms) a synchronous step that started at `startedMs`
 * (performance.now()) took, when at least `thresholdMs`: what held the loop. */
export function traceDuration(stage: string, startedMs: number, thresholdMs = 5): void {
  if (!tracing) return
  const ms = performance.now() - startedMs
  if (ms >= thresholdMs) trace(stage, Math.round(ms))
}

/** Stamps `<where>.append` for an AppendEntries that carries entries and `<where>.ack` for its
 * answer; heartbeats and the rest are not stamped. */
export function traceMessage(where: string, message: { readonly _tag: string; readonly entries?: ReadonlyArray<{ readonly index: number }>; readonly index?: number }): void {
  if (!tracing) return
  const entries = message.entries
  if (message._tag === "AppendEntries" && entries !== undefined && entries.length > 0) trace(`${where}.append`, entries[entries.length - 1]!.index)
  else if (message._tag === "AppendEntriesResponse") trace(`${where}.ack`, message.index ?? -1)
}
