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
    ["zero reads", { readsPendingMax: 0 }, /readsPendingMax/],
    ["a lease without check-quorum", { readMode: "lease", checkQuorum: false }, /requires checkQuorum/],
    ["an unknown read mode", { readMode: "stale" as never }, /readMode must be/],
    ["no drift margin", { leaseDriftTicks: 0 }, /leaseDriftTicks/],
    ["a drift margin as long as the election timeout", { electionTicks: 10, leaseDriftTicks: 10 }, /leaseDriftTicks/],
    ["a fractional drift margin", { leaseDriftTicks: 1.5 }, /leaseDriftTicks/]
  ]
  it("lease reads are the default, and strict reads work without check-quorum", () => {
    expect(defaultRaftConfig(1).readMode).toBe("lease")
    expect(defaultRaftConfig(1).checkQuorum).toBe(true)
    expect(() => validateRaftConfig({ ...defaultRaftConfig(1), readMode: "readIndex", checkQuorum: false })).not.toThrow()
    expect(() => validateRaftConfig({ ...defaultRaftConfig(1), electionTicks: 10, leaseDriftTicks: 9 })).not.toThrow()
  })

  it.each(bad)("rejects %s", (_name, override, message) => {
    expect(() => validateRaftConfig({ ...defaultRaftConfig(1), ...override })).toThrow(RaftConfigError)
    expect(() => validateRaftConfig({ ...defaultRaftConfig(1), ...override })).toThrow(message)
  })
})
