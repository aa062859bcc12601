// A leader whose SQLite cannot be opened (issue 13): it used to keep leading and fail every
// client. Now it hands leadership over, clients get SqlNotLeader (and so move on), the node says
// why (an ERROR line, /health's reason while it still leads), and a write on the new leader is
// acknowledged within a bound. Two kinds of failure, in the simulator's full cluster (real SQLite
// files, simulated clock):
// - only SQLite cannot use the file (here: not a database): the node follows on, and its page
//   applier, which needs no SQLite, overwrites the bad file with the committed pages;
// - the follower path cannot write the file either (here: a directory in its place): the applier
//   dies of it and the node stops as any actor that gave up (RaftNode.failed → exit 1 in start).
import fs from "node:fs"
import path from "node:path"
import { Clock, Duration, Effect, Logger } from "effect"
import { afterAll, describe, expect, it } from "vitest"
import { contentOf, exec, makeCluster, query, rowsOf, session, simulate, tickMs } from "./clusterHelpers.ts"
import { tempDirectory } from "./helpers.ts"

const dirs: Array<{ remove(): void }> = []
afterAll(() => {
  for (const dir of dirs) dir.remove()
})
const newDir = () => {
  const dir = tempDirectory("tqlite-cannotopen-")
  dirs.push(dir)
  return dir.path
}

/** The lines logged at ERROR or WARN, with their annotations' node. */
function captureLogs() {
  const lines: Array<string> = []
  const logger = Logger.make(({ logLevel, message }) => {
    if (logLevel._tag === "Error" || logLevel._tag === "Warning") lines.push(`${logLevel.label} ${Array.isArray(message) ? message.join(" ") : String(message)}`)
  })
  return { lines, layer: Logger.replace(Logger.defaultLogger, logger) }
}

// From the failed write to the first write acknowledged by another leader, in simulated ms: a
// hand-over (TimeoutNow) needs no election timeout; 50 ticks leaves room for one failed try.
const handOverMsMax = 50 * tickMs

describe("a leader that cannot open its SQLite", () => {
  it("hands leadership over, says why, and its follower path overwrites the bad file with the committed pages", () => {
    const logs = captureLogs()
    const outcome = simulate(Effect.gen(function*() {
      const cluster = makeCluster(newDir())
      yield* cluster.bootstrap([1, 2, 3])
      const first = yield* cluster.awaitLeader()
      const databasePath = first.machine.databasePath("main")
      fs.mkdirSync(path.dirname(databasePath), { recursive: true })
      fs.writeFileSync(databasePath, Buffer.alloc(3 * 4096, "not a database "))
      const s1 = yield* session(first)
      const startMs = yield* Clock.currentTimeMillis
      const refused = yield* Effect.either(exec(s1, "CREATE TABLE t (v INTEGER)"))
      // Sampled before the hand-over's messages could travel: the node still leads its term.
      const healthWhileLeading = yield* first.dbs.cannotLead
      // A second client within the retry window is refused at once, without another ERROR line.
      const again = yield* Effect.either(exec(s1, "CREATE TABLE t (v INTEGER)"))
      const second = yield* cluster.awaitLeader(500, first.id)
      const s2 = yield* session(second)
      yield* exec(s2, "CREATE TABLE t (v INTEGER)")
      yield* exec(s2, "INSERT INTO t VALUES (1), (2)")
      const acknowledgedMs = (yield* Clock.currentTimeMillis) - startMs
      yield* exec(s2, "INSERT INTO t VALUES (3)")
      const converged = yield* cluster.awaitConverged(1000)
      const rows = rowsOf(yield* query(s2, "SELECT v FROM t ORDER BY v"))
      const firstRole = (yield* first.raft.status).role
      const healthAfter = yield* first.dbs.cannotLead
      const stopped = (yield* first.raft.condition).stopped
      const thirdPath = cluster.up().find((n) => n.id !== first.id && n.id !== second.id)!.machine.databasePath("main")
      yield* cluster.shutdown()
      return { refused, again, healthWhileLeading, acknowledgedMs, converged, rows, firstRole, healthAfter, stopped, databasePath, thirdPath }
    }).pipe(Effect.provide(logs.layer)))
    expect(outcome.refused._tag).toBe("Left")
    if (outcome.refused._tag === "Left") {
      expect(outcome.refused.left._tag).toBe("SqlNotLeader")
      expect(outcome.refused.left.message).toMatch(/cannot lead: cannot open database main \(.*file is not a database\); handing leadership over/)
    }
    expect(outcome.again._tag).toBe("Left")
    if (outcome.again._tag === "Left") expect(outcome.again.left._tag).toBe("SqlNotLeader")
    expect(outcome.healthWhileLeading).toMatch(/^cannot lead: cannot open database main/)
    expect(outcome.acknowledgedMs).toBeLessThanOrEqual(handOverMsMax)
    expect(outcome.firstRole).toBe("follower")
    expect(outcome.healthAfter).toBeNull()
    expect(outcome.stopped).toEqual([])
    expect(outcome.converged).toBe(true)
    expect(outcome.rows).toEqual([[1n], [2n], [3n]])
    // One ERROR line for the episode, naming the database and SQLite's reason.
    const errors = logs.lines.filter((line) => line.startsWith("ERROR"))
    expect(errors).toHaveLength(1)
    expect(errors[0]).toMatch(/cannot lead: cannot open database main \(.*file is not a database\)/)
    expect(logs.lines.some((line) => /^WARN cannot lead: .*handing leadership over/.test(line))).toBe(true)
    // The page applier replaced the garbage with the committed database: the same rows as the
    // other follower's file.
    expect(contentOf(outcome.databasePath)).toEqual(contentOf(outcome.thirdPath))
    expect(contentOf(outcome.databasePath).split("\n")).toHaveLength(4)
  })

  it("stops the node when the follower path cannot write the file either, and the others write on", () => {
    const logs = captureLogs()
    const outcome = simulate(Effect.gen(function*() {
      const cluster = makeCluster(newDir())
      yield* cluster.bootstrap([1, 2, 3])
      const first = yield* cluster.awaitLeader()
      const databasePath = first.machine.databasePath("main")
      fs.mkdirSync(databasePath, { recursive: true })
      const s1 = yield* session(first)
      const startMs = yield* Clock.currentTimeMillis
      const refused = yield* Effect.either(exec(s1, "CREATE TABLE t (v INTEGER)"))
      const second = yield* cluster.awaitLeader(500, first.id)
      const s2 = yield* session(second)
      yield* exec(s2, "CREATE TABLE t (v INTEGER)")
      const acknowledgedMs = (yield* Clock.currentTimeMillis) - startMs
      const failed = yield* Effect.either(first.raft.failed.pipe(Effect.timeout(Duration.millis(200 * tickMs))))
      for (let v = 1; v <= 3; v++) yield* exec(s2, "INSERT INTO t VALUES (?)", [v])
      const rows = rowsOf(yield* query(s2, "SELECT v FROM t ORDER BY v"))
      const firstStatus = yield* first.raft.status
      yield* cluster.shutdown()
      return { refused, acknowledgedMs, failed, rows, firstStatus }
    }).pipe(Effect.provide(logs.layer)))
    expect(outcome.refused._tag).toBe("Left")
    if (outcome.refused._tag === "Left") expect(outcome.refused.left.message).toMatch(/cannot open database main/)
    expect(outcome.acknowledgedMs).toBeLessThanOrEqual(handOverMsMax)
    // The applier gave up on the page file: RaftNode.failed, the cue `tqlite start` exits 1 on.
    expect(outcome.failed._tag).toBe("Left")
    if (outcome.failed._tag === "Left") {
      expect(outcome.failed.left._tag).toBe("ActorFailed")
      if (outcome.failed.left._tag === "ActorFailed") expect(outcome.failed.left.actor).toMatch(/applier/)
    }
    expect(outcome.firstStatus.role).not.toBe("leader")
    expect(outcome.rows).toEqual([[1n], [2n], [3n]])
  })
})
