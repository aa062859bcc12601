// The opcount bench's worker counts: 0 means no such rows (a wire row with 0 readers made a client
// of no connections whose first request waited for ever, and the bench never exited), and a count
// that is not a whole number is refused before anything starts.
import { describe, expect, it } from "vitest"
import { workerCounts } from "../../bench/opcount.ts"

describe("opcount worker counts", () => {
  it("drops 0 and empty entries, keeps the others in order", () => {
    expect(workerCounts(["--readers", "0"], "readers", "1,8")).toEqual([])
    expect(workerCounts(["--readers", ""], "readers", "1,8")).toEqual([])
    expect(workerCounts(["--writers", "8,0,1"], "writers", "1,8")).toEqual([8, 1])
    expect(workerCounts([], "wire-writers", "8")).toEqual([8])
  })

  it("refuses a count that is not a whole number", () => {
    expect(() => workerCounts(["--readers", "1,x"], "readers", "1,8")).toThrow(/--readers 1,x/)
    expect(() => workerCounts(["--readers", "-1"], "readers", "1,8")).toThrow(/whole numbers/)
  })
})
