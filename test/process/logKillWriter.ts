// The child of the kill -9 test. Prints "loaded" once its modules are in (slow: the parent starts
// the next writer while the current one runs), waits for "go" on stdin, opens the log on the real
// disk, prints "ready <lastIndex>", then appends batches as fast as it can, printing
// "persisted <lastIndex> <commit>" after each persist returned (durable), until it is killed.
// Usage: node --import tsx test/process/logKillWriter.ts <dir> <term> <seed>
import { Effect, Layer, Logger, LogLevel } from "effect"
import { Disk } from "../../src/storage/Disk.ts"
import { LogStore } from "../../src/storage/LogStore.ts"
import { SegmentLog } from "../../src/storage/SegmentLog.ts"
import { Prng } from "../sim/Prng.ts"
import { entryFor, logKillClusterId, logKillSegmentBytesMax } from "./logKillEntries.ts"

const [dir, termArg, seedArg] = process.argv.slice(2)
if (dir === undefined || termArg === undefined || seedArg === undefined) throw new Error("usage: logKillWriter <dir> <term> <seed>")
const term = Number(termArg)
const prng = new Prng(Number(seedArg))

const program = Effect.gen(function* () {
  const store = yield* LogStore
  const recovered = yield* store.load
  let base = recovered.base
  const terms = recovered.entries.map((e) => e.term)
  let last = base.index + terms.length
  process.stdout.write(`ready ${last}\n`)
  for (let round = 0; ; round++) {
    const count = prng.int(1, 24)
    const entries = Array.from({ length: count }, (_, i) => entryFor(last + 1 + i, term))
    const compact = round % 25 === 24 && last - base.index > 300
    const compactIndex = last - 200
    const compactUpTo = compact ? { index: compactIndex, term: terms[compactIndex - base.index - 1]! } : undefined
    yield* store.persist([{
      hardState: { term, vote: 1, commit: last },
      entries,
      ...(compactUpTo === undefined ? {} : { compactUpTo })
    }])
    const commit = last
    last += count
    for (let i = 0; i < count; i++) terms.push(term)
    if (compactUpTo !== undefined) {
      terms.splice(0, compactUpTo.index - base.index)
      base = compactUpTo
    }
    process.stdout.write(`persisted ${last} ${commit}\n`)
  }
})

process.stdout.write("loaded\n")
process.stdin.once("data", () => void run())

const run = () => Effect.runPromise(program.pipe(
  Effect.provide(SegmentLog.layer({ dir, clusterId: logKillClusterId, segmentBytesMax: logKillSegmentBytesMax }).pipe(Layer.provide(Disk.layerNode))),
  Logger.withMinimumLogLevel(LogLevel.Warning)
)).catch((error: unknown) => {
  process.stderr.write(`writer failed: ${String(error)}\n`)
  process.exit(1)
})
