// A seed's trace: every line goes to an optional printer and into an FNV-1a hash, so two runs of
// one seed can be compared by their hashes (replay must be identical bit for bit).
export interface Trace {
  readonly line: (text: string) => void
  /** The hash of every line so far, in hex. */
  readonly hash: () => string
}

export function makeTrace(print: ((text: string) => void) | undefined): Trace {
  let hash = 0x811c9dc5
  return {
    line: (text) => {
      for (let i = 0; i < text.length; i++) hash = Math.imul(hash ^ text.charCodeAt(i), 0x01000193) >>> 0
      print?.(text)
    },
    hash: () => hash.toString(16)
  }
}
