import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit } from "effect"
import { AssertionError } from "../../src/assert.ts"
import {
  checkpointDraft,
  decodeCheckpoint,
  decodeMembership,
  decodeRecordAt,
  encodeRecords,
  entryDraft,
  hardStateDraft,
  decodeVote,
  recordHeaderBytes,
  scanSegment
} from "../../src/storage/format.ts"
import type { RecordDraft } from "../../src/storage/format.ts"
import { LogState } from "../../src/storage/logState.ts"
import { groupPersistBatches, LogStore, persistBytesMax, persistEntriesMax } from "../../src/storage/LogStore.ts"
import { decodeMetadata, encodeMetadata } from "../../src/storage/metadata.ts"
import { command, membership, payloadFor } from "./workload.ts"

describe("LogStore.layerMemory", () => {
  it.effect("applies batches in order: hard state, snapshot, truncation, entries, compaction", () =>
    Effect.gen(function* () {
      const store = yield* LogStore
      expect(yield* store.load).toEqual({ hardState: { term: 0, vote: null, commit: 0 }, base: { index: 0, term: 0 }, entries: [], snapshot: null })
      yield* store.persist([
        { hardState: { term: 1, vote: 1, commit: 0 }, entries: [command(1, 1), command(2, 1), command(3, 1)] },
        { truncateFrom: 3, entries: [command(3, 1, 5), command(4, 1)], compactUpTo: { index: 1, term: 1 } }
      ])
      const loaded = yield* store.load
      expect(loaded.base).toEqual({ index: 1, term: 1 })
      expect(loaded.entries).toEqual([command(2, 1), command(3, 1, 5), command(4, 1)])
      yield* store.persist([{ snapshot: { index: 10, term: 1, config: membership }, entries: [command(11, 1)] }])
      expect((yield* store.load).entries).toEqual([command(11, 1)])
    }).pipe(Effect.provide(LogStore.layerMemory)))

  it.effect("broken contracts are defects", () =>
    Effect.gen(function* () {
      const store = yield* LogStore
      yield* store.persist([{ hardState: { term: 2, vote: 1, commit: 0 }, entries: [command(1, 2)] }])
      const cases = [
        [{ entries: [command(3, 2)] }], // gap
        [{ entries: [command(2, 1)] }], // term goes down
        [{ hardState: { term: 1, vote: 1, commit: 0 }, entries: [] }], // term goes back
        [{ hardState: { term: 2, vote: 3, commit: 0 }, entries: [] }], // second vote in a term
        [{ truncateFrom: 5, entries: [] }],
        [{ entries: [], compactUpTo: { index: 1, term: 7 } }] // wrong term
      ]
      for (const batches of cases) {
        const exit = yield* Effect.exit(store.persist(batches))
        expect(Exit.isFailure(exit) && exit.cause._tag === "Die" && exit.cause.defect instanceof AssertionError).toBe(true)
      }
    }).pipe(Effect.provide(LogStore.layerMemory)))

  it("groupPersistBatches cuts a drained queue into groups within the bounds, in order", () => {
    const big = { entries: Array.from({ length: persistEntriesMax / 2 + 1 }, (_, i) => ({ kind: "barrier" as const, index: i + 1, term: 1 })) }
    const small = { entries: [command(1, 1)] }
    const groups = groupPersistBatches([small, big, small, big, small])
    expect(groups.map((g) => g.length)).toEqual([3, 2])
    expect(groups.flat()).toEqual([small, big, small, big, small])
    const heavy = { entries: [command(1, 1, persistBytesMax / 2)] }
    expect(groupPersistBatches([heavy, heavy, heavy]).map((g) => g.length)).toEqual([1, 1, 1])
    expect(() => groupPersistBatches([{ entries: [command(1, 1, persistBytesMax + 1)] }])).toThrow(AssertionError)
  })

  it.effect("persist asserts the group bounds", () =>
    Effect.gen(function* () {
      const store = yield* LogStore
      const entries = Array.from({ length: persistEntriesMax + 1 }, (_, i) => ({ kind: "barrier" as const, index: i + 1, term: 1 }))
      const exit = yield* Effect.exit(store.persist([{ entries }]))
      expect(Exit.isFailure(exit) && exit.cause._tag === "Die").toBe(true)
    }).pipe(Effect.provide(LogStore.layerMemory)))
})

describe("record format", () => {
  const drafts: ReadonlyArray<RecordDraft> = [
    checkpointDraft({ segment: 3, hardState: { term: 2, vote: null, commit: 1 }, base: { index: 1, term: 1 }, snapshot: null, lastIndex: 4, lastTerm: 2 }),
    entryDraft(command(5, 2, 100)),
    entryDraft({ kind: "config", index: 6, term: 2, config: membership }),
    hardStateDraft({ term: 2 ** 40, vote: 2 ** 52, commit: 2 ** 53 - 1 })
  ]

  it("round trip of every field, including large integers", () => {
    const bytes = encodeRecords(drafts, 0)
    const scan = scanSegment(bytes, false)
    expect(scan.damage).toBeNull()
    expect(scan.records.map((r) => [r.kind, r.index, r.term, r.writeStart])).toEqual(drafts.map((d) => [d.kind, d.index, d.term, 0]))
    expect(decodeCheckpoint(scan.records[0]!)).toEqual({ segment: 3, hardState: { term: 2, vote: null, commit: 1 }, base: { index: 1, term: 1 }, snapshot: null, lastIndex: 4, lastTerm: 2 })
    expect(scan.records[1]!.payload).toEqual(payloadFor(5, 2, 100))
    expect(decodeMembership(scan.records[2]!.payload)).toEqual(membership)
    expect(decodeVote(scan.records[3]!.payload)).toBe(2 ** 52)
    expect(scan.records[3]!.index).toBe(2 ** 53 - 1)
  })

  it("a record cut anywhere is an incomplete tail; every single flipped bit is caught", () => {
    const bytes = encodeRecords(drafts.slice(0, 2), 0)
    const second = scanSegment(bytes, false).records[1]!
    for (let cut = second.offset + 1; cut < bytes.byteLength; cut++) {
      const scan = scanSegment(bytes.subarray(0, cut), true)
      expect(scan.records.length).toBe(1)
      expect(scan.damage).toMatchObject({ offset: second.offset, tornTail: true })
    }
    for (let offset = 0; offset < bytes.byteLength; offset++) {
      for (let bit = 0; bit < 8; bit++) {
        const copy = bytes.slice()
        copy[offset]! ^= 1 << bit
        expect(scanSegment(copy, false).damage).not.toBeNull()
      }
    }
  })

  it("torn or not: a bad record followed only by its own write is torn; by a later write, damage", () => {
    const first = encodeRecords([entryDraft(command(1, 1, 50))], 0)
    const secondWrite = encodeRecords([entryDraft(command(2, 1, 50)), entryDraft(command(3, 1, 50))], first.byteLength)
    const thirdWrite = encodeRecords([entryDraft(command(4, 1, 50))], first.byteLength + secondWrite.byteLength)
    const file = new Uint8Array([...first, ...secondWrite, ...thirdWrite])
    const entry2 = first.byteLength
    // damage in entry 2: entry 3 (same write) follows, and so does entry 4 (a later write)
    const damaged = file.slice()
    damaged[entry2 + recordHeaderBytes + 1]! ^= 1
    expect(scanSegment(damaged, true).damage).toMatchObject({ offset: entry2, tornTail: false })
    // without the third write, the second write is the last one: torn
    const lastWrite = damaged.subarray(0, first.byteLength + secondWrite.byteLength)
    expect(scanSegment(lastWrite, true).damage).toMatchObject({ offset: entry2, tornTail: true })
    // never torn in a closed segment
    expect(scanSegment(lastWrite, false).damage).toMatchObject({ tornTail: false })
    // the last write's pages out of order: entry 2's bytes missing (zeros), entry 3 written
    const holes = file.slice(0, first.byteLength + secondWrite.byteLength)
    holes.fill(0, entry2, entry2 + 40)
    expect(scanSegment(holes, true).damage).toMatchObject({ offset: entry2, tornTail: true })
    // zeros after the end (a file extended but not written) are a torn tail
    expect(scanSegment(new Uint8Array([...file, ...new Uint8Array(100)]), true).damage).toMatchObject({ offset: file.byteLength, tornTail: true })
  })

  it("decodeRecordAt explains what is wrong", () => {
    const bytes = encodeRecords([entryDraft(command(1, 1, 10))], 0)
    expect(decodeRecordAt(bytes.subarray(0, 10), 0)).toMatchObject({ ok: false, reason: expect.stringContaining("incomplete") })
    expect(decodeRecordAt(bytes.subarray(0, 40), 0)).toMatchObject({ ok: false, reason: expect.stringContaining("past the end") })
    const flipped = bytes.slice()
    flipped[40]! ^= 4
    expect(decodeRecordAt(flipped, 0)).toEqual({ ok: false, reason: "checksum mismatch" })
  })
})

describe("metadata file", () => {
  it("round trip, unknown version, damage", () => {
    const bytes = encodeMetadata("cluster-a")
    expect(decodeMetadata(bytes)).toEqual({ _tag: "ok", metadata: { version: 1, clusterId: "cluster-a" } })
    const future = bytes.slice()
    new DataView(future.buffer).setUint32(8, 2, true)
    expect(decodeMetadata(future)).toEqual({ _tag: "unknownVersion", version: 2 })
    const flipped = bytes.slice()
    flipped[18]! ^= 1
    expect(decodeMetadata(flipped)._tag).toBe("corrupt")
    expect(decodeMetadata(new TextEncoder().encode("something else entirely"))).toMatchObject({ _tag: "corrupt", offset: 0 })
  })
})

describe("LogState", () => {
  it("replays with unread entries until a compaction covers them", () => {
    const state = new LogState({ keepEntries: true })
    state.startAt({ hardState: { term: 3, vote: 1, commit: 0 }, base: { index: 5, term: 1 }, snapshot: null, lastIndex: 9 })
    expect(state.firstUnknown()).toBe(6)
    expect(state.append(command(10, 3))).toBeNull()
    expect(state.truncate(9)).toBeNull()
    expect(state.firstUnknown()).toBe(6)
    expect(state.append(command(9, 3))).toBeNull()
    expect(state.compact({ index: 8, term: 2 })).toBeNull()
    expect(state.firstUnknown()).toBeNull()
    expect(state.liveEntries()).toEqual([command(9, 3)])
  })
})
