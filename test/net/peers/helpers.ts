// Shared helpers of the peer-link tests: message generators, a seeded PRNG, log capture, and
// polling on the live clock.
import fc from "fast-check"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Context, Duration, Effect, Exit, Layer, Logger, Scope } from "effect"
import type { SnapshotSource } from "../../../src/actors/snapshotData.ts"
import { isSnapshotSource, readAllBytes, snapshotOfBytes } from "../../../src/actors/snapshotData.ts"
import type { SnapshotData } from "../../../src/raft/messages.ts"
import type { SnapshotMeta } from "../../../src/raft/types.ts"
import { Disk } from "../../../src/storage/Disk.ts"
import type { SnapshotsService } from "../../../src/storage/Snapshots.ts"
import { Snapshots, writeSnapshotFrom } from "../../../src/storage/Snapshots.ts"
import type { Envelope } from "../../../src/raft/messages.ts"
import type { TcpTransportOptions, TransportService } from "../../../src/net/peers/PeerTransport.ts"
import { makeTcp } from "../../../src/net/peers/PeerTransport.ts"
import type { Message } from "../../../src/raft/messages.ts"
import type { Entry, Membership } from "../../../src/raft/types.ts"
import { freePort } from "../../freePort.ts"

/** xorshift32: deterministic bytes for tests without Math.random. */
export function prng(seed: number) {
  let state = (seed | 0) || 0x9e3779b9
  const next = () => {
    state ^= state << 13
    state ^= state >>> 17
    state ^= state << 5
    return (state >>> 0) / 0x100000000
  }
  return {
    next,
    int: (max: number) => Math.floor(next() * max),
    bytes: (length: number) => {
      const out = new Uint8Array(length)
      for (let i = 0; i < length; i++) out[i] = Math.floor(next() * 256)
      return out
    }
  }
}

const id = fc.integer({ min: 1, max: 2 ** 31 })
const count = fc.oneof(fc.integer({ min: 0, max: 1000 }), fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }))
const membership: fc.Arbitrary<Membership> = fc.record({
  members: fc.array(
    fc.record({ id, address: fc.string({ maxLength: 30 }), role: fc.constantFrom("voter" as const, "standby" as const, "spare" as const) }),
    { maxLength: 5 }
  )
})
export const entry: fc.Arbitrary<Entry> = fc.oneof(
  fc.record({ kind: fc.constant("command" as const), term: count, index: count, data: fc.uint8Array({ maxLength: 300 }) }),
  fc.record({ kind: fc.constant("config" as const), term: count, index: count, config: membership }),
  fc.record({ kind: fc.constant("barrier" as const), term: count, index: count })
)
const head = { from: id, to: id, term: count }
export const message: fc.Arbitrary<Message> = fc.oneof(
  fc.record({ _tag: fc.constant("RequestVote" as const), ...head, pre: fc.boolean(), lastIndex: count, lastTerm: count, transfer: fc.boolean() }),
  fc.record({ _tag: fc.constant("RequestVoteResponse" as const), ...head, pre: fc.boolean(), granted: fc.boolean() }),
  fc.record({ _tag: fc.constant("AppendEntries" as const), ...head, prevIndex: count, prevTerm: count, entries: fc.array(entry, { maxLength: 6 }), commit: count }),
  fc.record({ _tag: fc.constant("AppendEntriesResponse" as const), ...head, success: fc.boolean(), index: count, hintIndex: count, hintTerm: count }),
  fc.record({ _tag: fc.constant("Heartbeat" as const), ...head, commit: count, context: count }),
  fc.record({ _tag: fc.constant("HeartbeatResponse" as const), ...head, context: count }),
  fc.record({ _tag: fc.constant("InstallSnapshot" as const), ...head, meta: fc.record({ index: count, term: count, config: membership }) }),
  fc.record({ _tag: fc.constant("InstallSnapshotResponse" as const), ...head, index: count }),
  fc.record({ _tag: fc.constant("TimeoutNow" as const), ...head }),
  fc.record({ _tag: fc.constant("ReadIndexRequest" as const), ...head, context: count }),
  fc.record({ _tag: fc.constant("ReadIndexResponse" as const), ...head, context: count, index: count, refused: fc.constantFrom(null, "not-leader" as const, "overloaded" as const) })
)

/** Plain data for deep comparison: bytes (Buffer or Uint8Array) become number arrays. */
export function plain(value: unknown): unknown {
  if (value instanceof Uint8Array) return { bytes: Array.from(value) }
  if (Array.isArray(value)) return value.map(plain)
  if (typeof value === "object" && value !== null) {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, plain(v)]))
  }
  return value
}

export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  return a.byteLength === b.byteLength && Buffer.compare(Buffer.from(a.buffer, a.byteOffset, a.byteLength), Buffer.from(b.buffer, b.byteOffset, b.byteLength)) === 0
}

/** An AppendEntries from `from` to `to` whose entries carry `seq` and random bytes. */
export function appendEnvelope(from: number, to: number, seq: number, random: ReturnType<typeof prng>, bytesMax = 2000): Envelope {
  const entries: Array<Entry> = []
  const n = 1 + random.int(3)
  for (let i = 0; i < n; i++) entries.push({ kind: "command", term: 1, index: seq * 4 + i, data: random.bytes(random.int(bytesMax)) })
  return { message: { _tag: "AppendEntries", from, to, term: 1, prevIndex: seq, prevTerm: 1, entries, commit: seq }, snapshot: null }
}

export interface LogLine {
  readonly level: string
  readonly message: string
}

/** A logger that records every line (and still prints nothing). */
export function captureLogs() {
  const lines: Array<LogLine> = []
  const logger = Logger.make(({ logLevel, message }) => {
    const text = Array.isArray(message) ? message.map(String).join(" ") : String(message)
    lines.push({ level: logLevel.label, message: text })
  })
  return { lines, layer: Logger.replace(Logger.defaultLogger, logger) }
}

/** Polls `check` every 5 ms on the live clock until it holds; dies after `timeoutMs`. */
export function waitUntil<E, R>(what: string, check: Effect.Effect<boolean, E, R>, timeoutMs = 5000): Effect.Effect<void, E, R> {
  return Effect.gen(function*() {
    const deadline = Date.now() + timeoutMs
    while (!(yield* check)) {
      if (Date.now() > deadline) return yield* Effect.dieMessage(`timed out after ${timeoutMs} ms waiting for ${what}`)
      yield* Effect.sleep(Duration.millis(5))
    }
  })
}

/** A snapshot store on the real disk in a temporary directory (removed with the scope). */
export const snapshotStore = (options: { readonly dir?: string; readonly chunkBytesMax?: number; readonly incomingSyncBytes?: number } = {}) =>
  Effect.gen(function*() {
    const dir = options.dir ?? fs.mkdtempSync(path.join(os.tmpdir(), "tqlite-snapshots-"))
    if (options.dir === undefined) yield* Effect.addFinalizer(() => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true })))
    const context = yield* Layer.build(Snapshots.layer({ dir, ...options }).pipe(Layer.provide(Disk.layerNode)))
    return { dir, store: Context.get(context, Snapshots) }
  }).pipe(Effect.orDie)

/** `data` stored as the snapshot `meta` in `store`, as the chunked source a peer link sends. */
export const storedSnapshot = (store: SnapshotsService, meta: SnapshotMeta, data: Uint8Array): Effect.Effect<SnapshotSource> =>
  Effect.orDie(Effect.zipRight(writeSnapshotFrom(store, meta, snapshotOfBytes(Effect.succeed(data))), store.source(meta)))

/** A received snapshot's bytes (read back from the receiver's file). */
export const bytesOf = (data: SnapshotData | null): Effect.Effect<Uint8Array> =>
  Effect.suspend(() => {
    if (data === null || !isSnapshotSource(data)) return Effect.dieMessage("no snapshot source")
    return Effect.orDie(readAllBytes(data))
  })

/** A transport in its own scope (closed with the test's at the latest), receiving snapshots
 * into a store of its own (unless the options name an inbox). */
export const start = (options: Omit<TcpTransportOptions, "clusterId" | "listen"> & Partial<TcpTransportOptions> & { readonly snapshotsDir?: string }) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    yield* Effect.addFinalizer(() => Scope.close(scope, Exit.void))
    const { store: snapshots } = yield* snapshotStore(options.snapshotsDir !== undefined ? { dir: options.snapshotsDir, incomingSyncBytes: 1024 * 1024 } : {}).pipe(Scope.extend(scope))
    const transport = yield* makeTcp({ clusterId: "test-cluster", listen: "127.0.0.1:0", snapshotInbox: snapshots.inbox, ...options }).pipe(Scope.extend(scope))
    const received: Array<Envelope> = []
    yield* transport.serve((envelope) => Effect.sync(() => void received.push(envelope)))
    return { transport, received, snapshots, close: Scope.close(scope, Exit.void) }
  })

export const link = (transport: TransportService) =>
  Effect.map(transport.stats, (stats) => {
    const first = stats.links[0]
    if (first === undefined) throw new Error("no link")
    return first
  })

export { freePort }

