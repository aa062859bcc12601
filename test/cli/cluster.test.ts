// `tqlite cluster` against a three-node cluster in this process: list (table and JSON) agrees
// with the nodes' own Raft status, transfer with and without an id moves leadership, assign
// changes roles, add and remove change the membership, and refusals exit 1 with the reason.
import { Effect } from "effect"
import { describe, expect, it } from "vitest"
import type { ClusterAction } from "../../src/cli/commands/cluster.ts"
import { parseClusterAction, runCluster } from "../../src/cli/commands/cluster.ts"
import type { OutputFormat } from "../../src/cli/format.ts"
import { clusterForFile, freePort, leaderAmong, runCaptured } from "./harness.ts"

// Manual roles: no role manager reverts what these tests assign.
const cluster = clusterForFile(3, { manualRoles: true })

const run = (action: ClusterAction, format: OutputFormat = "table") =>
  Effect.runPromise(runCaptured((io) => runCluster({ servers: cluster().addresses, action, format }, io)))

interface Member {
  readonly id: number
  readonly address: string
  readonly role: string
  readonly leader: boolean
}

const list = async (): Promise<ReadonlyArray<Member>> => {
  const result = await run({ _tag: "List" }, "json")
  expect(result.code).toBe(0)
  return JSON.parse(result.out) as ReadonlyArray<Member>
}

const currentLeader = () => Effect.runPromise(leaderAmong(cluster().nodes))

describe("tqlite cluster", () => {
  it("lists the members as the nodes see them, in a table and as JSON", async () => {
    const leader = await currentLeader()
    const members = await list()
    expect(members.map((m) => m.address).sort()).toEqual([...cluster().addresses].sort())
    expect(members.every((m) => m.role === "voter")).toBe(true)
    expect(members.filter((m) => m.leader)).toEqual([
      { id: leader.node.identity.nodeId, address: leader.node.identity.address, role: "voter", leader: true }
    ])
    const table = await run({ _tag: "List" })
    const lines = table.out.trimEnd().split("\n")
    expect(lines[0]).toMatch(/^\s*id \| address\s+\| role\s+\| leader$/)
    expect(lines).toHaveLength(5)
    expect(lines.filter((l) => / yes$/.test(l))).toEqual([expect.stringContaining(leader.node.identity.address)])
  })

  it("transfer without an id hands leadership to another voter; with an id to that one", async () => {
    const before = await currentLeader()
    const moved = await run({ _tag: "Transfer", id: null })
    expect(moved.err).toBe("")
    expect(moved.code).toBe(0)
    const after = await currentLeader()
    expect(after.node.identity.nodeId).not.toBe(before.node.identity.nodeId)
    expect(moved.out).toBe(`leader: ${after.node.identity.nodeId} at ${after.node.identity.address}\n`)

    const target = cluster().nodes.find((n) => n !== after)!
    const chosen = await run({ _tag: "Transfer", id: BigInt(target.node.identity.nodeId) })
    expect(chosen.code).toBe(0)
    expect(chosen.out).toBe(`leader: ${target.node.identity.nodeId} at ${target.node.identity.address}\n`)
    expect((await currentLeader()).node.identity.nodeId).toBe(target.node.identity.nodeId)
  })

  it("assign changes a member's role and back", async () => {
    const leader = await currentLeader()
    const follower = cluster().nodes.find((n) => n !== leader)!
    const id = BigInt(follower.node.identity.nodeId)
    expect(await run({ _tag: "Assign", id, role: "spare" })).toEqual({ code: 0, out: `node ${id} is now a spare\n`, err: "" })
    expect((await list()).find((m) => m.id === Number(id))?.role).toBe("spare")
    expect((await run({ _tag: "Assign", id, role: "voter" })).code).toBe(0)
    expect((await list()).find((m) => m.id === Number(id))?.role).toBe("voter")
    const again = await run({ _tag: "Assign", id, role: "voter" })
    expect(again.code).toBe(1)
    // The gateway words refusals as dqlite does.
    expect(again.err).toBe("Error: server role is not valid (code 1)\n")
  })

  it("add puts a new member in as a spare; remove takes members out; unknown ids are refused", async () => {
    const address = `127.0.0.1:${await Effect.runPromise(freePort)}`
    expect(await run({ _tag: "Add", id: 99n, address })).toEqual({ code: 0, out: `added node 99 at ${address} as a spare\n`, err: "" })
    expect((await list()).find((m) => m.id === 99)).toEqual({ id: 99, address, role: "spare", leader: false })
    expect((await run({ _tag: "Remove", id: 99n })).code).toBe(0)
    expect((await list()).some((m) => m.id === 99)).toBe(false)

    const leader = await currentLeader()
    const follower = cluster().nodes.find((n) => n !== leader)!
    expect((await run({ _tag: "Remove", id: BigInt(follower.node.identity.nodeId) })).code).toBe(0)
    const left = await list()
    expect(left.map((m) => m.address).sort()).toEqual(cluster().addresses.filter((a) => a !== follower.node.identity.address).sort())

    const unknown = await run({ _tag: "Remove", id: 12345n })
    expect(unknown.code).toBe(1)
    expect(unknown.err).toBe("Error: server ID is not valid (code 1)\n")
  })

  it("describe asks one server for its failure domain and weight", async () => {
    const described = await run({ _tag: "Describe", address: cluster().addresses[0]! }, "json")
    expect(described.code).toBe(0)
    expect(JSON.parse(described.out)).toEqual({ address: cluster().addresses[0], failureDomain: 0, weight: 0 })
  })

  it("parses actions and says what is wrong with bad ones", () => {
    expect(parseClusterAction(["transfer"])).toEqual({ _tag: "Transfer", id: null })
    expect(parseClusterAction(["assign", "3", "standby"])).toEqual({ _tag: "Assign", id: 3n, role: "standby" })
    expect(parseClusterAction(["add", "18446744073709551615", "h:1"])).toEqual({ _tag: "Add", id: 18446744073709551615n, address: "h:1" })
    expect(parseClusterAction(["assign", "3", "king"])).toBe("role 'king' is not one of voter, standby, spare")
    expect(parseClusterAction(["remove", "x"])).toBe("node id 'x' is not a decimal or 0x-hex number")
    expect(parseClusterAction(["remove", "0"])).toBe("node id 0 is out of range (1 to 2^64-1)")
    expect(parseClusterAction(["add", "1"])).toBe("usage: cluster add ID ADDRESS")
    expect(parseClusterAction(["frobnicate"])).toBe("unknown action 'frobnicate'")
  })
})
