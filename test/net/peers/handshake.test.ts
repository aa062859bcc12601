// The first word tells dqlite clients from tqlite peers; the hello is checked on both sides;
// the limits are checked against each other.
import { Packr } from "msgpackr"
import { describe, expect, it } from "@effect/vitest"
import { Either } from "effect"
import type { Hello, LocalIdentity } from "../../../src/net/peers/handshake.ts"
import { peerLimits } from "../../../src/net/peers/limits.ts"
import { classifyFirstWord, decodeHello, encodeHello, helloProblem, peerMagicWord, peerProtocolVersion } from "../../../src/net/peers/handshake.ts"

const word = (...bytes: Array<number>) => Uint8Array.from(bytes)

describe("first word", () => {
  it("dqlite's v1 and legacy versions are clients, TQLPEER+version is a peer, the rest unknown", () => {
    expect(classifyFirstWord(word(1, 0, 0, 0, 0, 0, 0, 0))).toEqual({ _tag: "Client", version: 1n })
    expect(classifyFirstWord(word(0xe5, 0x3f, 0x43, 0x60, 0xd7, 0x4d, 0x10, 0x86))).toEqual({ _tag: "Client", version: 0x86104dd760433fe5n })
    expect(Array.from(peerMagicWord())).toEqual([0x54, 0x51, 0x4c, 0x50, 0x45, 0x45, 0x52, 0x04])
    expect(classifyFirstWord(peerMagicWord())).toEqual({ _tag: "Peer", version: peerProtocolVersion })
    expect(classifyFirstWord(peerMagicWord(9))).toEqual({ _tag: "Peer", version: 9 })
    expect(classifyFirstWord(word(2, 0, 0, 0, 0, 0, 0, 0))._tag).toBe("Unknown")
    expect(classifyFirstWord(word(0x54, 0x51, 0x4c, 0x50, 0x45, 0x45, 0x53, 1))._tag).toBe("Unknown")
  })

  it("no peer magic word, whatever its version byte, is a dqlite version", () => {
    for (let version = 0; version < 256; version++) expect(classifyFirstWord(peerMagicWord(version))._tag).toBe("Peer")
  })
})

describe("hello", () => {
  const local: LocalIdentity = { clusterId: "alpha", nodeId: 1, version: peerProtocolVersion, address: "127.0.0.1:1" }
  const hello = (overrides: Partial<Hello> = {}): Hello => ({ version: peerProtocolVersion, clusterId: "alpha", nodeId: 2, peerId: 1, refused: null, address: "127.0.0.1:2", ...overrides })

  it("round-trips as a plain msgpack map", () => {
    const h = hello({ refused: "because" })
    expect(decodeHello(encodeHello(h))).toEqual(Either.right(h))
    const bad = decodeHello(Uint8Array.of(0xc1))
    expect(Either.isLeft(bad) && bad.left._tag).toBe("MalformedFrame")
    const notHello = decodeHello(encodeHello(hello()).subarray(0, 5))
    expect(Either.isLeft(notHello)).toBe(true)
  })

  it("carries the connector's listen address, and reads a hello without one as not announced", () => {
    expect(decodeHello(encodeHello(hello({ address: "10.1.2.3:9001" })))).toEqual(Either.right(hello({ address: "10.1.2.3:9001" })))
    const older = new Packr({ useRecords: false }).pack({ version: peerProtocolVersion, cluster: "alpha", node: 2, peer: 1, refused: null })
    expect(decodeHello(older)).toEqual(Either.right(hello({ address: null })))
  })

  it("accepts the same cluster and version, and says why it refuses anything else", () => {
    expect(helloProblem(local, hello(), null)).toBeNull()
    expect(helloProblem(local, hello(), 2)).toBeNull()
    expect(helloProblem(local, hello({ clusterId: "beta" }), null)).toBe(`cluster id "beta" differs from ours ("alpha")`)
    expect(helloProblem(local, hello({ version: 1 }), null)).toBe(`peer protocol version 1 differs from ours (${peerProtocolVersion})`)
    expect(helloProblem(local, hello({ peerId: 5 }), null)).toMatch(/expected node 5 at this address, but this is node 1/)
    expect(helloProblem(local, hello({ nodeId: 3 }), 2)).toMatch(/node 3 answered where node 2 was expected/)
    expect(helloProblem(local, hello({ nodeId: 1 }), null)).toMatch(/our own node id/)
  })
})

describe("limits", () => {
  it("are validated together", () => {
    expect(() => peerLimits()).not.toThrow()
    expect(() => peerLimits({ snapshotChunkBytes: 64 * 1024 * 1024 })).toThrow(/snapshot chunk fits one frame/)
    expect(() => peerLimits({ writeBatchMax: 2000 })).toThrow(/writeBatchMax <= outboundMessagesMax/)
    expect(() => peerLimits({ reconnectBaseMs: 10_000 })).toThrow(/reconnectBaseMs <= reconnectCapMs/)
    expect(() => peerLimits({ writeBufferBytesMax: 1024 })).toThrow(/64 KiB/)
    expect(() => peerLimits({ stallTimeoutMs: 0 })).toThrow(/positive integer/)
  })
})
