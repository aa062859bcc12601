// Script tests for the leader's writer core (src/sqlite/writerCore.ts), in the style of
// test/raft/interaction.test.ts: each test/sqlite/testdata/writer/*.txt holds commands, each
// followed by `----` and the effects the core emits for it. The harness plays the shell: it only
// feeds what a command says. Regenerate after a deliberate change with
//   WRITER_REWRITE=1 npx vitest run test/sqlite/writerCore.test.ts
// and review the diff. Commands (times in ms; `at` sets the input's clock, default the last one):
//   limits key=value…                     a fresh writer (small defaults below)
//   submit ID [batch|alone|autocommit] [bytes=B] [at=T] [disk-full]
//   lease ID [at=T]                       ask for an interactive transaction's lease
//   ran ID ok|error=CODE [lost]           a statement's result (lost: SQLite ended the transaction)
//   committed seq=N bytes=B [wal=W] [done=R] [oldest=MS] | committed none [wal=W] [done=R] [oldest=MS]
//                                         (done: every pool read numbered below R has ended;
//                                         oldest: the oldest read in progress began MS ago)
//   commit-failed code=C [open] | commit-open
//   proposed seq=N applied|copy|skipped [index=I] [at=T]
//   proposed seq=N NotLeader|ProposalDropped|StorageFull|Overloaded|RequestTimeout|OutcomeUnknown [lost] [at=T]
//   confirmed ok|NotLeader [at=T] | checkpointed ms=M [readers|other wal=W started=R] | discarded
//                                         (readers: pool readers held it back; started: reads begun by then)
//   lease-commit LEASE ID [at=T] | lease-end LEASE [toobig] | checkpoint-request | tick T
//   flushed                               the shell let ready fibers run (after `flush`)
//   gathered [at=T]                       a `gather` wait ended (time up, or the shell had other work)
//   stop not-leader|lost|full [keep-wal] | state
import { readdirSync, readFileSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { describe, expect, it } from "vitest"
import type { SqlFailure } from "../../src/sqlite/Sql.ts"
import { SqlError, SqlLeadershipLost, SqlNotLeader } from "../../src/sqlite/Sql.ts"
import type { Isolation, ProposalOutcome, WriterEffect, WriterInput, WriterLimits, WriterState } from "../../src/sqlite/writerCore.ts"
import { initialWriterState, writerStep } from "../../src/sqlite/writerCore.ts"
import { scriptLimits } from "./writerLimits.ts"

const dataDir = join(import.meta.dirname, "testdata", "writer")
const rewrite = process.env.WRITER_REWRITE === "1"


interface Block {
  readonly comments: ReadonlyArray<string>
  readonly command: string
  readonly expected: string
}

function parse(source: string): Array<Block> {
  const blocks: Array<Block> = []
  const lines = source.split("\n")
  let comments: Array<string> = []
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i] ?? ""
    if (line.trim() === "" && comments.length === 0) continue
    if (line.startsWith("#") || line.trim() === "") {
      comments.push(line)
      continue
    }
    if (lines[i + 1] !== "----") throw new Error(`line ${i + 2}: expected ---- after "${line}"`)
    i += 2
    const out: Array<string> = []
    while (i < lines.length && (lines[i] ?? "") !== "") out.push(lines[i++] ?? "")
    blocks.push({ comments, command: line, expected: out.join("\n") })
    comments = []
  }
  return blocks
}

const failure = (error: SqlFailure): string => (error._tag === "SqlError" ? `SqlError(${error.code})` : error._tag)

export function renderEffect(effect: WriterEffect): string {
  switch (effect._tag) {
    case "Answer":
      return `answer ${effect.id} ${effect.outcome.ok ? "ok" : failure(effect.outcome.error)}`
    case "GrantLease":
      return `grant ${effect.id} lease=${effect.leaseId}`
    case "LeaseEnded":
      return `lease-ended ${effect.leaseId}${effect.endedBy === null ? "" : ` by ${failure(effect.endedBy)}`}`
    case "RunStatement":
      return `run ${effect.id} ${effect.isolation}${effect.begin ? " begin" : ""}`
    case "CommitLocally":
      return `commit-locally seq=${effect.seq}${effect.leaseId === null ? "" : ` lease=${effect.leaseId}`}`
    case "Propose":
      return `propose seq=${effect.seq}${effect.delayMs > 0 ? ` after=${effect.delayMs}ms` : ""}`
    case "ConfirmLeadership":
      return "confirm-leadership"
    case "Checkpoint":
      return effect.waitForReaders ? "checkpoint" : "checkpoint no-wait"
    case "Flush":
      return "flush"
    case "Gather":
      return `gather wait=${effect.waitMs}ms`
    case "DiscardLocalCommit":
      return "discard-local-commit"
    case "RollbackLease":
      return `rollback-lease ${effect.leaseId}`
    case "Release":
      return `release ${effect.mode}${effect.unresolved ? " unresolved" : ""}`
  }
}

function renderState(s: WriterState): string {
  const parts = [`queue=[${s.queue.map((r) => r.id).join(",")}]`]
  if (s.batch !== null) parts.push(`batch=[${s.batch.waiters.map((w) => w.id).join(",")}]`)
  if (s.lease !== null) parts.push(`lease=${s.lease.id}(${s.lease.state})`)
  if (s.running !== null) parts.push(s.running.kind === "statement" ? `running=statement(${s.running.request.id})` : "running=local-commit")
  const inflight = s.inflight
  if (inflight !== null) {
    parts.push(inflight.kind === "entry" || inflight.kind === "confirm"
      ? `inflight=${inflight.kind}(seq=${inflight.seq} waiters=${inflight.waiters.map((w) => w.id).join(",")}${inflight.ambiguous ? " ambiguous" : ""})`
      : `inflight=${inflight.kind}`)
  }
  if (s.checkpointWanted !== false) parts.push(s.checkpointWanted === "wait" ? "checkpoint-wanted" : "checkpoint-wanted(no-wait)")
  if (s.checkpointBackoff !== null) parts.push(`checkpoint-backoff(reads<${s.checkpointBackoff.readsBefore} wal>${s.checkpointBackoff.walBytesAbove})`)
  if (s.stoppedBy !== null) parts.push(`stopped=${failure(s.stoppedBy)}`)
  const st = s.stats
  parts.push(`stats: entries=${st.entries} statements=${st.statements} retries=${st.retries} checkpoints=${st.checkpoints}${st.checkpointsBusy > 0 ? ` busy=${st.checkpointsBusy}` : ""} resets=${st.resets}`)
  return parts.join(" ")
}

/** `key=value` and bare words of a command line. */
function args(words: ReadonlyArray<string>): { readonly kv: Map<string, string>; readonly flags: Set<string>; readonly bare: Array<string> } {
  const kv = new Map<string, string>()
  const flags = new Set<string>()
  const bare: Array<string> = []
  for (const word of words) {
    const at = word.indexOf("=")
    if (at > 0) kv.set(word.slice(0, at), word.slice(at + 1))
    else {
      flags.add(word)
      bare.push(word)
    }
  }
  return { kv, flags, bare }
}

export class Script {
  state: WriterState = initialWriterState("db", scriptLimits)

  private now(kv: Map<string, string>): number {
    const at = kv.get("at")
    return at === undefined ? this.state.nowMs : Number(at)
  }

  /** The input a command line stands for, or null for `limits` / `state`. */
  input(line: string): WriterInput | null {
    const [name = "", ...rest] = line.trim().split(/\s+/)
    const { kv, flags, bare } = args(rest)
    const num = (word: string | undefined) => {
      const value = Number(word)
      if (!Number.isSafeInteger(value)) throw new Error(`"${line}": a number expected, got ${word}`)
      return value
    }
    switch (name) {
      case "limits": {
        const limits: Record<string, number> = { ...scriptLimits }
        for (const [key, value] of kv) {
          if (!(key in limits)) throw new Error(`unknown limit ${key}`)
          limits[key] = num(value)
        }
        this.state = initialWriterState("db", limits as unknown as WriterLimits)
        return null
      }
      case "state":
        return null
      case "submit": {
        const isolation = (["batch", "alone", "autocommit"] as const).find((i) => flags.has(i)) ?? "batch"
        return { _tag: "Submitted", id: num(bare[0]), bytes: num(kv.get("bytes") ?? "10"), isolation: isolation satisfies Isolation, nowMs: this.now(kv), diskFull: flags.has("disk-full") ? "disk full: the log cannot write" : null }
      }
      case "lease":
        return { _tag: "LeaseRequested", id: num(bare[0]), nowMs: this.now(kv), diskFull: flags.has("disk-full") ? "disk full" : null }
      case "ran": {
        const code = kv.get("error")
        return { _tag: "StatementRan", id: num(bare[0]), outcome: code === undefined ? { ok: true, value: null } : { ok: false, error: new SqlError({ code: num(code), message: "script" }) }, transactionOpen: !flags.has("lost") }
      }
      case "committed": {
        const walBytes = num(kv.get("wal") ?? "0")
        const horizon = { readsDoneBefore: num(kv.get("done") ?? "0"), oldestReadMs: num(kv.get("oldest") ?? "0") }
        if (flags.has("none")) return { _tag: "LocalCommitDone", result: { _tag: "Committed", commit: null, walBytes, ...horizon } }
        return { _tag: "LocalCommitDone", result: { _tag: "Committed", commit: { seq: num(kv.get("seq")), pageBytes: num(kv.get("bytes") ?? "4096") }, walBytes, ...horizon } }
      }
      case "commit-failed":
        return { _tag: "LocalCommitDone", result: { _tag: "Failed", error: new SqlError({ code: num(kv.get("code") ?? "1"), message: "script" }), transactionOpen: flags.has("open") } }
      case "commit-open":
        return { _tag: "LocalCommitDone", result: { _tag: "StillOpen" } }
      case "proposed": {
        const seq = num(kv.get("seq"))
        const kind = bare[0] ?? ""
        let outcome: ProposalOutcome
        if (kind === "applied" || kind === "copy" || kind === "skipped") {
          outcome = { _tag: "Applied", index: num(kv.get("index") ?? "0"), committed: kind !== "skipped", result: kind === "applied" ? "Own" : kind === "copy" ? "OwnCopy" : "Skipped" }
        } else {
          const errors = ["NotLeader", "ProposalDropped", "StorageFull", "Overloaded", "RequestTimeout", "OutcomeUnknown"] as const
          const error = errors.find((e) => e === kind)
          if (error === undefined) throw new Error(`"${line}": unknown proposal outcome`)
          outcome = { _tag: "Failed", error, detail: "script", leader: null, stillLeader: !flags.has("lost") }
        }
        return { _tag: "Proposed", seq, outcome, nowMs: this.now(kv) }
      }
      case "confirmed":
        return { _tag: "Confirmed", failure: flags.has("ok") ? null : new SqlNotLeader({ leader: null, message: "script" }), nowMs: this.now(kv) }
      case "checkpointed":
        return {
          _tag: "Checkpointed",
          durationMs: num(kv.get("ms") ?? "1"),
          blockedBy: flags.has("readers") ? "readers" : flags.has("other") ? "other" : null,
          walBytes: num(kv.get("wal") ?? "0"),
          readsStarted: num(kv.get("started") ?? "0")
        }
      case "discarded":
        return { _tag: "Discarded" }
      case "lease-commit":
        return { _tag: "LeaseCommitRequested", leaseId: num(bare[0]), id: num(bare[1]), nowMs: this.now(kv) }
      case "lease-end":
        return { _tag: "LeaseEnded", leaseId: num(bare[0]), endedBy: flags.has("toobig") ? new SqlError({ code: 18, message: "script" }) : null }
      case "checkpoint-request":
        return { _tag: "CheckpointRequested" }
      case "flushed":
        return { _tag: "Flushed" }
      case "gathered":
        return { _tag: "Gathered", nowMs: this.now(kv) }
      case "tick":
        return { _tag: "Tick", nowMs: num(bare[0]) }
      case "stop": {
        const why = bare[0] ?? "not-leader"
        const failure: SqlFailure = why === "lost" ? new SqlLeadershipLost({ message: "script" }) : why === "full" ? new SqlError({ code: 13, message: "script" }) : new SqlNotLeader({ leader: null, message: "script" })
        return { _tag: "Stop", failure, mode: flags.has("keep-wal") ? "keepWal" : "discard" }
      }
      default:
        throw new Error(`unknown command "${line}"`)
    }
  }

  run(line: string): string {
    const input = this.input(line)
    if (line.trim() === "state") return renderState(this.state)
    if (input === null) return "(no effects)"
    // A script that feeds what the core does not expect shows the core's assertion here.
    try {
      const { state, effects } = writerStep(this.state, input)
      this.state = state
      return effects.length === 0 ? "(no effects)" : effects.map(renderEffect).join("\n")
    } catch (error) {
      return `error: ${error instanceof Error ? error.message : String(error)}`
    }
  }
}

describe("writer core scripts", () => {
  for (const file of readdirSync(dataDir).filter((f) => f.endsWith(".txt")).sort()) {
    it(file, () => {
      const path = join(dataDir, file)
      const blocks = parse(readFileSync(path, "utf8"))
      expect(blocks.length).toBeGreaterThan(0)
      const script = new Script()
      const outputs = blocks.map((block) => script.run(block.command))
      if (rewrite) {
        writeFileSync(path, blocks.map((b, i) => [...b.comments, b.command, "----", outputs[i] ?? ""].join("\n")).join("\n\n") + "\n")
        return
      }
      blocks.forEach((block, i) => expect(`${block.command}\n${outputs[i]}`).toBe(`${block.command}\n${block.expected}`))
    })
  }
})
