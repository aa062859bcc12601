// Script tests for the core (etcd's interaction tests, in small): each test/raft/testdata/*.txt
// holds commands, each followed by `----` and the event log it must produce. Regenerate the
// expected output after a deliberate change with
//   RAFT_REWRITE=1 npx vitest run test/raft/interaction.test.ts
// and review the diff. Commands:
//   add-nodes ids=1,2,3 [standbys=..] [spares=..] [key=value …RaftConfig overrides]
//   campaign N | tick N [count] | tick-all [count] | propose N payload… | read-index N id…
//   transfer N to|null | change N add|remove|assign node [role]
//   deliver [from=N] [to=N] [type=Tag] [drop]   (once, what is queued now)
//   stabilize | partition 1,2 3 | isolate N | heal | hold N | release N | persist N [count]
//   snapshot N [index] | restart N | status | queue | lease N | flush-commit N
import { readdirSync, readFileSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { describe, expect, it } from "vitest"
import type { RaftConfig } from "../../src/raft/config.ts"
import { leaseAnchor, leaseHolds, leaseTicks } from "../../src/raft/lease.ts"
import type { MembershipChange } from "../../src/raft/membership.ts"
import type { Message } from "../../src/raft/messages.ts"
import type { Input, RaftEvent, Ready } from "../../src/raft/state.ts"
import type { Entry, NodeId, Role } from "../../src/raft/types.ts"
import { Cluster, text } from "./harness.ts"

const dataDir = join(import.meta.dirname, "testdata")
const rewrite = process.env.RAFT_REWRITE === "1"

interface Block {
  readonly comments: string[]
  readonly command: string
  readonly expected: string
}

function parse(source: string): Block[] {
  const blocks: Block[] = []
  const lines = source.split("\n")
  let comments: string[] = []
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i] ?? ""
    if (line.trim() === "" && comments.length === 0) continue
    if (line.startsWith("#") || line.trim() === "") {
      comments.push(line)
      continue
    }
    const command = line
    if (lines[i + 1] !== "----") throw new Error(`line ${i + 2}: expected ---- after "${command}"`)
    i += 2
    const out: string[] = []
    while (i < lines.length && (lines[i] ?? "") !== "") out.push(lines[i++] ?? "")
    blocks.push({ comments, command, expected: out.join("\n") })
    comments = []
  }
  return blocks
}

function render(blocks: ReadonlyArray<Block>, outputs: ReadonlyArray<string>): string {
  return blocks.map((b, i) => [...b.comments, b.command, "----", outputs[i] ?? ""].join("\n")).join("\n\n") + "\n"
}

const entry = (e: Entry): string => {
  switch (e.kind) {
    case "command":
      return `${e.index}/${e.term}:${JSON.stringify(text(e))}`
    case "barrier":
      return `${e.index}/${e.term}:barrier`
    case "config":
      return `${e.index}/${e.term}:config(${e.config.members.map((m) => `${m.id}${m.role[0]}`).join(" ")})`
  }
}

function message(m: Message): string {
  const head = `${m.from}->${m.to} ${m._tag}`
  switch (m._tag) {
    case "RequestVote":
      return `${head}${m.pre ? "(pre)" : ""} term=${m.term} last=${m.lastIndex}/${m.lastTerm}${m.transfer ? " transfer" : ""}`
    case "RequestVoteResponse":
      return `${head}${m.pre ? "(pre)" : ""} term=${m.term} ${m.granted ? "granted" : "rejected"}`
    case "AppendEntries":
      return `${head} term=${m.term} prev=${m.prevIndex}/${m.prevTerm} [${m.entries.map(entry).join(" ")}] commit=${m.commit}`
    case "AppendEntriesResponse":
      return m.success ? `${head} term=${m.term} ok index=${m.index}` : `${head} term=${m.term} reject index=${m.index} hint=${m.hintIndex}/${m.hintTerm}`
    case "Heartbeat":
      return `${head} term=${m.term} commit=${m.commit}${m.context > 0 ? ` round=${m.context}` : ""}`
    case "HeartbeatResponse":
      return `${head} term=${m.term}${m.context > 0 ? ` round=${m.context}` : ""}`
    case "InstallSnapshot":
      return `${head} term=${m.term} snapshot=${m.meta.index}/${m.meta.term}`
    case "InstallSnapshotResponse":
      return `${head} term=${m.term} index=${m.index}`
    case "TimeoutNow":
      return `${head} term=${m.term}`
    case "ReadIndexRequest":
      return `${head} term=${m.term} context=${m.context}`
    case "ReadIndexResponse":
      return `${head} term=${m.term} context=${m.context} ${m.refused === null ? `index=${m.index}` : `refused=${m.refused}`}`
  }
}

function inputLine(input: Input): string {
  switch (input._tag) {
    case "Tick":
      return "tick"
    case "Message":
      return `receive ${message(input.message)}`
    case "Propose":
      return `propose ${input.proposals.map((p) => JSON.stringify(new TextDecoder().decode(p.data))).join(" ")}`
    case "ChangeMembership":
      return `change ${JSON.stringify(input.change)}`
    case "ReadIndex":
      return `read-index ${input.ids.join(" ")}`
    case "TransferLeadership":
      return `transfer to=${input.to ?? "any"}`
    case "Campaign":
      return "campaign"
    case "Persisted":
      return `persisted ${input.index}/${input.term}`
    case "SnapshotTaken":
      return `snapshot-taken ${input.meta.index}/${input.meta.term}`
    case "EntriesLoaded":
      return `loaded seq=${input.seq} [${input.entries.map(entry).join(" ")}]`
    case "Applied":
      return `applied ${input.index}`
    case "FlushCommit":
      return "flush-commit"
    case "Drain":
      return "drain"
  }
}

function event(e: RaftEvent): string {
  switch (e._tag) {
    case "StateChanged":
      return `${e.role} term=${e.term} leader=${e.leader ?? "-"}`
    case "Accepted":
      return `accepted id=${e.id} index=${e.index}`
    case "Rejected":
      return `rejected id=${e.id} ${e.reason} leader=${e.leader ?? "-"}`
    case "ReadReady":
      return `read-ready id=${e.id} index=${e.index}`
    case "TransferAborted":
      return `transfer-aborted to=${e.to}`
  }
}

function readyLines(ready: Ready): string[] {
  const out: string[] = []
  const r = ready
  if (r.hardState !== null) out.push(`hard-state term=${r.hardState.term} vote=${r.hardState.vote ?? "-"} commit=${r.hardState.commit}`)
  if (r.snapshot !== null) out.push(`restore snapshot=${r.snapshot.index}/${r.snapshot.term}`)
  if (r.truncateFrom !== null) out.push(`truncate from=${r.truncateFrom}`)
  if (r.entries.length > 0) out.push(`append ${r.entries.map(entry).join(" ")}`)
  if (r.compactUpTo !== null) out.push(`compact to=${r.compactUpTo.index}/${r.compactUpTo.term}`)
  for (const m of r.messages) out.push(`send ${message(m)}`)
  for (const m of r.messagesAfterPersist) out.push(`send-after-persist ${message(m)}`)
  if (r.committed.length > 0) out.push(`apply ${r.committed.map(entry).join(" ")}`)
  for (const e of r.events) out.push(`event ${event(e)}`)
  for (const l of r.loads) out.push(`load seq=${l.seq} ${l.lo}..${l.hi}`)
  return out
}

function parseValue(v: string): number | boolean | string {
  if (v === "true") return true
  if (v === "false") return false
  return Number.isNaN(Number(v)) ? v : Number(v)
}

function run(blocks: ReadonlyArray<Block>): string[] {
  let cluster: Cluster | null = null
  const outputs: string[] = []
  // The observer writes into the current block's output.
  let out: string[] = []
  for (const block of blocks) {
    out = []
    const [name, ...args] = block.command.split(/\s+/)
    const named = new Map(args.filter((a) => a.includes("=")).map((a) => a.split("=", 2) as [string, string]))
    const positional = args.filter((a) => !a.includes("="))
    const num = (i: number) => Number(positional[i])
    if (name === "add-nodes") {
      const list = (key: string) => (named.get(key)?.split(",") ?? []).map(Number)
      const ids = list("ids")
      const roleOf = (id: NodeId): Role => (list("standbys").includes(id) ? "standby" : list("spares").includes(id) ? "spare" : "voter")
      const config: Record<string, unknown> = {}
      for (const [k, v] of named) if (!["ids", "standbys", "spares"].includes(k)) config[k] = parseValue(v)
      cluster = new Cluster({ ids, members: ids.map((id) => ({ id, role: roleOf(id) })), config: config as Partial<RaftConfig> })
      cluster.observer = (id, input, ready) => {
        const lines = readyLines(ready)
        if (lines.length === 0 && (input._tag === "Tick" || input._tag === "Persisted" || input._tag === "Drain" || input._tag === "Applied")) return
        out.push(`n${id} ${inputLine(input)}`, ...lines.map((l) => `  ${l}`))
      }
      outputs.push(ids.map((id) => `n${id} ${roleOf(id)}`).join("\n"))
      continue
    }
    const c = cluster
    if (c === null) throw new Error("add-nodes first")
    const matches = (m: Message) =>
      (named.get("from") === undefined || m.from === Number(named.get("from"))) &&
      (named.get("to") === undefined || m.to === Number(named.get("to"))) &&
      (named.get("type") === undefined || m._tag === named.get("type"))
    switch (name) {
      case "campaign":
        c.step(num(0), { _tag: "Campaign" })
        break
      case "flush-commit":
        c.step(num(0), { _tag: "FlushCommit" })
        break
      case "tick":
        c.tick(num(0), positional[1] === undefined ? 1 : num(1))
        break
      case "tick-all":
        c.tickAll(positional[0] === undefined ? 1 : num(0))
        break
      case "propose":
        c.propose(num(0), ...positional.slice(1))
        break
      case "read-index":
        c.step(num(0), { _tag: "ReadIndex", ids: positional.slice(1).map(Number) })
        break
      case "transfer":
        c.step(num(0), { _tag: "TransferLeadership", id: 1, to: positional[1] === "null" ? null : num(1) })
        break
      case "change": {
        const node = num(2)
        const kind = positional[1]
        const change: MembershipChange =
          kind === "add"
            ? { kind: "add", node, address: `node${node}`, role: (positional[3] ?? "voter") as Role }
            : kind === "remove"
              ? { kind: "remove", node }
              : { kind: "assign", node, role: (positional[3] ?? "voter") as Role }
        c.step(num(0), { _tag: "ChangeMembership", id: 1, change })
        break
      }
      case "deliver":
        if (args.includes("drop")) for (const m of c.take(matches)) out.push(`drop ${message(m)}`)
        else c.deliver(matches)
        break
      case "stabilize":
        c.stabilize()
        break
      case "partition":
        c.partition(...positional.map((g) => g.split(",").map(Number)))
        break
      case "isolate":
        c.isolate(num(0))
        break
      case "heal":
        c.heal()
        break
      case "hold":
        c.node(num(0)).holdPersist = true
        break
      case "release":
        c.node(num(0)).holdPersist = false
        c.persist(num(0))
        break
      case "persist":
        c.persist(num(0), positional[1] === undefined ? Infinity : num(1))
        break
      case "hold-loads":
        c.node(num(0)).holdLoads = true
        break
      case "serve-loads":
        c.serveLoads(num(0), positional[1] === undefined ? Infinity : num(1))
        break
      case "cache":
        for (const n of c.nodes.values()) {
          const log = n.state.log
          const evicted = log.entries.filter((e) => e.kind === "evicted").map((e) => e.index)
          out.push(`n${n.id} resident=${log.residentFrom}..${n.lastIndex} bytes=${log.residentBytes} evicted=[${evicted.join(",")}]`)
        }
        break
      case "snapshot":
        c.takeSnapshot(num(0), positional[1] === undefined ? undefined : num(1))
        break
      case "restart":
        c.restart(num(0))
        break
      case "status":
        for (const n of c.nodes.values()) {
          const s = n.state
          out.push(
            `n${n.id} ${s.role} term=${s.term} vote=${s.vote ?? "-"} leader=${s.leader ?? "-"} last=${n.lastIndex} stable=${s.log.stable} commit=${s.log.committed} applied=${s.log.applied} base=${s.log.base.index}`
          )
        }
        break
      case "lease": {
        const s = c.node(num(0)).state
        const anchor = leaseAnchor(s)
        const why = s.role !== "leader" ? "not leader" : s.leaseRevoked ? "revoked (TimeoutNow sent)" : anchor === null ? "no entry of this term committed" : null
        if (why !== null) out.push(`n${num(0)} no lease: ${why}`)
        else out.push(`n${num(0)} lease ${leaseHolds(s) ? "holds" : "expired"}: anchor=${anchor} ticks=${s.ticks} lasts=${leaseTicks(s.config)}`)
        break
      }
      case "queue":
        for (const m of c.queue) out.push(message(m))
        break
      default:
        throw new Error(`unknown command "${block.command}"`)
    }
    outputs.push(out.length === 0 ? "ok" : out.join("\n"))
  }
  return outputs
}

describe("interaction scripts (test/raft/testdata)", () => {
  const files = readdirSync(dataDir).filter((f) => f.endsWith(".txt")).sort()
  it("has scripts", () => {
    expect(files.length).toBeGreaterThan(0)
  })
  for (const file of files) {
    it(file, () => {
      const path = join(dataDir, file)
      const blocks = parse(readFileSync(path, "utf8"))
      const outputs = run(blocks)
      if (rewrite) {
        writeFileSync(path, render(blocks, outputs))
        return
      }
      blocks.forEach((block, i) => {
        expect(outputs[i], `${file}: ${block.command}`).toBe(block.expected)
      })
    })
  }
})
