// A page set is what one Raft entry carries for one database: the pages one or more committed
// transactions wrote, as full page images, and the database size after them. Applying it means
// "write every page at (pgno − 1) × pageSize, then truncate the file to dbSizePages pages".
//
// Invariants (checked by `checkPageSet`, kept by every producer here):
// - pages are sorted by pgno, strictly ascending: one image per page, the last one written;
// - 1 ≤ pgno ≤ dbSizePages (a frame for a page beyond the final size is dropped: the truncation
//   would remove it anyway);
// - every image is exactly pageSize bytes.
// Order between different pages never matters (each write is a full image of its own page), so
// sorting loses nothing and makes the follower's writes sequential.

import { assert } from "../assert.ts"
import { PageSetDecodeError } from "./errors.ts"
import { isValidPageSize } from "./walFormat.ts"

export interface Page {
  /** 1-based page number. */
  readonly pgno: number
  readonly data: Uint8Array
}

export interface PageSet {
  readonly pageSize: number
  /** The database size in pages after these pages are applied (from the commit frame). */
  readonly dbSizePages: number
  /** Sorted by pgno, one image per page. */
  readonly pages: ReadonlyArray<Page>
}

/** SQLite's hard limit on a database's page count. */
export const dbSizePagesMax = 0xfffffffe

/** Asserts the invariants above: a violation is a bug in the producer, not an input error. */
export function checkPageSet(pageSet: PageSet): void {
  assert(isValidPageSize(pageSet.pageSize), `valid page size (${pageSet.pageSize})`)
  assert(
    Number.isInteger(pageSet.dbSizePages) && pageSet.dbSizePages >= 1 && pageSet.dbSizePages <= dbSizePagesMax,
    `database size ${pageSet.dbSizePages} pages in range`
  )
  let previous = 0
  for (const page of pageSet.pages) {
    assert(Number.isInteger(page.pgno) && page.pgno > previous, `pgno ${page.pgno} ascending after ${previous}`)
    assert(page.pgno <= pageSet.dbSizePages, `pgno ${page.pgno} within ${pageSet.dbSizePages} pages`)
    assert(page.data.length === pageSet.pageSize, `page ${page.pgno} is ${page.data.length} bytes`)
    previous = page.pgno
  }
}

/** Merges page sets (in commit order) into one whose application gives exactly the same file
 * as applying them one by one: the last image of each page; pages a set truncated away are
 * dropped; and a page that an intermediate truncation removed and no later set rewrote, but
 * that is inside the final size, becomes an explicit zero page (what truncate-then-extend gives).
 * Cheaper to ship and apply whenever transactions of a batch touch the same pages (page 1, the
 * table's root and its last leaf, usually). */
export function mergePageSets(pageSets: ReadonlyArray<PageSet>): PageSet {
  const first = pageSets[0]
  assert(first !== undefined, "merging at least one page set")
  if (pageSets.length === 1) return first
  const pageSize = first.pageSize
  const images = new Map<number, Uint8Array>()
  let dbSizePagesLowest = Number.POSITIVE_INFINITY
  let dbSizePages = 0
  for (const pageSet of pageSets) {
    assert(pageSet.pageSize === pageSize, `page sets share one page size (${pageSet.pageSize} vs ${pageSize})`)
    for (const page of pageSet.pages) images.set(page.pgno, page.data)
    dbSizePages = pageSet.dbSizePages
    dbSizePagesLowest = Math.min(dbSizePagesLowest, dbSizePages)
    for (const pgno of images.keys()) if (pgno > dbSizePages) images.delete(pgno)
  }
  if (dbSizePagesLowest < dbSizePages) {
    const zeroPage = new Uint8Array(pageSize)
    for (let pgno = dbSizePagesLowest + 1; pgno <= dbSizePages; pgno++) {
      if (!images.has(pgno)) images.set(pgno, zeroPage)
    }
  }
  const pages = [...images].sort((a, b) => a[0] - b[0]).map(([pgno, data]) => ({ pgno, data }))
  return { pageSize, dbSizePages, pages }
}

// ---- Encoding for a Raft entry ------------------------------------------------------------
//
//   offset  size            field (little-endian)
//   0       4               magic "TQPS"
//   4       1               format version (1)
//   5       1               flags (0)
//   6       2               database name length in bytes (UTF-8), 1..databaseNameBytesMax
//   8       4               page size
//   12      4               database size in pages after this set
//   16      4               page count n (≤ database size)
//   20      name length     database name
//   …       4 × n           page numbers, strictly ascending, each in 1..database size
//   …       pageSize × n    page images, in the same order
// The payload's length must be exactly the sum: a decoder learns every size from the header and
// checks it against the bytes it holds before it trusts any of it. No checksum: the Raft log
// record around it has one.

const magic = 0x53505154 // "TQPS" read as a little-endian u32
const formatVersion = 1
const headerBytes = 20
export const databaseNameBytesMax = 1024

const utf8Encoder = new TextEncoder()
const utf8Decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true })

export function encodedPageSetBytes(databaseNameBytes: number, pageSet: PageSet): number {
  return headerBytes + databaseNameBytes + pageSet.pages.length * (4 + pageSet.pageSize)
}

export function encodePageSet(database: string, pageSet: PageSet): Uint8Array {
  return encodePageSetAfter(0, database, pageSet)
}

/** Like `encodePageSet`, with `prefixBytes` zero bytes reserved before the encoding (for an
 * envelope header the caller fills in), so a large page set is copied only once. The page set's
 * encoding is `result.subarray(prefixBytes)`. */
export function encodePageSetAfter(prefixBytes: number, database: string, pageSet: PageSet): Uint8Array {
  return runSteps(encodePageSetAfterSteps(prefixBytes, database, pageSet, Number.POSITIVE_INFINITY))
}

/** Runs a generator of steps to its end, synchronously. */
export function runSteps<A>(steps: Generator<void, A>): A {
  for (;;) {
    const next = steps.next()
    if (next.done === true) return next.value
  }
}

/** `encodePageSetAfter` as steps: pauses after each `stepBytes` of page images copied, so a
 * caller can free the event loop in between (a large entry on the leader). The buffer is not
 * zeroed first (every byte is written), so its memory is touched a step at a time too. */
export function* encodePageSetAfterSteps(prefixBytes: number, database: string, pageSet: PageSet, stepBytes: number): Generator<void, Uint8Array> {
  assert(stepBytes > 0, "a step copies something")
  assert(Number.isSafeInteger(prefixBytes) && prefixBytes >= 0, `prefix of ${prefixBytes} bytes`)
  checkPageSet(pageSet)
  const name = utf8Encoder.encode(database)
  assert(name.length >= 1 && name.length <= databaseNameBytesMax, `database name of ${name.length} bytes`)
  const count = pageSet.pages.length
  const wholeBytes = prefixBytes + encodedPageSetBytes(name.length, pageSet)
  const whole = new Uint8Array(Buffer.allocUnsafeSlow(wholeBytes).buffer, 0, wholeBytes)
  whole.fill(0, 0, prefixBytes)
  const payload = whole.subarray(prefixBytes)
  const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength)
  view.setUint32(0, magic, true)
  view.setUint8(4, formatVersion)
  view.setUint8(5, 0)
  view.setUint16(6, name.length, true)
  view.setUint32(8, pageSet.pageSize, true)
  view.setUint32(12, pageSet.dbSizePages, true)
  view.setUint32(16, count, true)
  payload.set(name, headerBytes)
  let pgnoAt = headerBytes + name.length
  let dataAt = pgnoAt + 4 * count
  let sinceStep = 0
  for (const page of pageSet.pages) {
    view.setUint32(pgnoAt, page.pgno, true)
    payload.set(page.data, dataAt)
    pgnoAt += 4
    dataAt += pageSet.pageSize
    sinceStep += pageSet.pageSize
    if (sinceStep >= stepBytes) {
      sinceStep = 0
      yield
    }
  }
  assert(dataAt === payload.length, "encoding filled the payload exactly")
  return whole
}

export interface DecodedPageSet {
  readonly database: string
  /** Page images are views into the payload (no copy): keep the payload alive and unchanged. */
  readonly pageSet: PageSet
}

export function decodePageSet(payload: Uint8Array): DecodedPageSet {
  const fail = (reason: string, offset: number): never => {
    throw new PageSetDecodeError({ reason, offset })
  }
  if (payload.length < headerBytes) fail(`${payload.length} bytes is shorter than the ${headerBytes}-byte header`, 0)
  const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength)
  if (view.getUint32(0, true) !== magic) fail("bad magic", 0)
  if (view.getUint8(4) !== formatVersion) fail(`unknown format version ${view.getUint8(4)}`, 4)
  if (view.getUint8(5) !== 0) fail(`unknown flags ${view.getUint8(5)}`, 5)
  const nameBytes = view.getUint16(6, true)
  if (nameBytes < 1 || nameBytes > databaseNameBytesMax) fail(`database name length ${nameBytes}`, 6)
  const pageSize = view.getUint32(8, true)
  if (!isValidPageSize(pageSize)) fail(`invalid page size ${pageSize}`, 8)
  const dbSizePages = view.getUint32(12, true)
  if (dbSizePages < 1 || dbSizePages > dbSizePagesMax) fail(`invalid database size ${dbSizePages} pages`, 12)
  const count = view.getUint32(16, true)
  if (count > dbSizePages) fail(`${count} pages in a database of ${dbSizePages}`, 16)
  // Every size is known and bounded by u32s, so this sum is exact; compare before trusting it.
  const expectedBytes = headerBytes + nameBytes + count * (4 + pageSize)
  if (payload.length !== expectedBytes) {
    fail(`payload is ${payload.length} bytes, its header describes ${expectedBytes}`, payload.length < expectedBytes ? payload.length : expectedBytes)
  }
  let database = ""
  try {
    database = utf8Decoder.decode(payload.subarray(headerBytes, headerBytes + nameBytes))
  } catch (cause) {
    fail(`database name is not UTF-8 (${String(cause)})`, headerBytes)
  }
  const pgnosAt = headerBytes + nameBytes
  let dataAt = pgnosAt + 4 * count
  const pages: Array<Page> = new Array(count)
  let previous = 0
  for (let i = 0; i < count; i++) {
    const pgno = view.getUint32(pgnosAt + 4 * i, true)
    if (pgno <= previous || pgno > dbSizePages) {
      fail(`page number ${pgno} after ${previous} in a database of ${dbSizePages} pages`, pgnosAt + 4 * i)
    }
    pages[i] = { pgno, data: payload.subarray(dataAt, dataAt + pageSize) }
    previous = pgno
    dataAt += pageSize
  }
  return { database, pageSet: { pageSize, dbSizePages, pages } }
}
