// SQLite's write-ahead-log file format (https://www.sqlite.org/fileformat2.html#walformat):
// pure parsing and the WAL checksum, no I/O.
//
// A WAL is a 32-byte header followed by frames; a frame is a 24-byte header and one page.
// Every integer in both headers is a big-endian u32. The checksum is a pair of running 32-bit
// sums over the data read as u32 words, in the byte order the header's magic names: the header's
// checksum covers its first 24 bytes starting from (0, 0); each frame's covers the first 8 bytes
// of its header and then its page, starting from the previous frame's checksum (the header's for
// the first frame). A frame is valid when its salts equal the header's and its checksum matches
// the running one; a transaction is committed when a valid frame with a non-zero "database size"
// (a commit frame) ends it.

import { assert } from "../assert.ts"

export const walHeaderBytes = 32
export const walFrameHeaderBytes = 24
/** Checksums over little-endian words (what little-endian machines write). */
export const walMagicLittleEndian = 0x377f0682
/** Checksums over big-endian words. */
export const walMagicBigEndian = 0x377f0683
/** The only WAL format version SQLite has ever written. */
export const walFormatVersion = 3007000
export const pageSizeBytesMin = 512
export const pageSizeBytesMax = 65536

export interface WalHeader {
  readonly magic: number
  /** True when the checksum reads the data as big-endian words (magic 0x377f0683). */
  readonly checksumBigEndian: boolean
  readonly formatVersion: number
  readonly pageSize: number
  /** Incremented by SQLite each time it restarts the WAL after a complete checkpoint. */
  readonly checkpointSequence: number
  readonly salt1: number
  readonly salt2: number
  readonly checksum1: number
  readonly checksum2: number
}

export interface WalFrameHeader {
  readonly pgno: number
  /** The database size in pages after the transaction, on its commit frame; 0 on other frames. */
  readonly dbSizePages: number
  readonly salt1: number
  readonly salt2: number
  readonly checksum1: number
  readonly checksum2: number
}

/** A running WAL checksum: the two 32-bit sums, as unsigned numbers. */
export interface WalChecksum {
  readonly checksum1: number
  readonly checksum2: number
}

export type WalHeaderParse =
  | { readonly ok: true; readonly header: WalHeader }
  | { readonly ok: false; readonly reason: string }

export function isValidPageSize(pageSize: number): boolean {
  return (
    Number.isInteger(pageSize) &&
    pageSize >= pageSizeBytesMin &&
    pageSize <= pageSizeBytesMax &&
    (pageSize & (pageSize - 1)) === 0
  )
}

export function walFrameBytes(pageSize: number): number {
  return walFrameHeaderBytes + pageSize
}

/** Parses and validates a WAL header (magic, version, page size, header checksum). SQLite ignores
 * a WAL whose header is invalid, so callers treat `ok: false` as "no committed frames". */
export function parseWalHeader(bytes: Uint8Array): WalHeaderParse {
  if (bytes.length < walHeaderBytes) return { ok: false, reason: `only ${bytes.length} bytes` }
  const view = new DataView(bytes.buffer, bytes.byteOffset, walHeaderBytes)
  const magic = view.getUint32(0, false)
  if (magic !== walMagicLittleEndian && magic !== walMagicBigEndian) {
    return { ok: false, reason: `bad magic 0x${magic.toString(16)}` }
  }
  const formatVersion = view.getUint32(4, false)
  if (formatVersion !== walFormatVersion) return { ok: false, reason: `unknown format version ${formatVersion}` }
  const pageSize = view.getUint32(8, false)
  if (!isValidPageSize(pageSize)) return { ok: false, reason: `invalid page size ${pageSize}` }
  const checksumBigEndian = magic === walMagicBigEndian
  const header: WalHeader = {
    magic,
    checksumBigEndian,
    formatVersion,
    pageSize,
    checkpointSequence: view.getUint32(12, false),
    salt1: view.getUint32(16, false),
    salt2: view.getUint32(20, false),
    checksum1: view.getUint32(24, false),
    checksum2: view.getUint32(28, false)
  }
  const expected = walChecksum(bytes.subarray(0, 24), checksumBigEndian, initialWalChecksum)
  if (expected.checksum1 !== header.checksum1 || expected.checksum2 !== header.checksum2) {
    return { ok: false, reason: "header checksum mismatch" }
  }
  return { ok: true, header }
}

/** Reads the 24-byte frame header at `offset` of `bytes` (no validation). */
export function parseWalFrameHeader(bytes: Uint8Array, offset = 0): WalFrameHeader {
  assert(offset >= 0 && offset + walFrameHeaderBytes <= bytes.length, "frame header within bytes")
  const view = new DataView(bytes.buffer, bytes.byteOffset + offset, walFrameHeaderBytes)
  return {
    pgno: view.getUint32(0, false),
    dbSizePages: view.getUint32(4, false),
    salt1: view.getUint32(8, false),
    salt2: view.getUint32(12, false),
    checksum1: view.getUint32(16, false),
    checksum2: view.getUint32(20, false)
  }
}

export const initialWalChecksum: WalChecksum = { checksum1: 0, checksum2: 0 }

const hostLittleEndian = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1

/** SQLite's WAL checksum of `bytes` (a multiple of 8 bytes) continuing from `previous`. Reads
 * whole words through an Int32Array when the data is 4-byte aligned (always, for buffers this
 * module's callers allocate), byte-swapping in registers when the WAL's order is not the host's;
 * unaligned data goes through a DataView. */
export function walChecksum(bytes: Uint8Array, bigEndian: boolean, previous: WalChecksum): WalChecksum {
  assert(bytes.length % 8 === 0, `checksummed length ${bytes.length} is a multiple of 8`)
  if (bytes.byteOffset % 4 === 0) {
    const words = new Int32Array(bytes.buffer, bytes.byteOffset, bytes.length >>> 2)
    return walChecksumWords(words, 0, words.length, bigEndian, previous)
  }
  let sum1 = previous.checksum1 | 0
  let sum2 = previous.checksum2 | 0
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length)
  const littleEndian = !bigEndian
  for (let at = 0; at < bytes.length; at += 8) {
    sum1 = (sum1 + view.getInt32(at, littleEndian) + sum2) | 0
    sum2 = (sum2 + view.getInt32(at + 4, littleEndian) + sum1) | 0
  }
  return { checksum1: sum1 >>> 0, checksum2: sum2 >>> 0 }
}

/** The checksum of `words[fromWord, toWord)` (an even count of host-order words over the WAL's
 * bytes) continuing from `previous`: the loop the capturer runs over its read buffer. */
export function walChecksumWords(
  words: Int32Array,
  fromWord: number,
  toWord: number,
  bigEndian: boolean,
  previous: WalChecksum
): WalChecksum {
  assert((toWord - fromWord) % 2 === 0 && fromWord >= 0 && toWord <= words.length, "an even word range in bounds")
  let sum1 = previous.checksum1 | 0
  let sum2 = previous.checksum2 | 0
  if (bigEndian === hostLittleEndian) {
    for (let i = fromWord; i < toWord; i += 2) {
      sum1 = (sum1 + byteSwap(words[i]!) + sum2) | 0
      sum2 = (sum2 + byteSwap(words[i + 1]!) + sum1) | 0
    }
  } else {
    for (let i = fromWord; i < toWord; i += 2) {
      sum1 = (sum1 + words[i]! + sum2) | 0
      sum2 = (sum2 + words[i + 1]! + sum1) | 0
    }
  }
  return { checksum1: sum1 >>> 0, checksum2: sum2 >>> 0 }
}

/** The checksum of one frame: its header's first 8 bytes (page number, database size), then its
 * page. `frame` is the whole frame (24 bytes of header and the page). */
export function walFrameChecksum(frame: Uint8Array, bigEndian: boolean, previous: WalChecksum): WalChecksum {
  assert(frame.length > walFrameHeaderBytes, "a frame holds a page")
  const afterHeader = walChecksum(frame.subarray(0, 8), bigEndian, previous)
  return walChecksum(frame.subarray(walFrameHeaderBytes), bigEndian, afterHeader)
}

function byteSwap(word: number): number {
  return ((word << 24) | ((word & 0xff00) << 8) | ((word >>> 8) & 0xff00) | (word >>> 24)) | 0
}
