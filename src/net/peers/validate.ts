// Structural checks of what a peer sent, so a buggy or hostile peer costs us a connection, not
// an assertion inside the Raft core. Plain functions: each returns what is wrong, or null.
import type { Message } from "../../raft/messages.ts"

type Fields = Record<string, unknown>

const isRecord = (value: unknown): value is Fields => typeof value === "object" && value !== null && !Array.isArray(value)
const isCount = (value: unknown): value is number => typeof value === "number" && Number.isSafeInteger(value) && value >= 0
const isBool = (value: unknown): value is boolean => typeof value === "boolean"

function counts(value: Fields, names: ReadonlyArray<string>): string | null {
  for (const name of names) if (!isCount(value[name])) return `${name} is not a non-negative safe integer`
  return null
}

function bools(value: Fields, names: ReadonlyArray<string>): string | null {
  for (const name of names) if (!isBool(value[name])) return `${name} is not a boolean`
  return null
}

export function membershipProblem(value: unknown): string | null {
  if (!isRecord(value) || !Array.isArray(value["members"])) return "membership has no members array"
  for (const member of value["members"] as ReadonlyArray<unknown>) {
    if (!isRecord(member)) return "member is not a record"
    if (!isCount(member["id"])) return "member id is not a non-negative safe integer"
    if (typeof member["address"] !== "string") return "member address is not a string"
    const role = member["role"]
    if (role !== "voter" && role !== "standby" && role !== "spare") return `member role ${String(role)} is unknown`
  }
  return null
}

export function entryProblem(value: unknown): string | null {
  if (!isRecord(value)) return "entry is not a record"
  const problem = counts(value, ["term", "index"])
  if (problem !== null) return `entry ${problem}`
  switch (value["kind"]) {
    case "command":
      return value["data"] instanceof Uint8Array ? null : "command entry data is not bytes"
    case "config":
      return membershipProblem(value["config"])
    case "barrier":
      return null
    default:
      return `entry kind ${String(value["kind"])} is unknown`
  }
}

/** What is wrong with `value` as a Raft message, or null when it is one. */
export function messageProblem(value: unknown): string | null {
  if (!isRecord(value)) return "message is not a record"
  const common = counts(value, ["from", "to", "term"])
  if (common !== null) return common
  switch (value["_tag"]) {
    case "RequestVote":
      return counts(value, ["lastIndex", "lastTerm"]) ?? bools(value, ["pre", "transfer"])
    case "RequestVoteResponse":
      return bools(value, ["pre", "granted"])
    case "AppendEntries": {
      const problem = counts(value, ["prevIndex", "prevTerm", "commit"])
      if (problem !== null) return problem
      const entries = value["entries"]
      if (!Array.isArray(entries)) return "entries is not an array"
      for (const entry of entries as ReadonlyArray<unknown>) {
        const bad = entryProblem(entry)
        if (bad !== null) return bad
      }
      return null
    }
    case "AppendEntriesResponse":
      return counts(value, ["index", "hintIndex", "hintTerm"]) ?? bools(value, ["success"])
    case "Heartbeat":
      return counts(value, ["commit", "context"]) ?? (value["leaderCommit"] === undefined ? null : counts(value, ["leaderCommit"]))
    case "HeartbeatResponse":
      return counts(value, ["context"])
    case "InstallSnapshot": {
      const meta = value["meta"]
      if (!isRecord(meta)) return "snapshot meta is not a record"
      return counts(meta, ["index", "term"]) ?? membershipProblem(meta["config"])
    }
    case "InstallSnapshotResponse":
      return counts(value, ["index"])
    case "TimeoutNow":
      return null
    case "ReadIndexRequest":
      return counts(value, ["context"])
    case "ReadIndexResponse": {
      const refused = value["refused"]
      if (refused !== null && refused !== "not-leader" && refused !== "overloaded") return "refused is not null, not-leader or overloaded"
      return counts(value, value["indexTerm"] === undefined ? ["context", "index"] : ["context", "index", "indexTerm"])
    }
    default:
      return `message tag ${String(value["_tag"])} is unknown`
  }
}

export function isMessage(value: unknown): value is Message {
  return messageProblem(value) === null
}
