// Node ids as people type them. tqlite prints ids in decimal; the `dqlite` shell's `.cluster`
// prints them in hex without a prefix. Both are accepted, hex written with 0x: a bare string of
// digits is always decimal, so a bare hex id would be ambiguous and is refused with the fix.
const uint64Max = 2n ** 64n - 1n

/** The id `text` names (decimal, or hex with 0x), or why it names none. */
export function parseNodeIdText(text: string): bigint | string {
  const trimmed = text.trim()
  if (/^\d{1,20}$/.test(trimmed)) return inRange(BigInt(trimmed), text)
  if (/^0x[0-9a-f]{1,16}$/i.test(trimmed)) return inRange(BigInt(trimmed), text)
  if (/^[0-9a-f]{1,16}$/i.test(trimmed)) return `node id '${text}' looks like hex as the dqlite shell prints it: write it as 0x${trimmed}`
  return `node id '${text}' is not a decimal or 0x-hex number`
}

function inRange(id: bigint, text: string): bigint | string {
  return id === 0n || id > uint64Max ? `node id ${text} is out of range (1 to 2^64-1)` : id
}
