import { describe, expect, it } from "vitest"
import type { MembershipChange } from "../../src/raft/membership.ts"
import { applyChange, isReplicated, isVoter } from "../../src/raft/membership.ts"
import type { Membership, Role } from "../../src/raft/types.ts"
import { voters } from "../../src/raft/types.ts"

const config = (...members: Array<[number, Role]>): Membership => ({
  members: members.map(([id, role]) => ({ id, address: `node${id}`, role }))
})
const roles = (m: Membership | string) => (typeof m === "string" ? m : m.members.map((x) => `${x.id}:${x.role}`).join(" "))

describe("applyChange", () => {
  const base = config([1, "voter"], [3, "standby"], [5, "spare"])
  const cases: Array<[string, Membership, MembershipChange, string | RegExp]> = [
    ["adds a spare, kept in id order", base, { kind: "add", node: 2, address: "node2", role: "spare" }, "1:voter 2:spare 3:standby 5:spare"],
    ["adds a voter at the end", base, { kind: "add", node: 9, address: "node9", role: "voter" }, "1:voter 3:standby 5:spare 9:voter"],
    ["refuses to add an existing member", base, { kind: "add", node: 3, address: "x", role: "voter" }, /already a member/],
    ["refuses id 0", base, { kind: "add", node: 0, address: "x", role: "voter" }, /invalid node id/],
    ["refuses a fractional id", base, { kind: "add", node: 1.5, address: "x", role: "voter" }, /invalid node id/],
    ["removes a standby", base, { kind: "remove", node: 3 }, "1:voter 5:spare"],
    ["refuses to remove a stranger", base, { kind: "remove", node: 4 }, /not a member/],
    ["refuses to remove the last voter", base, { kind: "remove", node: 1 }, /last voter/],
    ["removes a voter when another remains", config([1, "voter"], [2, "voter"]), { kind: "remove", node: 1 }, "2:voter"],
    ["promotes a standby", base, { kind: "assign", node: 3, role: "voter" }, "1:voter 3:voter 5:spare"],
    ["promotes a spare to standby", base, { kind: "assign", node: 5, role: "standby" }, "1:voter 3:standby 5:standby"],
    ["refuses a no-op assignment", base, { kind: "assign", node: 3, role: "standby" }, /already a standby/],
    ["refuses to demote the last voter", base, { kind: "assign", node: 1, role: "spare" }, /last voter/],
    ["refuses to assign a stranger", base, { kind: "assign", node: 4, role: "voter" }, /not a member/],
    ["demotes a voter when another remains", config([1, "voter"], [2, "voter"]), { kind: "assign", node: 2, role: "spare" }, "1:voter 2:spare"]
  ]
  it.each(cases)("%s", (_name, before, change, expected) => {
    const after = applyChange(before, change)
    if (expected instanceof RegExp) {
      expect(typeof after).toBe("string")
      expect(after).toMatch(expected)
    } else {
      expect(roles(after)).toBe(expected)
    }
  })

  it("never changes its input", () => {
    const before = config([1, "voter"], [2, "standby"])
    const frozen = JSON.stringify(before)
    applyChange(before, { kind: "assign", node: 2, role: "voter" })
    applyChange(before, { kind: "remove", node: 2 })
    applyChange(before, { kind: "add", node: 0.5, address: "x", role: "voter" })
    expect(JSON.stringify(before)).toBe(frozen)
  })
})

describe("roles", () => {
  const m = config([1, "voter"], [2, "standby"], [3, "spare"])
  it("only voters vote", () => {
    expect(voters(m)).toEqual([1])
    expect([1, 2, 3, 4].map((id) => isVoter(m, id))).toEqual([true, false, false, false])
  })
  it("voters and standbys receive the log, spares do not", () => {
    expect(m.members.map(isReplicated)).toEqual([true, true, false])
  })
})
