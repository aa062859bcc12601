import { afterEach, describe, expect, it, vi } from "vitest"
import type { Message } from "../../src/raft/messages.ts"
import type { Entry } from "../../src/raft/types.ts"
import type { ClusterOptions } from "./harness.ts"
import { Cluster } from "./harness.ts"

/** A scenario touching most of the core: ticked elections, a partition, proposals, a snapshot,
 * a membership change, a transfer and held persistence. Returns the trace of every step. */
function scenario(options: ClusterOptions = {}): string[] {
  const c = new Cluster({ ids: [1, 2, 3, 4], config: { snapshotTrailingEntries: 1 }, trace: true, ...options })
  const leader = c.runUntilLeader(100)
  for (let i = 0; i < 5; i++) c.propose(leader, `a${i}`)
  c.run(2)
  const follower = [...c.nodes.keys()].find((id) => id !== leader) ?? 0
  c.isolate(follower)
  c.propose(leader, "b", "c", "d")
  c.run(3)
  c.takeSnapshot(leader)
  c.heal()
  c.node(leader).holdPersist = true
  c.propose(leader, "e")
  c.run(2)
  c.node(leader).holdPersist = false
  c.persist(leader)
  c.step(leader, { _tag: "ChangeMembership", id: 1, change: { kind: "assign", node: follower, role: "standby" } })
  c.run(5)
  c.step(leader, { _tag: "TransferLeadership", id: 2, to: null })
  c.run(20)
  c.step(c.runUntilLeader(100), { _tag: "ReadIndex", ids: [3] })
  c.run(3)
  return c.trace
}

describe("determinism", () => {
  afterEach(() => {
    vi.restoreAllMocks()
  })

  it("the same inputs give the same outputs, step for step", () => {
    const first = scenario()
    const second = scenario()
    expect(first.length).toBeGreaterThan(500)
    expect(second).toEqual(first)
  })

  it("the seeds matter (so the comparison above compares something)", () => {
    const first = scenario()
    const other = scenario({ configFor: (id) => ({ seed: id * 1000 + 7 }) })
    expect(other).not.toEqual(first)
  })

  it("the core reads no clock and no global randomness", () => {
    const forbidden = () => {
      throw new Error("the Raft core must not read clocks or Math.random")
    }
    vi.spyOn(Math, "random").mockImplementation(forbidden)
    vi.spyOn(Date, "now").mockImplementation(forbidden)
    vi.spyOn(performance, "now").mockImplementation(forbidden)
    expect(scenario().length).toBeGreaterThan(500)
  })
})

/** A tiny seeded generator for the test's own choices (mulberry32). */
function prng(seed: number) {
  let state = seed | 0
  return () => {
    state = (state + 0x6d2b79f5) | 0
    let t = Math.imul(state ^ (state >>> 15), state | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

describe("safety under a random schedule (small, seeded)", () => {
  it.each(Array.from({ length: 12 }, (_, i) => i + 1))("seed %i: one leader per term, and applied logs agree", (seed) => {
    const random = prng(seed)
    const c = new Cluster({
      ids: [1, 2, 3, 4, 5],
      config: { snapshotTrailingEntries: 2, inflightAppendsMax: 2, appendEntriesMax: 3 },
      configFor: (id) => ({ seed: seed * 31 + id, preVote: seed % 3 !== 0, checkQuorum: seed % 2 === 0 })
    })
    const leaderOfTerm = new Map<number, number>()
    let proposals = 0
    for (let round = 0; round < 400; round++) {
      const r = random()
      if (r < 0.02) {
        // A new partition: each node lands on one side.
        c.heal()
        const side = [...c.nodes.keys()].filter(() => random() < 0.5)
        c.partition(side, [...c.nodes.keys()].filter((id) => !side.includes(id)))
      } else if (r < 0.04) {
        c.heal()
      } else if (r < 0.1) {
        for (const id of c.leaders()) c.propose(id, `s${seed}-${proposals++}`)
      } else if (r < 0.12) {
        for (const n of c.nodes.values()) if (n.appliedIndex > n.state.log.base.index + 3) c.takeSnapshot(n.id)
      } else {
        c.tickAll()
        // Deliver a random subset in a random order; lose a few.
        const batch = c.take(() => random() < 0.7)
        batch.sort(() => random() - 0.5)
        for (const m of batch) {
          if (random() < 0.05) continue
          if (c.filters.some((f) => f(m))) continue
          c.step(m.to, { _tag: "Message", message: m as Message })
        }
      }
      for (const id of c.leaders()) {
        const term = c.node(id).term
        const known = leaderOfTerm.get(term)
        expect(known === undefined || known === id, `two leaders in term ${term}`).toBe(true)
        leaderOfTerm.set(term, id)
      }
    }
    c.heal()
    c.run(60)
    // Every node applied a prefix of one sequence (a snapshot install skips ahead, so compare by index).
    const byIndex = new Map<number, string>()
    for (const n of c.nodes.values()) {
      for (const e of n.applied) {
        const key = describeEntry(e)
        const seen = byIndex.get(e.index)
        expect(seen === undefined || seen === key, `index ${e.index} applied differently`).toBe(true)
        byIndex.set(e.index, key)
      }
    }
    const leader = c.runUntilLeader(100)
    c.propose(leader, "final")
    c.run(10)
    const last = c.node(leader).lastIndex
    for (const n of c.nodes.values()) expect(n.appliedIndex, `node ${n.id}`).toBe(last)
    expect(leaderOfTerm.size).toBeGreaterThan(0)
  })
})

function describeEntry(e: Entry): string {
  return JSON.stringify({ ...e, data: e.kind === "command" ? Array.from(e.data) : undefined })
}
