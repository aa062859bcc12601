// The expected failures of peer links: one tag per thing a caller does differently. All of
// them end the connection they happened on; the link reconnects, an inbound one is just closed.
import { Data } from "effect"
import type { NodeId } from "../../raft/types.ts"

/** A frame announced more bytes than the limit; nothing of that size was allocated. */
export class FrameTooLarge extends Data.TaggedError("FrameTooLarge")<{
  readonly frameBytes: number
  readonly frameBytesMax: number
}> {}

/** Bytes that do not decode as what the protocol expects at that point. */
export class MalformedFrame extends Data.TaggedError("MalformedFrame")<{
  readonly detail: string
  readonly cause?: unknown
}> {}

export type FrameError = FrameTooLarge | MalformedFrame

/** One side of the handshake refused the other (wrong cluster, version or node). `reason`
 * is what the log line says. */
export class HandshakeRefused extends Data.TaggedError("HandshakeRefused")<{
  readonly reason: string
  /** Who refused: we did, or the remote side told us so. */
  readonly by: "local" | "remote"
  /** The remote only asked who we are (a joining node's discovery: no cluster id, node 0); the
   * refusal is its answer, not a problem worth a warning. */
  readonly discovery?: boolean
}> {}

/** The connection ended (EOF, reset, destroyed) or failed at the socket level. */
export class ConnectionClosed extends Data.TaggedError("ConnectionClosed")<{
  readonly detail: string
  readonly cause?: unknown
}> {}

/** A wait on the connection (connect, handshake, drain) took longer than its limit. */
export class ConnectionTimeout extends Data.TaggedError("ConnectionTimeout")<{
  readonly phase: "connect" | "handshake" | "first-word" | "drain"
  readonly timeoutMs: number
}> {}

/** A connection attempt to a peer failed; the link retries with backoff. */
export class PeerUnreachable extends Data.TaggedError("PeerUnreachable")<{
  readonly node: NodeId
  readonly address: string
  readonly cause: unknown
}> {}

export type ConnectionError = FrameError | HandshakeRefused | ConnectionClosed | ConnectionTimeout

/** The transport could not listen on its address (in use, not ours, malformed). */
export class ListenFailed extends Data.TaggedError("ListenFailed")<{
  readonly address: string
  readonly cause: unknown
}> {
  override get message() {
    return listenFailureText(this.address, this.cause)
  }
}

/** Why listening on `address` failed, in words an operator acts on. */
export function listenFailureText(address: string, cause: unknown): string {
  const code = typeof cause === "object" && cause !== null && "code" in cause ? String(cause.code) : ""
  if (code === "EADDRINUSE") return `cannot listen on ${address}: the address is in use (another tqlite or program listens there)`
  if (code === "EADDRNOTAVAIL") return `cannot listen on ${address}: no network interface of this machine has that address`
  if (code === "EACCES") return `cannot listen on ${address}: permission denied (ports below 1024 need privileges)`
  return `cannot listen on ${address}: ${cause instanceof Error ? cause.message : String(cause)}`
}
