// Byte-building helpers for the gateway codec tests.

import { expect } from "vitest"
import { WireError } from "../../../src/net/protocol/errors.ts"
import type { WireErrorReason } from "../../../src/net/protocol/errors.ts"

/** Bytes from hex; spaces, `|` and newlines are ignored ("01 00 | ff"). */
export function hex(text: string): Uint8Array {
  const digits = text.replace(/[\s|]/g, "")
  if (digits.length % 2 !== 0 || /[^0-9a-fA-F]/.test(digits)) throw new Error(`bad hex: ${text}`)
  const out = new Uint8Array(digits.length / 2)
  for (let i = 0; i < out.length; i++) out[i] = parseInt(digits.slice(i * 2, i * 2 + 2), 16)
  return out
}

/** ASCII text followed by zero bytes up to `totalBytes`. */
export function ascii(text: string, totalBytes: number): Uint8Array {
  const encoded = new TextEncoder().encode(text)
  if (encoded.length > totalBytes) throw new Error("text longer than its slot")
  const out = new Uint8Array(totalBytes)
  out.set(encoded)
  return out
}

export function concat(...parts: ReadonlyArray<Uint8Array>): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0))
  let offset = 0
  for (const part of parts) {
    out.set(part, offset)
    offset += part.length
  }
  return out
}

export function toHex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join(" ")
}

/** Run `action`, expect a WireError with `reason`, return it. */
export function expectWireError(action: () => unknown, reason: WireErrorReason): WireError {
  try {
    action()
  } catch (error) {
    expect(error).toBeInstanceOf(WireError)
    expect((error as WireError).reason).toBe(reason)
    return error as WireError
  }
  throw new Error(`expected WireError(${reason}), nothing was thrown`)
}
