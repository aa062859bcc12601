import { describe, expect, it } from "vitest"
import {
  addInflight,
  becomeProbe,
  becomeReplicate,
  becomeSnapshot,
  freeFirstInflight,
  freeInflightsUpTo,
  inflightFull,
  makeProgress
} from "../../src/raft/progress.ts"

describe("Progress in-flight window", () => {
  it("is full at the count bound or the byte bound, whichever comes first", () => {
    const cases: Array<{ appends: Array<[number, number]>; countMax: number; bytesMax: number; full: boolean }> = [
      { appends: [], countMax: 1, bytesMax: 1, full: false },
      { appends: [[5, 10]], countMax: 1, bytesMax: 100, full: true },
      { appends: [[5, 10]], countMax: 2, bytesMax: 100, full: false },
      { appends: [[5, 10], [6, 10]], countMax: 2, bytesMax: 100, full: true },
      { appends: [[5, 60], [6, 40]], countMax: 10, bytesMax: 100, full: true },
      { appends: [[5, 60], [6, 39]], countMax: 10, bytesMax: 100, full: false }
    ]
    for (const c of cases) {
      const pr = makeProgress(5)
      for (const [last, bytes] of c.appends) addInflight(pr, last, bytes)
      expect(inflightFull(pr, c.countMax, c.bytesMax), JSON.stringify(c)).toBe(c.full)
    }
  })

  it.each([
    { ack: 4, left: [5, 8, 12], bytes: 60 },
    { ack: 5, left: [8, 12], bytes: 50 },
    { ack: 9, left: [12], bytes: 30 },
    { ack: 12, left: [], bytes: 0 },
    { ack: 99, left: [], bytes: 0 }
  ])("an ack up to $ack frees the appends ending at or below it", ({ ack, left, bytes }) => {
    const pr = makeProgress(1)
    addInflight(pr, 5, 10)
    addInflight(pr, 8, 20)
    addInflight(pr, 12, 30)
    freeInflightsUpTo(pr, ack)
    expect(pr.inflights.map((f) => f.last)).toEqual(left)
    expect(pr.inflightBytes).toBe(bytes)
  })

  it("freeFirstInflight frees the oldest one (a lost append)", () => {
    const pr = makeProgress(1)
    addInflight(pr, 5, 10)
    addInflight(pr, 8, 20)
    freeFirstInflight(pr)
    expect([pr.inflights.map((f) => f.last), pr.inflightBytes]).toEqual([[8], 20])
    freeFirstInflight(pr)
    freeFirstInflight(pr)
    expect([pr.inflights.length, pr.inflightBytes]).toEqual([0, 0])
  })
})

describe("Progress states", () => {
  it("probe and replicate restart from match + 1 with an empty window", () => {
    const pr = makeProgress(10)
    expect([pr.state, pr.match, pr.next, pr.recentActive]).toEqual(["probe", 0, 10, true])
    pr.match = 6
    pr.next = 12
    addInflight(pr, 11, 5)
    becomeReplicate(pr)
    expect([pr.state, pr.next, pr.inflights.length, pr.inflightBytes]).toEqual(["replicate", 7, 0, 0])
    pr.probeSent = true
    addInflight(pr, 9, 5)
    becomeProbe(pr)
    expect([pr.state, pr.next, pr.probeSent, pr.inflights.length]).toEqual(["probe", 7, false, 0])
  })

  it("snapshot remembers what was sent and restarts its retry clock", () => {
    const pr = makeProgress(3)
    pr.snapshotElapsed = 40
    addInflight(pr, 3, 5)
    becomeSnapshot(pr, 50)
    expect([pr.state, pr.snapshotIndex, pr.snapshotElapsed, pr.inflights.length, pr.inflightBytes]).toEqual(["snapshot", 50, 0, 0, 0])
  })
})
