import fs from "node:fs"
import path from "node:path"
import fc from "fast-check"
import { describe, expect, it } from "vitest"
import { AssertionError } from "../../src/assert.ts"
import { PageSetDecodeError } from "../../src/sqlite/errors.ts"
import { PageApplier } from "../../src/sqlite/PageApplier.ts"
import type { PageSet } from "../../src/sqlite/pageSet.ts"
import { decodePageSet, encodePageSet, mergePageSets } from "../../src/sqlite/pageSet.ts"
import { tempDirectory } from "./helpers.ts"

const smallPageSize = 512

function page(pgno: number, fill: number, size = smallPageSize): { pgno: number; data: Uint8Array } {
  return { pgno, data: new Uint8Array(size).fill(fill) }
}

const sample: PageSet = { pageSize: smallPageSize, dbSizePages: 9, pages: [page(1, 1), page(2, 2), page(9, 9)] }

function expectDecodeError(payload: Uint8Array, reason?: RegExp): void {
  let caught: unknown
  try {
    decodePageSet(payload)
  } catch (error) {
    caught = error
  }
  expect(caught).toBeInstanceOf(PageSetDecodeError)
  if (reason !== undefined) expect((caught as PageSetDecodeError).reason).toMatch(reason)
}

describe("page-set encoding", () => {
  it("round-trips the database name, sizes, page numbers and bytes", () => {
    const payload = encodePageSet("main.db — ünïcode", sample)
    expect(payload.length).toBe(20 + Buffer.byteLength("main.db — ünïcode") + 3 * (4 + smallPageSize))
    const decoded = decodePageSet(payload)
    expect(decoded.database).toBe("main.db — ünïcode")
    expect(decoded.pageSet.pageSize).toBe(smallPageSize)
    expect(decoded.pageSet.dbSizePages).toBe(9)
    expect(decoded.pageSet.pages.map((p) => p.pgno)).toEqual([1, 2, 9])
    expect(decoded.pageSet.pages.map((p) => p.data[0])).toEqual([1, 2, 9])
    expect(decoded.pageSet.pages.every((p) => p.data.length === smallPageSize)).toBe(true)
  })

  it("round-trips a page set with no pages (a transaction that only shrank the file)", () => {
    const decoded = decodePageSet(encodePageSet("db", { pageSize: 65536, dbSizePages: 3, pages: [] }))
    expect(decoded.pageSet).toEqual({ pageSize: 65536, dbSizePages: 3, pages: [] })
  })

  it("throws PageSetDecodeError on every truncation and on trailing bytes", () => {
    const payload = encodePageSet("db", sample)
    for (let length = 0; length < payload.length; length++) expectDecodeError(payload.subarray(0, length))
    const longer = new Uint8Array(payload.length + 1)
    longer.set(payload)
    expectDecodeError(longer, /header describes/)
  })

  it("throws PageSetDecodeError on corrupt header fields and page numbers", () => {
    const payload = encodePageSet("db", sample)
    const corrupt = (edit: (view: DataView, bytes: Uint8Array) => void): Uint8Array => {
      const copy = new Uint8Array(payload)
      edit(new DataView(copy.buffer), copy)
      return copy
    }
    expectDecodeError(corrupt((v) => v.setUint8(0, 0x58)), /magic/)
    expectDecodeError(corrupt((v) => v.setUint8(4, 2)), /version/)
    expectDecodeError(corrupt((v) => v.setUint8(5, 1)), /flags/)
    expectDecodeError(corrupt((v) => v.setUint16(6, 0, true)), /name length/)
    expectDecodeError(corrupt((v) => v.setUint16(6, 5000, true)), /name length/)
    expectDecodeError(corrupt((v) => v.setUint32(8, 1000, true)), /page size/)
    expectDecodeError(corrupt((v) => v.setUint32(8, 1024, true)), /header describes/)
    expectDecodeError(corrupt((v) => v.setUint32(12, 0, true)), /database size/)
    expectDecodeError(corrupt((v) => v.setUint32(12, 2, true)), /3 pages in a database of 2/)
    expectDecodeError(corrupt((v) => v.setUint32(12, 5, true)), /page number 9/)
    expectDecodeError(corrupt((v) => v.setUint32(16, 2, true)), /header describes/)
    expectDecodeError(corrupt((v) => v.setUint32(22, 0, true)), /page number 0/)
    expectDecodeError(corrupt((v) => v.setUint32(26, 1, true)), /page number 1 after 1/)
    expectDecodeError(corrupt((_, b) => b.set([0xff, 0xfe], 20)), /UTF-8/)
  })

  it("refuses absurd sizes before allocating anything", () => {
    const header = new Uint8Array(24)
    const view = new DataView(header.buffer)
    view.setUint32(0, 0x53505154, true)
    view.setUint8(4, 1)
    view.setUint16(6, 1, true)
    view.setUint32(8, 65536, true)
    view.setUint32(12, 0xfffffffe, true)
    view.setUint32(16, 0xfffffffe, true) // claims 281 TB of pages in a 24-byte payload
    header[20] = 0x61
    expectDecodeError(header, /header describes/)
  })

  it("rejects invalid page sets on encode as a bug (assertion), not as data", () => {
    expect(() => encodePageSet("db", { ...sample, pages: [page(2, 2), page(1, 1)] })).toThrow(AssertionError)
    expect(() => encodePageSet("db", { ...sample, pages: [page(10, 1)] })).toThrow(AssertionError)
    expect(() => encodePageSet("db", { ...sample, pages: [page(1, 1, 100)] })).toThrow(AssertionError)
    expect(() => encodePageSet("", sample)).toThrow(AssertionError)
  })
})

describe("mergePageSets", () => {
  it("keeps the last image of each page and the last size", () => {
    const merged = mergePageSets([
      { pageSize: smallPageSize, dbSizePages: 3, pages: [page(1, 1), page(3, 3)] },
      { pageSize: smallPageSize, dbSizePages: 4, pages: [page(1, 11), page(4, 4)] }
    ])
    expect(merged.dbSizePages).toBe(4)
    expect(merged.pages.map((p) => [p.pgno, p.data[0]])).toEqual([
      [1, 11],
      [3, 3],
      [4, 4]
    ])
  })

  it("turns a page truncated away and not rewritten into a zero page", () => {
    const merged = mergePageSets([
      { pageSize: smallPageSize, dbSizePages: 5, pages: [page(4, 4), page(5, 5)] },
      { pageSize: smallPageSize, dbSizePages: 2, pages: [] },
      { pageSize: smallPageSize, dbSizePages: 5, pages: [page(3, 33)] }
    ])
    expect(merged.pages.map((p) => [p.pgno, p.data[0]])).toEqual([
      [3, 33],
      [4, 0],
      [5, 0]
    ])
  })

  it("gives the same file as applying the page sets one by one (property)", () => {
    const dir = tempDirectory()
    let run = 0
    const pageSetArbitrary = fc
      .record({
        dbSizePages: fc.integer({ min: 1, max: 8 }),
        writes: fc.array(fc.record({ pgno: fc.integer({ min: 1, max: 8 }), fill: fc.integer({ min: 1, max: 255 }) }), { maxLength: 6 })
      })
      .map(({ dbSizePages, writes }): PageSet => {
        const last = new Map<number, number>()
        for (const write of writes) if (write.pgno <= dbSizePages) last.set(write.pgno, write.fill)
        const pages = [...last].sort((a, b) => a[0] - b[0]).map(([pgno, fill]) => page(pgno, fill))
        return { pageSize: smallPageSize, dbSizePages, pages }
      })
    try {
      fc.assert(
        fc.property(fc.integer({ min: 0, max: 8 }), fc.array(pageSetArbitrary, { minLength: 1, maxLength: 6 }), (initialPages, pageSets) => {
          run++
          const initial = new Uint8Array(initialPages * smallPageSize).fill(0xee)
          const oneByOne = path.join(dir.path, `one-${run}.db`)
          const merged = path.join(dir.path, `merged-${run}.db`)
          fs.writeFileSync(oneByOne, initial)
          fs.writeFileSync(merged, initial)
          const a = PageApplier.open({ databasePath: oneByOne, pageSize: smallPageSize })
          for (const pageSet of pageSets) a.apply(pageSet)
          a.close()
          const b = PageApplier.open({ databasePath: merged, pageSize: smallPageSize })
          b.apply(mergePageSets(pageSets))
          b.close()
          expect(Buffer.compare(fs.readFileSync(oneByOne), fs.readFileSync(merged))).toBe(0)
        }),
        { numRuns: 300, seed: 20240601 }
      )
    } finally {
      dir.remove()
    }
  })
})
