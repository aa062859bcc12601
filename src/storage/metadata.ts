// The data directory's metadata file: which format wrote the directory and which cluster it
// belongs to. Written once, atomically, when the directory is initialised.
//
//   offset size field
//        0    8 magic        "TQLMETA\n"
//        8    4 version      format version of the whole directory (little-endian)
//       12    4 payloadBytes
//       16    … payload      msgpackr { clusterId }
//   16 + n    4 crc32c       of bytes [0, 16 + n)
//
// The version is read before the checksum so a future layout is reported as a version, not as
// damage.
import { crc32c } from "@node-rs/crc32"
import { Packr } from "msgpackr"

export const metadataMagic = new TextEncoder().encode("TQLMETA\n")
export const formatVersion = 1
export const supportedFormatVersions: ReadonlyArray<number> = [formatVersion]

const packr = new Packr({ useRecords: false, mapsAsObjects: true })

export interface Metadata {
  readonly version: number
  readonly clusterId: string
}

export function encodeMetadata(clusterId: string): Uint8Array {
  const payload = packr.pack({ clusterId }) as Uint8Array
  const buffer = new Uint8Array(16 + payload.byteLength + 4)
  const view = new DataView(buffer.buffer)
  buffer.set(metadataMagic, 0)
  view.setUint32(8, formatVersion, true)
  view.setUint32(12, payload.byteLength, true)
  buffer.set(payload, 16)
  view.setUint32(16 + payload.byteLength, crc32c(buffer.subarray(0, 16 + payload.byteLength)), true)
  return buffer
}

export type MetadataDecode =
  | { readonly _tag: "ok"; readonly metadata: Metadata }
  | { readonly _tag: "unknownVersion"; readonly version: number }
  | { readonly _tag: "corrupt"; readonly offset: number; readonly reason: string }

export function decodeMetadata(buffer: Uint8Array): MetadataDecode {
  if (buffer.byteLength < 20) return { _tag: "corrupt", offset: 0, reason: `metadata file is ${buffer.byteLength} bytes` }
  for (let i = 0; i < metadataMagic.length; i++) {
    if (buffer[i] !== metadataMagic[i]) return { _tag: "corrupt", offset: 0, reason: "not a tqlite metadata file (bad magic)" }
  }
  const view = new DataView(buffer.buffer, buffer.byteOffset, buffer.byteLength)
  const version = view.getUint32(8, true)
  if (!supportedFormatVersions.includes(version)) return { _tag: "unknownVersion", version }
  const payloadBytes = view.getUint32(12, true)
  if (16 + payloadBytes + 4 !== buffer.byteLength) {
    return { _tag: "corrupt", offset: 12, reason: `payload length ${payloadBytes} does not match the file size` }
  }
  if (view.getUint32(16 + payloadBytes, true) !== crc32c(buffer.subarray(0, 16 + payloadBytes))) {
    return { _tag: "corrupt", offset: 16 + payloadBytes, reason: "checksum mismatch" }
  }
  let value: unknown
  try {
    value = packr.unpack(buffer.subarray(16, 16 + payloadBytes))
  } catch {
    value = null
  }
  const clusterId = typeof value === "object" && value !== null ? (value as Record<string, unknown>)["clusterId"] : undefined
  if (typeof clusterId !== "string") return { _tag: "corrupt", offset: 16, reason: "payload has no cluster id" }
  return { _tag: "ok", metadata: { version, clusterId } }
}
