// A node joining a cluster knows an address, not the cluster's id. It learns it the way a peer
// is refused: it opens a peer connection announcing no cluster, and the member's answer (a
// refusal) carries the member's own cluster id and node id. Nothing else is exchanged.
import * as net from "node:net"
import * as tls from "node:tls"
import { Data, Duration, Effect, Either } from "effect"
import type { NodeId } from "../../raft/types.ts"
import { FrameDecoder, encodeFrame } from "./framing.ts"
import { decodeHello, encodeHello, peerMagicWord, peerProtocolVersion } from "./handshake.ts"
import type { PeerTlsOptions } from "./sockets.ts"
import { parseAddress } from "./sockets.ts"

export class DiscoveryFailed extends Data.TaggedError("DiscoveryFailed")<{ readonly address: string; readonly detail: string }> {
  override get message() {
    return `cannot reach a cluster member at ${this.address}: ${this.detail}`
  }
}

const answerBytesMax = 4096

/** The cluster id and node id of the member listening at `address`. */
export const discoverCluster = (address: string, secure: PeerTlsOptions | null = null, timeoutMs = 5_000): Effect.Effect<{ readonly clusterId: string; readonly nodeId: NodeId }, DiscoveryFailed> =>
  Effect.async<{ readonly clusterId: string; readonly nodeId: NodeId }, DiscoveryFailed>((resume) => {
    const fail = (detail: string) => resume(Effect.fail(new DiscoveryFailed({ address, detail })))
    const parsed = Either.try(() => parseAddress(address))
    if (Either.isLeft(parsed)) {
      fail(String(parsed.left))
      return
    }
    const { host, port } = parsed.right
    const socket = secure === null
      ? net.connect({ host, port })
      : tls.connect({ host, port, cert: secure.cert, key: secure.key, ca: secure.ca, checkServerIdentity: () => undefined })
    const decoder = new FrameDecoder(answerBytesMax)
    let done = false
    const finish = (effect: () => void) => {
      if (done) return
      done = true
      socket.destroy()
      effect()
    }
    socket.on(secure === null ? "connect" : "secureConnect", () => {
      const hello = encodeHello({ version: peerProtocolVersion, clusterId: "", nodeId: 0, peerId: 0, refused: null, address: null })
      const magic = peerMagicWord()
      const frame = encodeFrame(hello)
      const out = new Uint8Array(magic.byteLength + frame.byteLength)
      out.set(magic)
      out.set(frame, magic.byteLength)
      socket.write(out)
    })
    socket.on("data", (chunk: Buffer) => {
      decoder.push(chunk)
      const next = decoder.next()
      if (Either.isLeft(next)) return finish(() => fail(`unreadable answer: ${next.left._tag}`))
      if (next.right === null) return
      const answer = decodeHello(next.right)
      if (Either.isLeft(answer)) return finish(() => fail(answer.left.detail))
      const { clusterId, nodeId } = answer.right
      if (clusterId.length === 0) return finish(() => fail("the member announced no cluster id"))
      finish(() => resume(Effect.succeed({ clusterId, nodeId })))
    })
    socket.on("error", (error) => finish(() => fail(error.message)))
    socket.on("close", () => finish(() => fail("connection closed before an answer")))
    return Effect.sync(() => finish(() => {}))
  }).pipe(
    Effect.timeoutFail({ duration: Duration.millis(timeoutMs), onTimeout: () => new DiscoveryFailed({ address, detail: `no answer within ${timeoutMs} ms` }) })
  )
