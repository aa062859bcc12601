// Telling peers from clients, and the peer handshake.
//
// One address serves dqlite clients and tqlite peers; the first 8-byte word of a connection
// tells them apart:
//   - a dqlite client sends its protocol version as a u64 little-endian: 1 (01 00 … 00) or the
//     legacy 0x86104dd760433fe5 (e5 3f 43 60 d7 4d 10 86);
//   - a tqlite peer sends the ASCII bytes "TQLPEER" followed by one byte, its peer protocol
//     version: 54 51 4c 50 45 45 52 01 for version 1. Its first byte is 'T' (0x54), never 0x01 or
//     0xe5, so it can equal neither dqlite version whatever the version byte.
// Any other word closes the connection.
//
// After the magic word the connecting peer sends a hello frame (u32 LE length, then a plain
// msgpack map — no records, so any version can read any other's): {version, cluster, node,
// peer, refused}, where `node` is its own id and `peer` the id it expects to reach. The
// accepting side checks it and answers with its own hello (`peer` = the connector's id), with
// `refused` set to the reason when it refuses; then it closes. The connector checks the answer
// the same way. Only then do Raft frames flow, connector → acceptor only: each node dials each
// peer for its own outbound traffic.
import type * as net from "node:net"
import { Duration, Effect, Either } from "effect"
import { Packr, Unpackr } from "msgpackr"
import type { NodeId } from "../../raft/types.ts"
import type { ConnectionClosed, FrameError } from "./errors.ts"
import { ConnectionTimeout, HandshakeRefused, MalformedFrame } from "./errors.ts"
import { encodeFrame, printable } from "./framing.ts"
import type { SocketReader } from "./sockets.ts"

export const wordBytes = 8
/** tqlite's peer protocol version: bump on any incompatible change of frames or messages. */
// 2: snapshots stream between files (SnapshotBegin carries a CRC32C, chunks an offset, the
// receiver answers with Resume frames).
// 3: a Message with large entries is a data frame, their data after a msgpack header (framing.ts).
// 4: a snapshot chunk is raw bytes behind a fixed header, not msgpack; an append with 16 KiB or
// more of command data is an inline data frame (framing.ts).
export const peerProtocolVersion = 4
const magicPrefix = new TextEncoder().encode("TQLPEER")
export const dqliteProtocolVersion = 1n
export const dqliteLegacyProtocolVersion = 0x86104dd760433fe5n

/** The first word a peer sends: "TQLPEER" + version byte. */
export function peerMagicWord(version: number = peerProtocolVersion): Uint8Array {
  const word = new Uint8Array(wordBytes)
  word.set(magicPrefix)
  word[7] = version
  return word
}

export type FirstWord =
  | { readonly _tag: "Peer"; readonly version: number }
  | { readonly _tag: "Client"; readonly version: bigint }
  | { readonly _tag: "Unknown"; readonly word: bigint }

export function classifyFirstWord(word: Uint8Array): FirstWord {
  if (word.byteLength !== wordBytes) throw new Error(`a first word is ${wordBytes} bytes, got ${word.byteLength}`)
  if (magicPrefix.every((byte, i) => word[i] === byte)) return { _tag: "Peer", version: word[7]! }
  const value = Buffer.from(word.buffer, word.byteOffset, wordBytes).readBigUInt64LE(0)
  if (value === dqliteProtocolVersion || value === dqliteLegacyProtocolVersion) return { _tag: "Client", version: value }
  return { _tag: "Unknown", word: value }
}

export interface Hello {
  readonly version: number
  readonly clusterId: string
  readonly nodeId: NodeId
  /** The node the sender expects on the other side (connector), or is answering (acceptor). */
  readonly peerId: NodeId
  /** Set by an acceptor that refuses: why. */
  readonly refused: string | null
  /** The connector's own listen address, so the acceptor can answer a node it does not know
   * yet (one that is joining and not in its configuration); null from acceptors. */
  readonly address: string | null
}

/** Who we are, as the handshake states it. */
export interface LocalIdentity {
  readonly clusterId: string
  readonly nodeId: NodeId
  readonly version: number
  /** Our listen address, announced when we connect (null until known). */
  readonly address: string | null
}

const helloPackr = new Packr({ useRecords: false })
const helloUnpackr = new Unpackr({ useRecords: false, mapsAsObjects: true, int64AsType: "number" })

export function encodeHello(hello: Hello): Uint8Array {
  return helloPackr.pack({
    version: hello.version,
    cluster: hello.clusterId,
    node: hello.nodeId,
    peer: hello.peerId,
    refused: hello.refused,
    address: hello.address
  })
}

export function decodeHello(payload: Uint8Array): Either.Either<Hello, MalformedFrame> {
  let value: unknown
  try {
    value = helloUnpackr.unpack(payload)
  } catch (cause) {
    return Either.left(new MalformedFrame({ detail: `unreadable handshake (${printable(String(cause))})`, cause }))
  }
  if (typeof value !== "object" || value === null) return Either.left(new MalformedFrame({ detail: "handshake is not a map" }))
  const fields = value as Record<string, unknown>
  const { address, cluster, node, peer, refused, version } = fields
  const isId = (id: unknown): id is number => typeof id === "number" && Number.isSafeInteger(id) && id >= 0
  if (!isId(version) || typeof cluster !== "string" || !isId(node) || !isId(peer) || (refused !== null && typeof refused !== "string")) {
    return Either.left(new MalformedFrame({ detail: "handshake lacks version, cluster, node or peer" }))
  }
  // `address` arrived after version 1's first release: absent means not announced.
  const announced = typeof address === "string" && address.length > 0 && address.length <= 512 ? address : null
  return Either.right({ version, clusterId: cluster, nodeId: node, peerId: peer, refused, address: announced })
}

/** Why `remote` may not talk to us, or null. `expectedNode` is who a connector dialed; an
 * acceptor takes any node of its cluster (null). */
export function helloProblem(local: LocalIdentity, remote: Hello, expectedNode: NodeId | null): string | null {
  if (remote.version !== local.version) {
    return `peer protocol version ${remote.version} differs from ours (${local.version})`
  }
  if (remote.clusterId !== local.clusterId) {
    return `cluster id "${remote.clusterId}" differs from ours ("${local.clusterId}")`
  }
  if (remote.nodeId === local.nodeId) return `the peer claims our own node id ${local.nodeId}`
  if (remote.peerId !== local.nodeId) {
    return `the peer expected node ${remote.peerId} at this address, but this is node ${local.nodeId}`
  }
  if (expectedNode !== null && remote.nodeId !== expectedNode) {
    return `node ${remote.nodeId} answered where node ${expectedNode} was expected`
  }
  return null
}

const withTimeout = (timeoutMs: number) =>
  Effect.timeoutFail({
    duration: Duration.millis(timeoutMs),
    onTimeout: () => new ConnectionTimeout({ phase: "handshake", timeoutMs })
  })

/** The connecting side: magic word and hello out, the acceptor's hello in and checked. */
export function initiate(options: {
  readonly socket: net.Socket
  readonly reader: SocketReader
  readonly local: LocalIdentity
  readonly peer: NodeId
  readonly timeoutMs: number
}): Effect.Effect<Hello, FrameError | ConnectionClosed | ConnectionTimeout | HandshakeRefused> {
  const { local, peer, reader, socket } = options
  return Effect.gen(function*() {
    const hello: Hello = { version: local.version, clusterId: local.clusterId, nodeId: local.nodeId, peerId: peer, refused: null, address: local.address }
    const magic = peerMagicWord(local.version)
    const frame = encodeFrame(encodeHello(hello))
    const out = new Uint8Array(magic.byteLength + frame.byteLength)
    out.set(magic)
    out.set(frame, magic.byteLength)
    socket.write(out)
    const answer = yield* Effect.flatMap(reader.readFrame, decodeHello)
    if (answer.refused !== null) return yield* new HandshakeRefused({ by: "remote", reason: answer.refused })
    const problem = helloProblem(local, answer, peer)
    if (problem !== null) return yield* new HandshakeRefused({ by: "local", reason: problem })
    return answer
  }).pipe(withTimeout(options.timeoutMs))
}

/** The accepting side, after the magic word (whose version byte is `magicVersion`): reads the
 * hello, answers, and fails with HandshakeRefused when it refused (the answer says why). */
export function respond(options: {
  readonly socket: net.Socket
  readonly reader: SocketReader
  readonly local: LocalIdentity
  readonly magicVersion: number
  readonly timeoutMs: number
}): Effect.Effect<Hello, FrameError | ConnectionClosed | ConnectionTimeout | HandshakeRefused> {
  const { local, reader, socket } = options
  return Effect.gen(function*() {
    const hello = yield* Effect.flatMap(reader.readFrame, decodeHello)
    const problem = options.magicVersion !== local.version
      ? `peer protocol version ${options.magicVersion} (first word) differs from ours (${local.version})`
      : helloProblem(local, hello, null)
    socket.write(encodeFrame(encodeHello({
      version: local.version,
      clusterId: local.clusterId,
      nodeId: local.nodeId,
      peerId: hello.nodeId,
      refused: problem,
      address: null
    })))
    if (problem !== null) {
      return yield* new HandshakeRefused({ by: "local", reason: problem, discovery: hello.clusterId === "" && hello.nodeId === 0 })
    }
    return hello
  }).pipe(withTimeout(options.timeoutMs))
}
