import fs from "node:fs"
import path from "node:path"
import { describe, expect, it } from "vitest"
import { openDatabase } from "../../src/sqlite/openDatabase.ts"
import type { WalChecksum } from "../../src/sqlite/walFormat.ts"
import {
  initialWalChecksum,
  parseWalFrameHeader,
  parseWalHeader,
  walChecksum,
  walFrameBytes,
  walFrameChecksum,
  walHeaderBytes,
  walMagicBigEndian,
  walMagicLittleEndian
} from "../../src/sqlite/walFormat.ts"
import { pageSize, tempDirectory } from "./helpers.ts"

/** The checksum exactly as the file-format document states it, one byte at a time: the
 * reference our word-at-a-time version must agree with. */
function referenceChecksum(bytes: Uint8Array, bigEndian: boolean, previous: WalChecksum): WalChecksum {
  let s0 = previous.checksum1
  let s1 = previous.checksum2
  const word = (at: number): number =>
    bigEndian
      ? ((bytes[at]! << 24) | (bytes[at + 1]! << 16) | (bytes[at + 2]! << 8) | bytes[at + 3]!) >>> 0
      : ((bytes[at + 3]! << 24) | (bytes[at + 2]! << 16) | (bytes[at + 1]! << 8) | bytes[at]!) >>> 0
  for (let at = 0; at < bytes.length; at += 8) {
    s0 = (s0 + word(at) + s1) % 2 ** 32
    s1 = (s1 + word(at + 4) + s0) % 2 ** 32
  }
  return { checksum1: s0, checksum2: s1 }
}

/** Validates a WAL image frame by frame; returns the index of the first frame whose salts or
 * checksum fail (or the frame count), and how many commit frames came before it. */
function validateFrames(wal: Uint8Array): { firstInvalid: number; frameCount: number; commits: number } {
  const parsed = parseWalHeader(wal)
  if (!parsed.ok) throw new Error(parsed.reason)
  const header = parsed.header
  const frameBytes = walFrameBytes(header.pageSize)
  const frameCount = Math.floor((wal.length - walHeaderBytes) / frameBytes)
  let running: WalChecksum = header
  let commits = 0
  for (let i = 0; i < frameCount; i++) {
    const frame = wal.subarray(walHeaderBytes + i * frameBytes, walHeaderBytes + (i + 1) * frameBytes)
    const frameHeader = parseWalFrameHeader(frame)
    const computed = walFrameChecksum(frame, header.checksumBigEndian, running)
    if (
      frameHeader.salt1 !== header.salt1 ||
      frameHeader.salt2 !== header.salt2 ||
      computed.checksum1 !== frameHeader.checksum1 ||
      computed.checksum2 !== frameHeader.checksum2
    ) {
      return { firstInvalid: i, frameCount, commits }
    }
    running = computed
    if (frameHeader.dbSizePages !== 0) commits++
  }
  return { firstInvalid: frameCount, frameCount, commits }
}

function writeSampleWal(databasePath: string, transactions: number): Buffer {
  const db = openDatabase(databasePath, { pageSize })
  db.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, payload BLOB)")
  const insert = db.prepare("INSERT INTO t(payload) VALUES (randomblob(?))")
  for (let i = 1; i < transactions; i++) insert.run(100 + ((i * 997) % 3000))
  const wal = fs.readFileSync(`${databasePath}-wal`)
  db.close()
  return wal
}

describe("WAL checksum", () => {
  it("matches the documented algorithm byte for byte, in both orders, aligned or not", () => {
    const data = new Uint8Array(8 * 600 + 4)
    let seed = 12345
    for (let i = 0; i < data.length; i++) {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0
      data[i] = seed >>> 24
    }
    const previous = { checksum1: 0xdeadbeef, checksum2: 0x01234567 }
    for (const bigEndian of [false, true]) {
      for (const offset of [0, 4, 1, 3]) {
        const slice = data.subarray(offset, offset + 8 * 600)
        expect(walChecksum(slice, bigEndian, previous)).toEqual(referenceChecksum(slice, bigEndian, previous))
      }
    }
  })

  it("reads words in the order the magic names (known answers)", () => {
    const bytes = new Uint8Array([0, 0, 0, 1, 0, 0, 0, 2])
    expect(walChecksum(bytes, true, initialWalChecksum)).toEqual({ checksum1: 1, checksum2: 3 })
    expect(walChecksum(bytes, false, initialWalChecksum)).toEqual({ checksum1: 0x01000000, checksum2: 0x03000000 })
  })

  it("validates every frame of a WAL written by SQLite, and a flipped byte breaks the chain there", () => {
    const dir = tempDirectory()
    try {
      const wal = writeSampleWal(path.join(dir.path, "a.db"), 40)
      const parsed = parseWalHeader(wal)
      expect(parsed.ok).toBe(true)
      if (!parsed.ok) return
      expect(parsed.header.magic).toBe(walMagicLittleEndian) // x86-64 and arm64 are little-endian
      expect(parsed.header.pageSize).toBe(pageSize)
      const intact = validateFrames(wal)
      expect(intact.frameCount).toBeGreaterThan(40)
      expect(intact.firstInvalid).toBe(intact.frameCount)
      expect(intact.commits).toBe(40)

      for (const frameIndex of [0, 7, intact.frameCount - 1]) {
        for (const byteInFrame of [2, 5, 24, 24 + 1000, 24 + pageSize - 1]) {
          const damaged = Buffer.from(wal)
          damaged[walHeaderBytes + frameIndex * walFrameBytes(pageSize) + byteInFrame]! ^= 0x10
          expect(validateFrames(damaged).firstInvalid).toBe(frameIndex)
        }
      }
    } finally {
      dir.remove()
    }
  })

  it("rejects a header with a flipped byte, a bad magic or a bad page size", () => {
    const dir = tempDirectory()
    try {
      const wal = writeSampleWal(path.join(dir.path, "a.db"), 2)
      for (const at of [0, 7, 11, 15, 19, 23, 27, 31]) {
        const damaged = Buffer.from(wal.subarray(0, walHeaderBytes))
        damaged[at]! ^= 0x01
        expect(parseWalHeader(damaged).ok).toBe(false)
      }
      expect(parseWalHeader(wal.subarray(0, 31)).ok).toBe(false)
    } finally {
      dir.remove()
    }
  })

  it("accepts a big-endian WAL header whose checksum is over big-endian words", () => {
    const header = Buffer.alloc(walHeaderBytes)
    header.writeUInt32BE(walMagicBigEndian, 0)
    header.writeUInt32BE(3007000, 4)
    header.writeUInt32BE(1024, 8)
    header.writeUInt32BE(7, 12)
    header.writeUInt32BE(0x11223344, 16)
    header.writeUInt32BE(0x55667788, 20)
    const checksum = referenceChecksum(header.subarray(0, 24), true, initialWalChecksum)
    header.writeUInt32BE(checksum.checksum1, 24)
    header.writeUInt32BE(checksum.checksum2, 28)
    const parsed = parseWalHeader(header)
    expect(parsed).toMatchObject({ ok: true, header: { checksumBigEndian: true, pageSize: 1024, checkpointSequence: 7 } })
    // The same bytes summed as little-endian words do not validate.
    header.writeUInt32BE(walMagicLittleEndian, 0)
    expect(parseWalHeader(header).ok).toBe(false)
  })
})
