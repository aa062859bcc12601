// Which one role change a cluster needs next, as a pure function of what the leader knows. Same
// goals as go-dqlite's app roles (a target number of online voters and standbys, voters spread
// across failure domains, offline members demoted), with two rules of our own: a node becomes a
// voter only from a caught-up standby (a spare first becomes a standby to catch up, since spares
// receive no log), and no change is proposed that would leave the reachable voters short of a
// majority of the new voter set.
import type { NodeId, Role } from "../../raft/types.ts"

export interface RoleTargets {
  /** Online voters wanted (go-dqlite: 3). */
  readonly voters: number
  /** Online standbys wanted (go-dqlite: 3). */
  readonly standbys: number
}

export const defaultRoleTargets: RoleTargets = { voters: 3, standbys: 3 }

/** Below this many members, keep a single voter (the leader): two voters only double the ways
 * to lose quorum. The others stay standbys so the data still has copies. */
export const clusterSizeForVotersMin = 3

export interface MemberView {
  readonly id: NodeId
  readonly role: Role
  /** The leader heard from it recently (voters, standbys), or it answered a probe (spares). */
  readonly online: boolean
  /** Its log is close enough to the leader's to vote without stalling commits. */
  readonly caughtUp: boolean
  readonly failureDomain: bigint
  readonly weight: bigint
}

export interface ClusterView {
  readonly leader: NodeId
  readonly members: ReadonlyArray<MemberView>
}

export interface RoleChange {
  readonly node: NodeId
  readonly role: Role
  readonly reason: string
}

export function majority(voterCount: number): number {
  return Math.floor(voterCount / 2) + 1
}

/** True when, after `change`, the voters that are online still form a majority of all voters. */
export function keepsQuorum(view: ClusterView, change: { readonly node: NodeId; readonly role: Role }): boolean {
  const after = view.members.map((m) => (m.id === change.node ? { ...m, role: change.role } : m))
  const voters = after.filter((m) => m.role === "voter")
  if (voters.length === 0) return false
  return voters.filter((m) => m.online).length >= majority(voters.length)
}

export function decideRoleChange(view: ClusterView, targets: RoleTargets): RoleChange | null {
  if (view.members.length <= 1) return null
  // A leader out of touch with a majority is about to step down (check-quorum): change nothing.
  const voters = view.members.filter((m) => m.role === "voter")
  if (voters.filter((m) => m.online).length < majority(voters.length)) return null
  const candidates = proposals(view, targets)
  for (const change of candidates) {
    const member = view.members.find((m) => m.id === change.node)
    if (member === undefined || member.role === change.role || member.id === view.leader) continue
    if (change.role === "voter" && !(member.online && member.caughtUp && member.role === "standby")) continue
    if (keepsQuorum(view, change)) return change
  }
  return null
}

/** The changes worth making, most urgent first; decideRoleChange takes the first safe one. */
function proposals(view: ClusterView, targets: RoleTargets): ReadonlyArray<RoleChange> {
  const others = view.members.filter((m) => m.id !== view.leader)
  const pick = (role: Role, online: boolean) => view.members.filter((m) => m.role === role && m.online === online)
  const onlineVoters = pick("voter", true)
  const offlineVoters = pick("voter", false)
  const onlineStandbys = pick("standby", true)
  const offlineStandbys = pick("standby", false)
  const onlineSpares = pick("spare", true)
  const out: RoleChange[] = []

  if (view.members.length < clusterSizeForVotersMin) {
    for (const m of others) if (m.role === "voter") out.push({ node: m.id, role: m.online ? "standby" : "spare", reason: "a cluster this small keeps one voter" })
    if (onlineStandbys.length < targets.standbys) for (const m of onlineSpares) out.push({ node: m.id, role: "standby", reason: "standbys below target" })
    return out
  }

  // Voters spread over failure domains: promote into a domain that has none, while some domain
  // has two or more (the surplus voter is demoted by the rule below).
  const votedDomains = domainsOf(onlineVoters)
  const allDomains = domainsOf(view.members.filter((m) => m.online))
  if (votedDomains.size < allDomains.size && votedDomains.size < onlineVoters.length) {
    const inEmptyDomain = (m: MemberView) => !votedDomains.has(m.failureDomain)
    const ready = preferred(onlineStandbys.filter((m) => m.caughtUp && inEmptyDomain(m)), votedDomains)
    if (ready.length > 0) return [...ready.map((m) => promotion(m, "voters spread across failure domains")), ...afterSpread(view, targets)]
    const staging = preferred(onlineSpares.filter(inEmptyDomain), votedDomains)
    for (const m of staging) out.push({ node: m.id, role: "standby", reason: "to catch up before becoming a voter in a failure domain without one" })
  }

  if (onlineVoters.length < targets.voters) {
    const ready = preferred(onlineStandbys.filter((m) => m.caughtUp), votedDomains)
    for (const m of ready) out.push(promotion(m, `online voters ${onlineVoters.length} below target ${targets.voters}`))
    // Nobody to promote yet and nobody catching up: a spare starts catching up as a standby.
    if (ready.length === 0 && onlineStandbys.length === 0) {
      for (const m of preferred(onlineSpares, votedDomains)) out.push({ node: m.id, role: "standby", reason: "to catch up before becoming a voter" })
    }
  }
  out.push(...afterSpread(view, targets))
  return out
}

/** The rules that only shed surplus or offline members. */
function afterSpread(view: ClusterView, targets: RoleTargets): ReadonlyArray<RoleChange> {
  const pick = (role: Role, online: boolean) => view.members.filter((m) => m.role === role && m.online === online)
  const onlineVoters = pick("voter", true)
  const onlineStandbys = pick("standby", true)
  const out: RoleChange[] = []
  if (onlineVoters.length > targets.voters) {
    for (const m of demotionOrder(onlineVoters.filter((m) => m.id !== view.leader), onlineVoters)) out.push({ node: m.id, role: "standby", reason: `online voters ${onlineVoters.length} above target ${targets.voters}` })
  }
  for (const m of pick("voter", false)) out.push({ node: m.id, role: "spare", reason: "voter unreachable" })
  if (onlineStandbys.length < targets.standbys) {
    for (const m of preferred(pick("spare", true), domainsOf(onlineStandbys))) out.push({ node: m.id, role: "standby", reason: `online standbys ${onlineStandbys.length} below target ${targets.standbys}` })
  }
  // Standbys catching up to fill empty voter seats are not surplus: demoting them would undo the
  // staging rule above every other round (spare → standby → spare …) and no seat would be filled.
  const seatsToFill = Math.max(0, targets.voters - onlineVoters.length)
  if (onlineStandbys.length > targets.standbys + seatsToFill) {
    const surplus = onlineStandbys.length - targets.standbys - seatsToFill
    for (const m of [...onlineStandbys].sort(byWeightDescending).slice(0, surplus)) out.push({ node: m.id, role: "spare", reason: `online standbys ${onlineStandbys.length} above target ${targets.standbys}` + (seatsToFill > 0 ? ` and ${seatsToFill} voter seat(s) to fill` : "") })
  }
  for (const m of pick("standby", false)) out.push({ node: m.id, role: "spare", reason: "standby unreachable" })
  return out
}

function promotion(m: MemberView, reason: string): RoleChange {
  return { node: m.id, role: "voter", reason }
}

function domainsOf(members: ReadonlyArray<MemberView>): Set<bigint> {
  return new Set(members.map((m) => m.failureDomain))
}

/** Candidates from a domain not in `taken` first, then the lighter weight, then the lower id
 * (so the choice is deterministic). */
function preferred(members: ReadonlyArray<MemberView>, taken: ReadonlySet<bigint>): ReadonlyArray<MemberView> {
  return [...members].sort((a, b) => {
    const aFresh = taken.has(a.failureDomain) ? 1 : 0
    const bFresh = taken.has(b.failureDomain) ? 1 : 0
    if (aFresh !== bFresh) return aFresh - bFresh
    if (a.weight !== b.weight) return a.weight < b.weight ? -1 : 1
    return a.id - b.id
  })
}

/** Voters to demote first: from the domain holding the most voters (of `voters`), the heaviest
 * first. */
function demotionOrder(members: ReadonlyArray<MemberView>, voters: ReadonlyArray<MemberView>): ReadonlyArray<MemberView> {
  const perDomain = new Map<bigint, number>()
  for (const m of voters) perDomain.set(m.failureDomain, (perDomain.get(m.failureDomain) ?? 0) + 1)
  return [...members].sort((a, b) => {
    const crowd = (perDomain.get(b.failureDomain) ?? 0) - (perDomain.get(a.failureDomain) ?? 0)
    if (crowd !== 0) return crowd
    return byWeightDescending(a, b)
  })
}

function byWeightDescending(a: MemberView, b: MemberView): number {
  if (a.weight !== b.weight) return a.weight > b.weight ? -1 : 1
  return b.id - a.id
}
