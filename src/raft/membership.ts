// Single-server membership changes with dqlite's roles. A configuration takes effect as soon as
// it is appended (not when committed), and at most one may be uncommitted at a time.
import type { Member, Membership, NodeId, Role } from "./types.ts"
import { memberOf } from "./types.ts"

export type MembershipChange =
  | { readonly kind: "add"; readonly node: NodeId; readonly address: string; readonly role: Role }
  | { readonly kind: "remove"; readonly node: NodeId }
  | { readonly kind: "assign"; readonly node: NodeId; readonly role: Role }

export const emptyMembership: Membership = { members: [] }

export function isVoter(config: Membership, id: NodeId): boolean {
  return memberOf(config, id)?.role === "voter"
}

/** Voters and standbys receive the log; spares do not. */
export function isReplicated(member: Member): boolean {
  return member.role !== "spare"
}

/** The configuration after `change`, or a reason it is not allowed. */
export function applyChange(config: Membership, change: MembershipChange): Membership | string {
  const existing = memberOf(config, change.node)
  const sorted = (members: ReadonlyArray<Member>): Membership => ({
    members: [...members].sort((a, b) => a.id - b.id)
  })
  switch (change.kind) {
    case "add":
      if (existing !== undefined) return `node ${change.node} is already a member`
      if (!Number.isSafeInteger(change.node) || change.node <= 0) return `invalid node id ${change.node}`
      return sorted([...config.members, { id: change.node, address: change.address, role: change.role }])
    case "remove": {
      if (existing === undefined) return `node ${change.node} is not a member`
      const rest = config.members.filter((m) => m.id !== change.node)
      if (existing.role === "voter" && !rest.some((m) => m.role === "voter")) return "cannot remove the last voter"
      return sorted(rest)
    }
    case "assign": {
      if (existing === undefined) return `node ${change.node} is not a member`
      if (existing.role === change.role) return `node ${change.node} is already a ${change.role}`
      const rest = config.members.filter((m) => m.id !== change.node)
      if (existing.role === "voter" && !rest.some((m) => m.role === "voter")) return "cannot demote the last voter"
      return sorted([...rest, { ...existing, role: change.role }])
    }
  }
}
