// The committed image of a database this node leads, streamed without stopping its writer:
// the main file with the WAL's committed frames (up to `walEnd`, the end of the last transaction
// Raft committed) laid over it, page by page. LeaderDatabase.holdForSnapshot keeps checkpoints
// off meanwhile, so the main file does not change and the WAL is not restarted: the writer goes
// on appending frames after `walEnd`, which the copy never reads. A busy checkpoint earlier may
// have copied committed frames into the main file; the overlay writes the last version of each
// such page anyway, so the image is the committed state either way.
//
// The WAL prefix is checked as SQLite writes it (salts and the running checksum chain, which must
// end exactly at `walEnd`'s checksum): a WAL cut or rewritten under the copy fails it, and the
// caller also checks the hold is still valid (no close, which checkpoints) after the last chunk.
import fs from "node:fs"
import { assert } from "../assert.ts"
import type { WalPosition } from "./WalCapture.ts"
import type { WalChecksum } from "./walFormat.ts"
import { parseWalHeader, walChecksumWords, walFrameBytes, walHeaderBytes } from "./walFormat.ts"

/** Where each page's last committed frame is, and the database size the last commit set. */
export interface CommittedWal {
  /** pgno → byte offset of its last frame before `walEnd`. */
  readonly lastFrameOf: ReadonlyMap<number, number>
  readonly dbSizePages: number
}

/** Indexes the WAL's frames up to `walEnd`, reading `framesPerRead` frames at a time; a string
 * says why the prefix is not the one `walEnd` names. */
export function indexCommittedWal(walFd: number, pageSize: number, walEnd: WalPosition, framesPerRead = 256): CommittedWal | string {
  const header = Buffer.allocUnsafe(walHeaderBytes)
  if (fs.readSync(walFd, header, 0, walHeaderBytes, 0) !== walHeaderBytes) return "the WAL has no header"
  const parsed = parseWalHeader(header)
  if (!parsed.ok) return `the WAL header is unreadable: ${parsed.reason}`
  const h = parsed.header
  if (h.salt1 !== walEnd.salt1 || h.salt2 !== walEnd.salt2 || h.checkpointSequence !== walEnd.checkpointSequence || h.pageSize !== pageSize) {
    return "the WAL was restarted"
  }
  const frameBytes = walFrameBytes(pageSize)
  const frameWords = frameBytes >>> 2
  assert((walEnd.offsetBytes - walHeaderBytes) % frameBytes === 0, `WAL end ${walEnd.offsetBytes} on a frame boundary`)
  const frames = (walEnd.offsetBytes - walHeaderBytes) / frameBytes
  const buffer = Buffer.allocUnsafeSlow(framesPerRead * frameBytes)
  const words = new Int32Array(buffer.buffer, buffer.byteOffset, buffer.length >>> 2)
  const lastFrameOf = new Map<number, number>()
  let running: WalChecksum = { checksum1: h.checksum1, checksum2: h.checksum2 }
  let dbSizePages = 0
  for (let first = 0; first < frames; first += framesPerRead) {
    const count = Math.min(framesPerRead, frames - first)
    const offset = walHeaderBytes + first * frameBytes
    if (fs.readSync(walFd, buffer, 0, count * frameBytes, offset) !== count * frameBytes) return "the WAL is shorter than its committed end"
    for (let i = 0; i < count; i++) {
      const at = i * frameBytes
      if (buffer.readUInt32BE(at + 8) !== h.salt1 || buffer.readUInt32BE(at + 12) !== h.salt2) return `frame ${first + i} has other salts`
      const afterHeader = walChecksumWords(words, i * frameWords, i * frameWords + 2, h.checksumBigEndian, running)
      running = walChecksumWords(words, i * frameWords + 6, (i + 1) * frameWords, h.checksumBigEndian, afterHeader)
      if (running.checksum1 !== buffer.readUInt32BE(at + 16) || running.checksum2 !== buffer.readUInt32BE(at + 20)) return `frame ${first + i} breaks the checksum chain`
      lastFrameOf.set(buffer.readUInt32BE(at), offset + at)
      const size = buffer.readUInt32BE(at + 4)
      if (size !== 0) dbSizePages = size
    }
  }
  if (running.checksum1 !== walEnd.checksum1 || running.checksum2 !== walEnd.checksum2) return "the WAL's checksum chain does not end where the last commit did"
  if (frames > 0 && dbSizePages === 0) return "no commit frame before the committed end"
  return { lastFrameOf, dbSizePages }
}

/** Fills `out` with pages `firstPgno …` of the committed image: the main file's bytes, then the
 * WAL's last committed version of each page that has one. A string says why it cannot (a page
 * past the main file's end that the WAL does not have: the files changed under the copy). */
export function readCommittedPages(mainFd: number, walFd: number | null, wal: CommittedWal | null, pageSize: number, firstPgno: number, out: Buffer): string | null {
  assert(out.length % pageSize === 0, "whole pages")
  const pages = out.length / pageSize
  const read = fs.readSync(mainFd, out, 0, out.length, (firstPgno - 1) * pageSize)
  if (read < out.length) out.fill(0, read)
  for (let i = 0; i < pages; i++) {
    const pgno = firstPgno + i
    const frame = wal?.lastFrameOf.get(pgno)
    if (frame === undefined) {
      if ((i + 1) * pageSize > read) return `page ${pgno} is neither in the main file nor in the committed WAL`
      continue
    }
    if (fs.readSync(walFd!, out, i * pageSize, pageSize, frame + 24) !== pageSize) return `page ${pgno} is cut short in the WAL`
  }
  return null
}
