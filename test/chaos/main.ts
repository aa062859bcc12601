// `npm run chaos -- --minutes N --seed S [--nodes 3] [--faults kill,pause,...]`: real `tqlite
// start` processes in network namespaces of their own, faults from a seed, the four workloads
// through go-dqlite and the TypeScript client, then heal, converge and check. Prints one summary
// line, the availability gap per fault kind, and exits non-zero on any violation (with the
// command that replays the seed). See test/chaos/README.md.
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { parseArgs } from "node:util"
import { Duration, Effect, Schedule } from "effect"
import { Prng } from "../sim/Prng.ts"
import type { Violation } from "./checkers.ts"
import { checkBank, checkList, checkRegister, checkSet } from "./checkers.ts"
import { ChaosNode, eventually, sleep, useBundle, withClient } from "./cluster.ts"
import type { FaultKind, FaultRecord } from "./faults.ts"
import { FaultInjector, faultKinds, parseFaultKinds } from "./faults.ts"
import { compareContents, readContent, waitConvergence } from "./final.ts"
import type { ChaosOp } from "./history.ts"
import { isWrite, workloads } from "./history.ts"
import { ensureSandbox, makeNetwork, mountTmpfs, removeNetwork, unmount } from "./sandbox.ts"
import type { WorkloadConfig } from "./workloads.ts"
import { accountBalance, buildGoClient, database, finalReads, setupSchema, startGoClient, startTsClient } from "./workloads.ts"

interface Options {
  readonly minutes: number
  readonly seed: number
  readonly nodes: number
  readonly faults: ReadonlyArray<FaultKind>
  readonly goWorkers: number
  readonly tsWorkers: number
  readonly tmpfsMb: number
  readonly baseDir: string
  /** Run the nodes from the sources through tsx rather than from the bundle (test/bundle.ts). */
  readonly tsx: boolean
}

function parseOptions(argv: ReadonlyArray<string>): Options {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      minutes: { type: "string", default: "2" },
      seed: { type: "string" },
      nodes: { type: "string", default: "3" },
      faults: { type: "string", default: faultKinds.join(",") },
      "go-workers": { type: "string", default: "1" },
      "ts-workers": { type: "string", default: "1" },
      "tmpfs-mb": { type: "string", default: "1024" },
      dir: { type: "string" },
      tsx: { type: "boolean", default: false }
    }
  })
  const minutes = Number(values.minutes)
  const seed = values.seed === undefined ? (Date.now() % 1_000_000_000) : Number(values.seed)
  const nodes = Number(values.nodes)
  if (!(minutes > 0)) throw new Error("--minutes must be a positive number")
  if (!Number.isSafeInteger(seed) || seed < 0) throw new Error("--seed must be a non-negative integer")
  if (!Number.isSafeInteger(nodes) || nodes < 1 || nodes > 9) throw new Error("--nodes must be 1 to 9")
  const faults = parseFaultKinds(values.faults!)
  return {
    minutes,
    seed,
    nodes,
    faults,
    goWorkers: Number(values["go-workers"]),
    tsWorkers: Number(values["ts-workers"]),
    tmpfsMb: Number(values["tmpfs-mb"]),
    tsx: values.tsx!,
    baseDir: values.dir ?? path.join(os.tmpdir(), `tqlite-chaos-${seed}-${new Date().toISOString().replace(/[:.]/g, "")}`)
  }
}

function replayCommand(options: Options): string {
  return `npm run chaos -- --minutes ${options.minutes} --seed ${options.seed} --nodes ${options.nodes} --faults ${options.faults.join(",")}`
}

const log = (line: string) => process.stdout.write(`[${new Date().toISOString().slice(11, 23)}] ${line}\n`)

async function main(): Promise<number> {
  const options = parseOptions(process.argv.slice(2))
  fs.mkdirSync(options.baseDir, { recursive: true })
  log(`chaos: seed ${options.seed}, ${options.nodes} nodes, ${options.minutes} min, faults ${options.faults.join(",") || "none"}; logs in ${options.baseDir}`)
  const prng = new Prng(options.seed)
  const faultPrng = prng.fork("faults")
  const workloadPrng = prng.fork("workloads")
  if (!options.tsx) useBundle(log)
  const goBinary = await buildGoClient()
  const nodes = Array.from({ length: options.nodes }, (_, i) => new ChaosNode(i + 1, options.baseDir))
  const servers = nodes.map((node) => node.address)
  let cleaned = false
  const cleanup = async () => {
    if (cleaned) return
    cleaned = true
    for (const node of nodes) {
      node.resume()
      await node.kill()
    }
    for (const node of nodes) await unmount(node.dataDir)
    await removeNetwork(options.nodes)
  }
  const interrupted = async () => {
    log("chaos: interrupted; cleaning up")
    await cleanup()
    process.exit(130)
  }
  process.on("SIGINT", interrupted)
  process.on("SIGTERM", interrupted)

  // Kept for the record (written at the end, also when the run breaks).
  const history: Array<ChaosOp> = []
  const faults: Array<FaultRecord> = []
  let finals: ReadonlyArray<ChaosOp> = []
  try {
    await makeNetwork(options.nodes)
    for (const node of nodes) await mountTmpfs(node.dataDir, options.tmpfsMb)
    const voters = Math.min(options.nodes % 2 === 0 ? options.nodes - 1 : options.nodes, 3)
    const injector = new FaultInjector(nodes, faultPrng, log, voters)
    // Found the cluster on node 1; the others join it and the role manager promotes them.
    nodes[0]!.start()
    await injector.leader(60_000)
    for (const node of nodes.slice(1)) node.start([nodes[0]!.address])
    await eventually(`${options.nodes} members, ${voters} voters`, () =>
      withClient(servers, database, (client) => client.cluster).then((members) =>
        members.length === options.nodes && members.filter((m) => m.role === "voter").length === voters ? true : null), 120_000)
    const accounts = 5
    await withClient(servers, database, (client) => setupSchema(client, accounts).pipe(Effect.retry(Schedule.spaced(Duration.millis(500)).pipe(Schedule.intersect(Schedule.recurs(60))))))
    log(`chaos: cluster up (${servers.join(", ")}), schema ready`)

    const config: WorkloadConfig = {
      servers,
      workloads,
      epochStartMs: Date.now(),
      epochMs: 20_000,
      registerKeys: 3,
      listKeys: 3,
      accounts,
      opTimeoutMs: 5_000,
      pauseMs: 20
    }
    const go = startGoClient(goBinary, config, options.goWorkers, options.seed, path.join(options.baseDir, "go-client.log"), history)
    const ts = startTsClient(config, options.tsWorkers, workloadPrng, history)

    const deadline = Date.now() + options.minutes * 60_000
    await sleep(faultPrng.int(2_000, 5_000))
    while (options.faults.length > 0 && Date.now() < deadline) {
      faults.push(await injector.inject(faultPrng.pick(options.faults)))
      await sleep(faultPrng.int(2_000, 6_000))
    }
    if (options.faults.length === 0) await sleep(Math.max(0, deadline - Date.now()))
    await injector.healAll(null)

    log("chaos: stopping the workloads")
    await Promise.all([go.stop(), ts.stop()])
    const violations: Array<Violation> = []
    await injector.leader(60_000).catch((error) => {
      violations.push({ workload: "liveness", kind: "no-leader", message: String(error) })
    })
    finals = await withClient(servers, database, (client) =>
      finalReads(client, history).pipe(Effect.retry(Schedule.spaced(Duration.millis(500)).pipe(Schedule.intersect(Schedule.recurs(120)))))).catch((error) => {
        violations.push({ workload: "liveness", kind: "no-final-read", message: `the final reads failed: ${JSON.stringify(error)}` })
        return []
      })
    const all = [...history, ...finals]
    log(`chaos: final reads done; waiting for every node to apply everything`)
    const live = nodes.filter((node) => !injector.broken.has(node.index))
    for (const index of injector.broken) violations.push({ workload: "liveness", kind: "node-lost", message: `node ${index} never came back (see the faults above)` })
    const convergence = await waitConvergence(live, 60_000)
    if (!convergence.converged) violations.push({ workload: "convergence", kind: "no-convergence", message: `the nodes did not converge within 60 s: ${convergence.readings}` })
    for (const node of nodes) await node.kill()
    // A node that never converged may hold a half-applied file: say so rather than break.
    const contents = live.map((node) => {
      try {
        return readContent(node, database)
      } catch (error) {
        return { node: node.index, integrity: `cannot read its database: ${String(error)}`, tables: new Map<string, string>(), rowCounts: new Map<string, number>() }
      }
    })
    violations.push(...compareContents(contents))

    const checked = [...checkSet(all), ...checkBank(all, { accounts, total: accounts * accountBalance }), ...checkList(all)]
    // Without final reads every list would say so once more: the liveness violation says it.
    violations.push(...checked.filter((v) => finals.length > 0 || v.kind !== "no-final-read"))
    const register = checkRegister(all)
    violations.push(...register.violations)

    report(options, history, faults, violations, register.uncheckedKeys, injector.exits, contents.map((c) => `node ${c.node}: ${[...c.rowCounts].map(([t, n]) => `${t} ${n}`).join(", ")}`))
    if (violations.length > 0) {
      log(`chaos: FAILED — replay with: ${replayCommand(options)}`)
      return 1
    }
    return 0
  } catch (error) {
    log(`chaos: the run broke: ${error instanceof Error ? error.stack ?? error.message : String(error)}`)
    log(`chaos: seed ${options.seed}; replay with: ${replayCommand(options)}`)
    return 2
  } finally {
    fs.writeFileSync(path.join(options.baseDir, "history.jsonl"), [...history, ...finals].map((op) => JSON.stringify(op)).join("\n") + "\n")
    fs.writeFileSync(path.join(options.baseDir, "faults.json"), JSON.stringify(faults, null, 1))
    await cleanup()
  }
}

function report(
  options: Options,
  history: ReadonlyArray<ChaosOp>,
  faults: ReadonlyArray<FaultRecord>,
  violations: ReadonlyArray<Violation>,
  uncheckedRegisterKeys: number,
  exits: FaultInjector["exits"],
  rowCounts: ReadonlyArray<string>
): void {
  for (const violation of violations.slice(0, 50)) log(`VIOLATION ${violation.workload}/${violation.kind}: ${violation.message}`)
  if (violations.length > 50) log(`… and ${violations.length - 50} more violations`)
  for (const exit of exits) log(`unexpected exit: node ${exit.node} (${exit.code ?? exit.signal}) during ${exit.during ?? "no fault"}`)
  for (const fault of faults.filter((f) => f.problem !== null)) log(`fault problem: ${fault.kind}: ${fault.problem}`)
  if (uncheckedRegisterKeys > 0) log(`register: a key's linearizability search ran out of budget (neither proven nor refuted)`)
  log(`content: ${rowCounts.join(" | ")}`)
  const count = (type: string) => history.filter((op) => op.type === type).length
  const byWorkload = workloads.map((w) => {
    const ops = history.filter((op) => op.workload === w)
    return `${w} ${ops.filter((op) => op.type === "ok").length}/${ops.length}`
  }).join(", ")
  const byClient = ["g", "t"].map((prefix) => `${prefix === "g" ? "go" : "ts"} ${history.filter((op) => op.client.startsWith(prefix) && op.type === "ok").length} ok`).join(", ")
  log(`ops ok/all per workload: ${byWorkload}; ${byClient}`)
  // Availability gap: from the fault to the first acknowledged write invoked after it.
  const writes = history.filter((op) => isWrite(op) && op.type === "ok").sort((a, b) => a.invokedAt - b.invokedAt)
  const kinds = [...new Set(faults.map((f) => f.kind))]
  const firstWriteAfter = (at: number) => {
    const next = writes.find((op) => op.invokedAt >= at)
    return next === undefined ? null : next.completedAt! - at
  }
  const seconds = (ms: number | null) => (ms === null ? "—" : `${(ms / 1000).toFixed(2)} s`)
  const medianAndMax = (gaps: ReadonlyArray<number | null>) => {
    const known = gaps.filter((g): g is number => g !== null).sort((a, b) => a - b)
    const median = known.length === 0 ? null : known[Math.floor((known.length - 1) / 2)]!
    return `median ${seconds(median)}, max ${seconds(known.at(-1) ?? null)}${known.length < gaps.length ? `, ${gaps.length - known.length} with no write after` : ""}`
  }
  const gapLines = kinds.map((kind) => {
    const ofKind = faults.filter((f) => f.kind === kind)
    const restarted = ofKind.filter((f) => f.restartedAt !== null)
    return `  ${kind}: ${ofKind.length} faults, availability gap ${medianAndMax(ofKind.map((f) => firstWriteAfter(f.startedAt)))}` +
      (restarted.length > 0
        ? `; from the restart: ${medianAndMax(restarted.map((f) => firstWriteAfter(f.restartedAt!)))}` +
          `; from every node answering again: ${medianAndMax(restarted.map((f) => firstWriteAfter(f.upAt ?? f.restartedAt!)))}`
        : "")
  })
  process.stdout.write(`chaos: seed ${options.seed}, ${history.length} ops (${count("ok")} ok, ${count("fail")} failed, ${count("info")} unknown), ${faults.length} faults, ${violations.length} violations\n`)
  for (const line of gapLines) process.stdout.write(`${line}\n`)
}

if (ensureSandbox()) {
  main().then((code) => process.exit(code), (error) => {
    process.stderr.write(`chaos: ${error instanceof Error ? error.stack ?? error.message : String(error)}\n`)
    process.exit(2)
  })
}
