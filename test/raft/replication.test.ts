import { describe, expect, it } from "vitest"
import { defaultRaftConfig } from "../../src/raft/config.ts"
import { initialState, step } from "../../src/raft/core.ts"
import type { AppendEntries, AppendEntriesResponse, Message } from "../../src/raft/messages.ts"
import type { Entry, Membership, NodeId } from "../../src/raft/types.ts"
import { entryHeaderBytes } from "../../src/raft/types.ts"
import type { ClusterOptions } from "./harness.ts"
import { Cluster, recoveredLog } from "./harness.ts"

const membershipOf = (ids: number[]): Membership => ({ members: ids.map((id) => ({ id, address: `node${id}`, role: "voter" as const })) })
const rejections = (c: Cluster, from: NodeId): AppendEntriesResponse[] =>
  c.node(from).readies.flatMap((r) => r.messagesAfterPersist).filter((m): m is AppendEntriesResponse => m._tag === "AppendEntriesResponse" && !m.success)
const appendsTo = (messages: ReadonlyArray<Message>, to: NodeId): AppendEntries[] =>
  messages.filter((m): m is AppendEntries => m._tag === "AppendEntries" && m.to === to)
const withEntries = (messages: ReadonlyArray<Message>, to: NodeId) => appendsTo(messages, to).filter((m) => m.entries.length > 0)

describe("AppendEntries consistency check", () => {
  // The follower's log, by index:  1  2  3  4  5  6   (its term is 5, commit 1)
  const followerTerms = [1, 1, 2, 2, 2, 3]
  const entry = (index: number, term: number): Entry => ({ kind: "barrier", term, index })
  const cases: Array<{
    name: string
    prevIndex: number
    prevTerm: number
    entries: Entry[]
    response: Partial<AppendEntriesResponse>
    truncateFrom: number | null
    logTerms: number[]
  }> = [
    { name: "prevIndex beyond the log: hint is last + 1", prevIndex: 9, prevTerm: 5, entries: [], response: { success: false, index: 9, hintIndex: 7, hintTerm: 0 }, truncateFrom: null, logTerms: followerTerms },
    { name: "term mismatch inside a run: hint is the run's start", prevIndex: 5, prevTerm: 4, entries: [], response: { success: false, index: 5, hintIndex: 3, hintTerm: 2 }, truncateFrom: null, logTerms: followerTerms },
    { name: "term mismatch at a run of one", prevIndex: 6, prevTerm: 4, entries: [], response: { success: false, index: 6, hintIndex: 6, hintTerm: 3 }, truncateFrom: null, logTerms: followerTerms },
    { name: "match at the end appends", prevIndex: 6, prevTerm: 3, entries: [entry(7, 5)], response: { success: true, index: 7 }, truncateFrom: null, logTerms: [...followerTerms, 5] },
    // An old or reordered append must not cut entries the follower already holds in agreement.
    { name: "match inside the log without entries keeps the suffix", prevIndex: 3, prevTerm: 2, entries: [], response: { success: true, index: 3 }, truncateFrom: null, logTerms: followerTerms },
    { name: "entries already present are not rewritten", prevIndex: 3, prevTerm: 2, entries: [entry(4, 2), entry(5, 2)], response: { success: true, index: 5 }, truncateFrom: null, logTerms: followerTerms },
    { name: "a conflicting entry truncates the suffix from there", prevIndex: 3, prevTerm: 2, entries: [entry(4, 2), entry(5, 5)], response: { success: true, index: 5 }, truncateFrom: 5, logTerms: [1, 1, 2, 2, 5] },
    { name: "prevIndex below commit answers with the commit index", prevIndex: 0, prevTerm: 0, entries: [], response: { success: true, index: 1 }, truncateFrom: null, logTerms: followerTerms }
  ]
  it.each(cases)("$name", (cs) => {
    const s = initialState(defaultRaftConfig(2), recoveredLog(membershipOf([1, 2, 3]), followerTerms, { term: 5, vote: null, commit: 1 }))
    const message: AppendEntries = { _tag: "AppendEntries", from: 1, to: 2, term: 5, prevIndex: cs.prevIndex, prevTerm: cs.prevTerm, entries: cs.entries, commit: 1 }
    const { ready } = step(s, { _tag: "Message", message })
    expect(ready.messages).toEqual([])
    expect(ready.messagesAfterPersist).toEqual([
      { _tag: "AppendEntriesResponse", from: 2, to: 1, term: 5, success: false, index: 0, hintIndex: 0, hintTerm: 0, ...cs.response }
    ])
    expect(ready.truncateFrom).toBe(cs.truncateFrom)
    expect(s.log.entries.map((e) => e.term)).toEqual(cs.logTerms)
    expect(s.leader).toBe(1)
  })

  it("the follower's commit follows the leader's, bounded by what this append proved", () => {
    const s = initialState(defaultRaftConfig(2), recoveredLog(membershipOf([1, 2, 3]), followerTerms, { term: 5, vote: null, commit: 1 }))
    // The leader has committed 6, but this append only proves entries up to 3 match.
    step(s, { _tag: "Message", message: { _tag: "AppendEntries", from: 1, to: 2, term: 5, prevIndex: 2, prevTerm: 1, entries: [entry(3, 2)], commit: 6 } })
    expect(s.log.committed).toBe(3)
  })
})

describe("fast backtracking (Raft paper, figure 7)", () => {
  // Node 1 is the leader-to-be (its log ends in term 6); nodes 2..7 are followers (a)..(f).
  const logs: Record<number, number[]> = {
    1: [1, 1, 1, 4, 4, 5, 5, 6, 6, 6],
    2: [1, 1, 1, 4, 4, 5, 5, 6, 6], // (a) missing one entry
    3: [1, 1, 1, 4], // (b) missing many
    4: [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6], // (c) one extra uncommitted entry
    5: [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7], // (d) extra entries of a later term
    6: [1, 1, 1, 4, 4, 4, 4], // (e) missing and extra
    7: [1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3] // (f) a long suffix of terms the leader never saw
  }
  const ids = [1, 2, 3, 4, 5, 6, 7]
  const build = () =>
    new Cluster({
      ids,
      config: { appendEntriesMax: 1 },
      recovered: (id) => recoveredLog(membershipOf(ids), logs[id] ?? [], { term: 7, vote: null, commit: 0 })
    })

  it("the leader repairs every follower with one round trip per conflicting term, not per entry", () => {
    const c = build()
    c.elect(1)
    expect(c.node(1).term).toBe(8)
    // Rejections per follower: (a) and (b) are short (one hint each), (c) and (d) match at the
    // first probe, (e) needs two (too short, then its term-4 run), (f) two (its runs of 3 and 2),
    // where stepping back one entry per rejection would take 1, 6, 0, 0, 5 and 7.
    const counts = [2, 3, 4, 5, 6, 7].map((id) => rejections(c, id).length)
    expect(counts).toEqual([1, 1, 0, 0, 2, 2])
    expect(rejections(c, 7).map((m) => [m.index, m.hintIndex, m.hintTerm])).toEqual([
      [10, 7, 3],
      [6, 4, 2]
    ])
    // The conflicting suffixes were truncated, in one place each.
    const truncations = (id: number) => c.node(id).readies.flatMap((r) => (r.truncateFrom === null ? [] : [r.truncateFrom]))
    expect([2, 3, 4, 5, 6, 7].map(truncations)).toEqual([[], [], [11], [11], [6], [4]])
    // Everyone ends with the leader's log, and its barrier commits it all.
    const leaderLog = JSON.stringify(c.node(1).state.log.entries)
    for (const id of ids) {
      expect(JSON.stringify(c.node(id).state.log.entries), `node ${id}`).toBe(leaderLog)
      expect(c.node(id).committed).toBe(11)
      expect(c.node(id).disk.entries.map((e) => e.term)).toEqual([...(logs[1] ?? []), 8])
    }
  })

  it("the leader skips past a term it also has to the end of its own run of that term", () => {
    const c = build()
    c.elect(1)
    // (e) said "term 4 from index 4"; the leader's term 4 ends at 5, so it probed at 5 next.
    const probes = c.node(1).readies.flatMap((r) => appendsTo(r.messages, 6)).map((m) => m.prevIndex)
    expect(probes.slice(0, 3)).toEqual([10, 7, 5])
  })
})

describe("pipelining", () => {
  /** A leader (1) whose follower 2 is in replicate state; follower 3 is cut off. */
  function replicating(config: ClusterOptions) {
    const c = new Cluster(config)
    c.elect(1)
    c.isolate(3)
    return c
  }

  it("with inflightAppendsMax = k, at most k appends with entries are outstanding before an ack", () => {
    const c = replicating({ config: { inflightAppendsMax: 3 } })
    for (let i = 0; i < 10; i++) c.propose(1, `p${i}`)
    expect(withEntries(c.queue, 2).map((m) => m.entries.map((e) => e.index))).toEqual([[3], [4], [5]])
    expect(c.node(1).lastIndex).toBe(12)
    // One ack frees one slot: exactly one more append leaves, carrying everything that waited.
    c.deliver((m) => m.to === 2 && m._tag === "AppendEntries" && m.entries[0]?.index === 3)
    c.deliver((m) => m.to === 1 && m._tag === "AppendEntriesResponse")
    expect(withEntries(c.queue, 2).map((m) => m.entries.map((e) => e.index))).toEqual([[4], [5], [6, 7, 8, 9, 10, 11, 12]])
    // Everything gets there in the end, and commits.
    c.stabilize()
    expect(c.node(2).lastIndex).toBe(12)
    expect(c.node(1).committed).toBe(12)
  })

  it("inflightBytesMax stops the pipeline once the bytes in flight reach it", () => {
    const payload = "x".repeat(300) // 332 bytes per entry
    const c = replicating({ config: { appendBytesMax: 1000, inflightBytesMax: 1000, appendEntriesMax: 1 } })
    for (let i = 0; i < 10; i++) c.propose(1, payload)
    const sent = withEntries(c.queue, 2)
    // 0, 332, 664 and 996 bytes were in flight when each of these four left; then 1328 ≥ 1000.
    expect(sent.length).toBe(4)
    expect(c.node(1).state.progress.get(2)?.inflightBytes).toBe(4 * (entryHeaderBytes + 300))
    c.stabilize()
    expect(c.node(2).lastIndex).toBe(12)
  })

  it("a follower still probing gets one append at a time", () => {
    const c = new Cluster({ config: { inflightAppendsMax: 8 } })
    c.step(1, { _tag: "Campaign" })
    while (c.node(1).role !== "leader") c.deliver((m) => m._tag === "RequestVote" || m._tag === "RequestVoteResponse")
    // A new leader probes: its barrier went out, unanswered, so nothing more goes to 2.
    expect(c.node(1).state.progress.get(2)?.state).toBe("probe")
    expect(appendsTo(c.queue, 2).length).toBe(1)
    for (let i = 0; i < 5; i++) c.propose(1, `p${i}`)
    expect(appendsTo(c.queue, 2).length).toBe(1)
    // The answer switches it to replicate, and the rest leaves at once.
    c.deliver((m) => m.to === 2)
    c.deliver((m) => m.to === 1 && m.from === 2)
    expect(c.node(1).state.progress.get(2)?.state).toBe("replicate")
    expect(withEntries(c.queue, 2).map((m) => m.entries.map((e) => e.index))).toEqual([[3, 4, 5, 6, 7]])
  })

  it("lost appends are recovered through heartbeat responses", () => {
    const c = replicating({ config: { inflightAppendsMax: 2 } })
    for (let i = 0; i < 6; i++) c.propose(1, `p${i}`)
    // The network loses both appends in flight; the window is full.
    expect(c.take((m) => m.to === 2 && m._tag === "AppendEntries").length).toBe(2)
    c.run(5)
    expect(c.node(2).lastIndex).toBe(8)
    expect(c.node(1).committed).toBe(8)
  })
})

describe("batching", () => {
  it("100 proposals in one Propose input go out as one AppendEntries per follower", () => {
    const c = new Cluster()
    c.elect(1)
    const payloads = Array.from({ length: 100 }, (_, i) => `p${i}`)
    const ready = c.propose(1, ...payloads)
    expect(ready.entries.length).toBe(100)
    expect(ready.events.filter((e) => e._tag === "Accepted").length).toBe(100)
    for (const to of [2, 3]) {
      const appends = appendsTo(ready.messages, to)
      expect(appends.length).toBe(1)
      expect(appends[0]?.entries.map((e) => e.index)).toEqual(Array.from({ length: 100 }, (_, i) => i + 3))
    }
    c.stabilize()
    expect(c.node(3).committed).toBe(102)
  })

  it("appendEntriesMax splits a large batch into bounded appends", () => {
    const c = new Cluster({ config: { appendEntriesMax: 30 } })
    c.elect(1)
    const ready = c.propose(1, ...Array.from({ length: 100 }, (_, i) => `p${i}`))
    expect(appendsTo(ready.messages, 2).map((m) => m.entries.length)).toEqual([30, 30, 30, 10])
    expect(appendsTo(ready.messages, 2).map((m) => m.prevIndex)).toEqual([2, 32, 62, 92])
  })

  it("uncommittedBytesMax refuses proposals beyond the bound with overloaded", () => {
    const c = new Cluster({ config: { uncommittedBytesMax: 1000 } })
    c.elect(1)
    c.isolate(2)
    c.isolate(3)
    const ready = c.propose(1, "x".repeat(400), "x".repeat(400), "x".repeat(400))
    expect(ready.events.map((e) => e._tag)).toEqual(["Accepted", "Accepted", "Rejected"])
    expect(ready.events[2]).toMatchObject({ reason: "overloaded" })
    // Once they commit, there is room again.
    c.heal()
    c.stabilize()
    c.run(2)
    expect(c.propose(1, "x".repeat(400)).events.map((e) => e._tag)).toEqual(["Accepted"])
  })
})

describe("heartbeats", () => {
  it("the leader sends one heartbeat per follower every heartbeatTicks", () => {
    const c = new Cluster({ config: { heartbeatTicks: 3 } })
    c.elect(1)
    const beats: number[] = []
    for (let t = 1; t <= 9; t++) {
      c.tick(1)
      beats.push(c.take((m) => m._tag === "Heartbeat").length)
    }
    expect(beats).toEqual([0, 0, 2, 0, 0, 2, 0, 0, 2])
  })

  it("a heartbeat carries min(follower's match, commit) so a lagging follower never commits past its log", () => {
    const c = new Cluster()
    c.elect(1)
    c.isolate(3)
    c.propose(1, "a", "b")
    c.stabilize()
    expect(c.node(1).committed).toBe(4)
    c.heal()
    c.tick(1)
    const beats = c.take((m) => m._tag === "Heartbeat")
    expect(beats.map((m) => [m.to, m._tag === "Heartbeat" ? m.commit : -1])).toEqual([
      [2, 4],
      [3, 2]
    ])
  })

  it("followers that hear heartbeats never start an election", () => {
    const c = new Cluster()
    c.elect(1)
    c.run(200)
    for (const id of [2, 3]) {
      expect(c.node(id).readies.some((r) => r.events.some((e) => e._tag === "StateChanged" && e.role !== "follower"))).toBe(false)
    }
  })
})
