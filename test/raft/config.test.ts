import { describe, expect, it } from "vitest"
import type { RaftConfig } from "../../src/raft/config.ts"
import { defaultRaftConfig, RaftConfigError, validateRaftConfig } from "../../src/raft/config.ts"

describe("validateRaftConfig", () => {
  it("accepts the defaults", () => {
    expect(validateRaftConfig(defaultRaftConfig(1))).toEqual(defaultRaftConfig(1))
  })

  const bad: Array<[string, Partial<RaftConfig>, RegExp]> = [
    ["zero election ticks", { electionTicks: 0 }, /electionTicks/],
    ["fractional heartbeat", { heartbeatTicks: 1.5 }, /heartbeatTicks/],
    ["heartbeat not below election", { electionTicks: 5, heartbeatTicks: 5 }, /heartbeatTicks must be smaller/],
    ["zero in-flight appends", { inflightAppendsMax: 0 }, /inflightAppendsMax/],
    ["in-flight bytes below one append", { appendBytesMax: 1000, inflightBytesMax: 999 }, /inflightBytesMax/],
    ["negative trailing entries", { snapshotTrailingEntries: -1 }, /snapshotTrailingEntries/],
    ["id 0", { id: 0 }, /id must be/],
    ["zero reads", { readsPendingMax: 0 }, /readsPendingMax/]
  ]
  it.each(bad)("rejects %s", (_name, override, message) => {
    expect(() => validateRaftConfig({ ...defaultRaftConfig(1), ...override })).toThrow(RaftConfigError)
    expect(() => validateRaftConfig({ ...defaultRaftConfig(1), ...override })).toThrow(message)
  })
})
