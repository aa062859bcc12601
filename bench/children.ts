// Every child process a benchmark starts, so one Ctrl-C handler can end them all wherever the
// benchmark is (starting a cluster, mid-row, printing).
import type { ChildProcess } from "node:child_process"
import fs from "node:fs"

const live = new Set<ChildProcess>()
/** Set by stopTracked: a child started after it (the benchmark racing its own shutdown) is
 * killed at once rather than left running after we exit. */
let stopping = false

export function track(child: ChildProcess): ChildProcess {
  if (stopping) {
    child.kill("SIGKILL")
    return child
  }
  live.add(child)
  child.once("exit", () => live.delete(child))
  return child
}

/** SIGTERM to each, SIGKILL to any still running after `graceMs`; resolves when all have exited. */
export function stopAll(children: ReadonlyArray<ChildProcess>, graceMs = 10_000): Promise<void> {
  return Promise.all(children.map((child) => new Promise<void>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve()
    const timer = setTimeout(() => child.kill("SIGKILL"), graceMs)
    child.once("exit", () => {
      clearTimeout(timer)
      resolve()
    })
    child.kill("SIGTERM")
  }))).then(() => undefined)
}

/** Benchmarks throw their clusters' data away, so a short grace is enough: dqlite-demo's own
 * graceful stop (a role hand-over without deadline) hangs when its peers stop with it. */
export function stopTracked(graceMs?: number): Promise<void> {
  stopping = true
  return stopAll([...live], graceMs)
}

/** On the first SIGINT/SIGTERM: `onInterrupt` (print what was measured, clean up), then exit
 * 130. A second one exits at once. Returns the function that removes the handler. */
export function onInterrupt(handler: () => Promise<void>): () => void {
  let interrupted = false
  const listener = () => {
    if (interrupted) process.exit(130)
    interrupted = true
    process.stderr.write("\ninterrupted: stopping every process and removing temp dirs …\n")
    handler().finally(() => process.exit(130))
  }
  process.on("SIGINT", listener)
  process.on("SIGTERM", listener)
  return () => {
    process.off("SIGINT", listener)
    process.off("SIGTERM", listener)
  }
}

/** A process's user + system CPU time in µs, from /proc/PID/stat (clock ticks of 10 ms), or 0
 * when it has gone. */
export function cpuMicros(pid: number): number {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8")
    // Fields after the command name (which may hold spaces) start at its closing parenthesis.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
    return (Number(fields[11]) + Number(fields[12])) * 10_000
  } catch {
    return 0
  }
}
