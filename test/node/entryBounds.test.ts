// The largest transaction's entry against every bound on its way (src/node/entryBounds.ts):
// the defaults agree, and each bound shrunk below the entry is named at start.
import { describe, expect, it } from "vitest"
import { AssertionError } from "../../src/assert.ts"
import { defaultPeerLimits } from "../../src/net/peers/limits.ts"
import { assertEntryBounds } from "../../src/node/entryBounds.ts"
import { defaultRaftConfig } from "../../src/raft/config.ts"
import { defaultSqliteLimits, writeEntryBytesMax } from "../../src/sqlite/limits.ts"

describe("entry bounds at start", () => {
  const entry = writeEntryBytesMax(defaultSqliteLimits)
  const raft = defaultRaftConfig(1)

  it("the default transaction bound passes every bound on its way", () => {
    expect(() => assertEntryBounds(entry, raft, defaultPeerLimits)).not.toThrow()
    expect(entry).toBeGreaterThan(defaultSqliteLimits.transactionBytesMax)
  })

  it("each bound made smaller than the entry is named", () => {
    const cases: Array<[string, () => void]> = [
      ["frameBytesMax", () => assertEntryBounds(entry, raft, { ...defaultPeerLimits, frameBytesMax: entry - 1 })],
      ["outboundBytesMax", () => assertEntryBounds(entry, raft, { ...defaultPeerLimits, outboundBytesMax: entry })],
      ["outboundBytesMax", () => assertEntryBounds(entry, raft, { ...defaultPeerLimits, outboundBytesMax: raft.inflightBytesMax + entry - 1 })],
      ["inflightBytesMax", () => assertEntryBounds(entry, { ...raft, inflightBytesMax: entry }, defaultPeerLimits)],
      ["entryCacheBytesMax", () => assertEntryBounds(entry, { ...raft, entryCacheBytesMax: 4 * 1024 * 1024 }, defaultPeerLimits)],
      ["applyInflightBytesMax", () => assertEntryBounds(entry, { ...raft, applyInflightBytesMax: entry }, defaultPeerLimits)],
      ["uncommittedBytesMax", () => assertEntryBounds(entry, { ...raft, uncommittedBytesMax: 1024 }, defaultPeerLimits)],
      ["persistBytesMax", () => assertEntryBounds(64 * 1024 * 1024, { ...raft, inflightBytesMax: 1 << 30, entryCacheBytesMax: 1 << 30, applyInflightBytesMax: 1 << 30 }, { ...defaultPeerLimits, frameBytesMax: 1 << 30, outboundBytesMax: 1 << 30 })]
    ]
    for (const [name, check] of cases) {
      expect(check).toThrow(AssertionError)
      expect(check).toThrow(name)
    }
  })
})
