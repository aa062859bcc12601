// What the kill -9 writer appends: entry content derived from (index, term) only, so the checker
// can tell a right entry from a wrong one without talking to the writer.
import type { Entry } from "../../src/raft/types.ts"

export const logKillClusterId = "kill-test"
export const logKillSegmentBytesMax = 256 * 1024

export function entryBytes(index: number, term: number): number {
  return (Math.imul(index ^ (term << 20), 2654435761) >>> 0) % 6000
}

export function entryFor(index: number, term: number): Entry {
  const data = new Uint8Array(entryBytes(index, term))
  let x = (index * 31 + term * 1_000_003) >>> 0
  for (let i = 0; i < data.length; i++) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0
    data[i] = x >>> 24
  }
  return { kind: "command", index, term, data }
}

export function sameEntry(a: Entry, b: Entry): boolean {
  if (a.kind !== "command" || b.kind !== "command") return false
  return a.index === b.index && a.term === b.term && a.data.byteLength === b.data.byteLength &&
    a.data.every((x, i) => x === b.data[i])
}
