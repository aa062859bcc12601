// Every bound of the gateway, named and validated together.
import { assert } from "../../assert.ts"
import { headerBytes, rowsBatchBytesTarget, welcomeHeartbeatTimeoutMsDefault, wordBytes } from "../protocol/codes.ts"
import { messageBytesMaxDefault, messageBytesMaxLimit } from "../protocol/framing.ts"

export interface GatewayLimits {
  /** Largest request (header + body) accepted; a header announcing more closes the connection
   * (the stream cannot be resynchronised). dqlite itself has no cap below 4 GiB. */
  readonly messageBytesMax: number
  /** Prepared statements one connection may hold; PREPARE beyond it answers a FAILURE. */
  readonly statementsMax: number
  /** A ROWS batch ends once the message (header included) has reached this many bytes, checked
   * before each row, as C dqlite does with its 4096-byte page: so a batch may exceed it by one
   * row, and one huge row goes whole. */
  readonly rowsBatchBytesTarget: number
  /** A write waiting this long for a client that reads nothing ends the connection. */
  readonly writeTimeoutMs: number
  /** The heartbeat timeout announced in WELCOME (go ignores it; dqlite-client may use it). */
  readonly heartbeatTimeoutMs: number
  /** A DUMP's image is read and written this many bytes at a time (rounded down to whole
   * pages, at least one): what the dump holds in memory beside the socket's buffer. */
  readonly dumpChunkBytes: number
  /** A DUMP still being sent after this long closes the connection: while it is read, the
   * leader's checkpoints wait and its WAL grows. */
  readonly dumpTimeoutMs: number
}

export const gatewayLimitsDefault: GatewayLimits = {
  messageBytesMax: messageBytesMaxDefault,
  statementsMax: 1024,
  rowsBatchBytesTarget,
  writeTimeoutMs: 60_000,
  heartbeatTimeoutMs: welcomeHeartbeatTimeoutMsDefault,
  // 256 KiB: a multiple of every SQLite page size; one chunk's read of the files holds the event
  // loop well under a millisecond on a warm cache.
  dumpChunkBytes: 256 * 1024,
  // 10 minutes: a 10 GiB database at ~20 MB/s; the WAL grows meanwhile by what is committed.
  dumpTimeoutMs: 600_000
}

export function gatewayLimits(overrides: Partial<GatewayLimits> = {}): GatewayLimits {
  const limits = { ...gatewayLimitsDefault, ...overrides }
  assert(Number.isSafeInteger(limits.messageBytesMax), "messageBytesMax is an integer")
  assert(limits.messageBytesMax >= headerBytes + wordBytes, "messageBytesMax admits a one-word body")
  assert(limits.messageBytesMax <= messageBytesMaxLimit, "messageBytesMax fits what a header can announce")
  assert(Number.isSafeInteger(limits.statementsMax) && limits.statementsMax >= 1, "statementsMax >= 1")
  assert(limits.statementsMax <= 0x100000000, "statement ids fit a u32")
  assert(Number.isSafeInteger(limits.rowsBatchBytesTarget) && limits.rowsBatchBytesTarget >= 64, "rowsBatchBytesTarget >= 64")
  assert(limits.writeTimeoutMs > 0, "writeTimeoutMs > 0")
  assert(Number.isSafeInteger(limits.heartbeatTimeoutMs) && limits.heartbeatTimeoutMs >= 0, "heartbeatTimeoutMs >= 0")
  assert(Number.isSafeInteger(limits.dumpChunkBytes) && limits.dumpChunkBytes >= 65_536 && limits.dumpChunkBytes % 65_536 === 0, "dumpChunkBytes is a multiple of 64 KiB (whole pages of any page size)")
  assert(limits.dumpTimeoutMs > 0, "dumpTimeoutMs > 0")
  return limits
}
