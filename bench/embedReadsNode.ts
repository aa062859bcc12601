// One embedded node of `npm run bench -- embed-reads --processes`: a service instance in a
// process of its own (Tqlite.make), driven by JSON lines on stdin, answering JSON lines on
// stdout. Commands: {"cmd":"state"}, {"cmd":"setup","rows":N} (on the leader), {"cmd":"measure",
// "mode":"leader only"|"each node locally","seconds":S,"readers":N,"leader":"host:port"},
// {"cmd":"quit"}. Answers are lines starting with "@@ "; warnings of the node are logged as usual.
import * as readline from "node:readline"
import { Duration, Effect, Logger, LogLevel } from "effect"
import type { TqliteService } from "../src/embed/Tqlite.ts"
import * as Tqlite from "../src/embed/Tqlite.ts"

const [dataDir, address, joinText] = process.argv.slice(2)
if (dataDir === undefined || address === undefined) throw new Error("usage: embedReadsNode DATA_DIR ADDRESS [JOIN]")
const join = joinText === undefined || joinText === "" ? [] : joinText.split(",")

/** Answers start with "@@ " so the parent can tell them from the node's own log lines. */
/** One turn of the event loop (timers and sockets get theirs). */
const nextTurn = Effect.async<void>((resume) => void setImmediate(() => resume(Effect.void)))

const reply = (value: unknown) => Effect.sync(() => void process.stdout.write(`@@ ${JSON.stringify(value)}\n`))

const measure = (service: TqliteService, seconds: number, readers: number, rows: number) =>
  Effect.gen(function*() {
    const latenciesMs: Array<number> = []
    let errors = 0
    let seed = (Number(address.split(":")[1]) * 7919) & 0x7fffffff
    const nextId = () => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff
      return 1 + (seed % rows)
    }
    const deadline = performance.now() + seconds * 1000
    const cpuBefore = process.cpuUsage()
    const reader = Effect.gen(function*() {
      while (performance.now() < deadline) {
        const t0 = performance.now()
        // Each read arrives as a request does, from an I/O event: without this turn of the event
        // loop, readers answered synchronously (the leader's own) would starve its sockets.
        yield* nextTurn
        const exit = yield* Effect.exit(service.query("SELECT v FROM kv WHERE id = ?", [nextId()]))
        if (exit._tag === "Success") latenciesMs.push(performance.now() - t0)
        else errors++
      }
    })
    yield* Effect.all(Array.from({ length: readers }, () => reader), { concurrency: "unbounded", discard: true })
    // A node without readers (the leader with --leader-readers 0) still serves the others: its
    // CPU counts over the whole mode.
    const left = deadline - performance.now()
    if (left > 0) yield* Effect.sleep(Duration.millis(left))
    const cpu = process.cpuUsage(cpuBefore)
    // This process's CPU over the measurement (user + system), all of it: its readers, its node
    // serving other nodes (the leader's read-index answers), its event loop.
    return { latenciesMs, errors, cpuMs: (cpu.user + cpu.system) / 1000 }
  })

const program = Effect.scoped(Effect.gen(function*() {
  const service = yield* Tqlite.make({ dataDir, address, join, tickMs: 50, database: "bench" })
  let rows = 1000
  let routed: TqliteService | null = null
  yield* reply({ ready: true })
  const lines = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]()
  for (;;) {
    const next = yield* Effect.promise(() => lines.next())
    if (next.done === true) return
    const line = next.value as string
    const command = JSON.parse(line) as { cmd: string; rows?: number; mode?: string; seconds?: number; readers?: number; leader?: string }
    switch (command.cmd) {
      case "state": {
        const state = yield* service.state
        const voters = (yield* service.members).filter((m) => m.role === "voter").length
        yield* reply({ role: state?.role, appliedIndex: state?.appliedIndex, commitIndex: state?.commitIndex, voters })
        break
      }
      case "setup": {
        rows = command.rows ?? rows
        yield* service.execute("CREATE TABLE IF NOT EXISTS kv (id INTEGER PRIMARY KEY, v TEXT)")
        for (let i = 1; i <= rows; i += 100) {
          const values = Array.from({ length: Math.min(100, rows - i + 1) }, (_, j) => `(${i + j}, 'value ${i + j}')`).join(", ")
          yield* service.execute(`INSERT OR REPLACE INTO kv (id, v) VALUES ${values}`)
        }
        yield* reply({ done: true })
        break
      }
      case "measure": {
        rows = command.rows ?? rows
        const leads = (yield* service.state)?.role === "leader"
        let target = service
        if (command.mode === "leader only" && !leads) {
          routed ??= yield* Tqlite.makeRemote({ servers: [command.leader!], database: "bench", connectionsMax: command.readers ?? 8 })
          target = routed
        }
        const result = yield* measure(target, command.seconds ?? 3, command.readers ?? 8, rows)
        yield* reply(result)
        break
      }
      case "quit":
        return
    }
  }
}))

Effect.runPromise(program.pipe(Logger.withMinimumLogLevel(LogLevel.Warning))).then(
  () => process.exit(0),
  (error) => {
    process.stderr.write(`${String(error)}\n`)
    process.exit(1)
  }
)
