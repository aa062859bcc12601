// The parts of `tqlite repair` that need no cluster: how it makes the node a spare, against a
// scripted client (a refusal that would cost the quorum stops at once; a spare found already is
// confirmed by a committed round trip through standby; an answer lost is retried from what the
// leader reports; a stranger at our address is refused; a non-member is added), the arguments,
// and the damaged directory's name.
import { describe, expect, it } from "@effect/vitest"
import { Effect, Either, TestClock } from "effect"
import { parseRepairArgs } from "../../src/cli/commands/repair.ts"
import type { DqliteClientService, ServerInfo, ServerRole } from "../../src/net/client/Client.ts"
import type { ClientError } from "../../src/net/client/errors.ts"
import { RequestTimeout, ServerFailure } from "../../src/net/client/errors.ts"
import type { NodeIdentity } from "../../src/node/identity.ts"
import { damagedDirName, makeSpare } from "../../src/node/repair.ts"

const self: NodeIdentity = { nodeId: 7, clusterId: "c", address: "127.0.0.1:9007" }

type Call = { readonly op: "assign"; readonly role: ServerRole } | { readonly op: "add" }

/** A leader that answers from `members`; `answer` decides each change (undefined: done). */
function scriptedClient(members: Array<ServerInfo>, answer: (call: Call, n: number) => ClientError | undefined) {
  const calls: Array<Call> = []
  const change = (call: Call, apply: () => void): Effect.Effect<void, ClientError> =>
    Effect.suspend(() => {
      calls.push(call)
      const error = answer(call, calls.length)
      // A lost answer (timeout) may still have been applied: the script says so by applying.
      if (error === undefined || error._tag === "RequestTimeout") apply()
      return error === undefined ? Effect.void : Effect.fail(error)
    })
  const unused = () => Effect.die("not used by repair")
  const client = {
    cluster: Effect.sync(() => members.map((m) => ({ ...m }))),
    assign: (id: bigint, role: ServerRole) =>
      change({ op: "assign", role }, () => {
        const i = members.findIndex((m) => m.id === id)
        members[i] = { ...members[i]!, role }
      }),
    add: (id: bigint, address: string) => change({ op: "add" }, () => void members.push({ id, address, role: "spare" })),
    exec: unused,
    query: unused,
    stream: unused,
    prepare: unused,
    transaction: unused,
    leader: unused(),
    remove: unused,
    transfer: unused,
    describe: unused,
    setWeight: unused,
    dump: unused
  } as unknown as DqliteClientService
  return { client, calls, members }
}

const cluster = (role: ServerRole | null): Array<ServerInfo> => [
  { id: 1n, address: "127.0.0.1:9001", role: "voter" },
  { id: 2n, address: "127.0.0.1:9002", role: "voter" },
  ...(role === null ? [] : [{ id: 7n, address: self.address, role }])
]

const quiet = () => Effect.void

describe("repair: making the node a spare", () => {
  it.effect("a voter is demoted by one committed ASSIGN", () =>
    Effect.gen(function*() {
      const script = scriptedClient(cluster("voter"), () => undefined)
      expect(yield* makeSpare(script.client, self, 5_000, quiet)).toEqual({ _tag: "Demoted", from: "voter" })
      expect(script.calls).toEqual([{ op: "assign", role: "spare" }])
    }))

  it.effect("a refusal that would cost the quorum ends it at once, nothing changed", () =>
    Effect.gen(function*() {
      const refusal = new ServerFailure({ code: 1, message: "changing node 7 would leave the reachable voters without a majority", request: "assign" })
      const script = scriptedClient(cluster("voter"), () => refusal)
      const result = yield* Effect.either(makeSpare(script.client, self, 5_000, quiet))
      expect(Either.isLeft(result) && result.left._tag).toBe("WouldLoseQuorum")
      expect(Either.isLeft(result) && result.left.message).toContain("without a majority")
      expect(script.calls).toHaveLength(1)
      expect(script.members.find((m) => m.id === 7n)?.role).toBe("voter")
    }))

  it.effect("a spare found already is confirmed by a committed round trip through standby", () =>
    Effect.gen(function*() {
      const script = scriptedClient(cluster("spare"), () => undefined)
      expect(yield* makeSpare(script.client, self, 5_000, quiet)).toEqual({ _tag: "AlreadySpare" })
      expect(script.calls).toEqual([{ op: "assign", role: "standby" }, { op: "assign", role: "spare" }])
      expect(script.members.find((m) => m.id === 7n)?.role).toBe("spare")
    }))

  it.effect("a lost answer (applied) is not taken as committed: the spare is confirmed by the round trip", () =>
    Effect.gen(function*() {
      const lost = new RequestTimeout({ address: "127.0.0.1:9001", request: "assign", timeoutMs: 100 })
      const script = scriptedClient(cluster("voter"), (_, n) => (n === 1 ? lost : undefined))
      const fiber = yield* Effect.fork(makeSpare(script.client, self, 5_000, quiet))
      yield* TestClock.adjust("1 second")
      expect(yield* fiber.await.pipe(Effect.flatten)).toEqual({ _tag: "Demoted", from: "voter" })
      expect(script.calls).toEqual([{ op: "assign", role: "spare" }, { op: "assign", role: "standby" }, { op: "assign", role: "spare" }])
    }))

  it.effect("another change in progress is waited out, within the bound", () =>
    Effect.gen(function*() {
      const busy = new ServerFailure({ code: 5, message: "a configuration change is already in progress", request: "assign" })
      const script = scriptedClient(cluster("standby"), () => busy)
      const fiber = yield* Effect.fork(Effect.either(makeSpare(script.client, self, 2_000, quiet)))
      yield* TestClock.adjust("3 seconds")
      const result = yield* fiber.await.pipe(Effect.flatten)
      expect(Either.isLeft(result) && result.left._tag).toBe("SpareNotConfirmed")
      expect(Either.isLeft(result) && result.left.message).toContain("a configuration change is already in progress")
      expect(script.calls.length).toBeGreaterThan(3)
    }))

  it.effect("a non-member is added as a spare; another node at our address is refused", () =>
    Effect.gen(function*() {
      const absent = scriptedClient(cluster(null), () => undefined)
      expect(yield* makeSpare(absent.client, self, 5_000, quiet)).toEqual({ _tag: "Added" })
      expect(absent.calls).toEqual([{ op: "add" }])
      const squatted = scriptedClient([...cluster(null), { id: 9n, address: self.address, role: "voter" }], () => undefined)
      const result = yield* Effect.either(makeSpare(squatted.client, self, 5_000, quiet))
      expect(Either.isLeft(result) && result.left._tag).toBe("MemberConflict")
      expect(squatted.calls).toEqual([])
    }))
})

describe("repair: arguments and names", () => {
  it("parses its arguments and refuses bad ones", () => {
    expect(parseRepairArgs([])).toBe("--data-dir is required")
    expect(parseRepairArgs(["--data-dir", "d", "--servers", "nope"])).toContain("is not HOST:PORT")
    expect(parseRepairArgs(["--data-dir", "d", "--tls-cert", "c"])).toContain("go together")
    expect(parseRepairArgs(["--data-dir", "d", "--timeout-ms", "5"])).toContain("--timeout-ms")
    const ok = parseRepairArgs(["--data-dir", "d", "--servers", "127.0.0.1:1,127.0.0.1:2"])
    expect(typeof ok !== "string" && ok.servers).toEqual(["127.0.0.1:1", "127.0.0.1:2"])
  })

  it("names the damaged directory after the UTC time", () => {
    expect(damagedDirName(Date.UTC(2026, 11, 7, 3, 45, 12, 345))).toBe("damaged-20261207T034512Z")
  })
})
