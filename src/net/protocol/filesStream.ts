// A FILES answer's body read as it arrives (DUMP's answer: whole database files), for a reader
// that must not hold the message whole: the body's layout is the one `responses.ts` `readFiles`
// decodes (u64 n, then n × (text name, u64 size, size raw bytes, no padding)), taken piece by
// piece from a `FrameDecoder` whose header `startStreamedBody` took. Pure: the Effect loop that
// feeds it from a socket and hands the pieces to a sink is `socketIo.ts` `readFilesBody`.
//
// Every field is checked against what the header announced before it is believed: a count of
// files that cannot fit, a name with no NUL (or longer than `filesNameBytesMax`), a size that
// overruns the body. Bytes after the last file are read and dropped, as `readFiles` ignores them.
import { assert } from "../../assert.ts"
import { wordBytes } from "./codes.ts"
import { WireError } from "./errors.ts"
import type { FrameDecoder } from "./framing.ts"
import { messageBytesMaxDefault } from "./framing.ts"

/** The largest piece of a file handed out at once: a reader holds at most this much of a dump
 * beyond its socket's buffer. A piece is also at most what one socket read delivered. */
export const filesPieceBytesMax = 1024 * 1024
// A piece is no larger than a message the client would read whole anyway.
assert(filesPieceBytesMax <= messageBytesMaxDefault, "a FILES piece fits a client message")
/** The longest file name accepted (dqlite sends the database's name and name + "-wal"). */
export const filesNameBytesMax = 4096

/** What the body gives, in order: `Files` once, then per file `File` and its bytes as `Data`
 * pieces (none for an empty file), then `End` once the whole body is taken. */
export type FilesPiece =
  | { readonly _tag: "Files"; readonly count: number; readonly bodyBytes: number }
  | { readonly _tag: "File"; readonly index: number; readonly name: string; readonly sizeBytes: number }
  | { readonly _tag: "Data"; readonly bytes: Uint8Array }
  | { readonly _tag: "End" }

type State =
  | { readonly _tag: "Count" }
  | { readonly _tag: "Name"; readonly words: Array<Uint8Array> }
  | { readonly _tag: "Size"; readonly name: string }
  | { readonly _tag: "Data"; left: number }
  | { readonly _tag: "Trailing" }
  | { readonly _tag: "Done" }

const utf8Decoder = new TextDecoder("utf-8", { fatal: false })

export interface FilesBodyReaderOptions {
  /** Largest `Data` piece (≤ `filesPieceBytesMax` by default). */
  readonly pieceBytesMax?: number
  readonly nameBytesMax?: number
}

/** Reads one FILES body from `decoder` (after `startStreamedBody`). `next()` gives the next piece,
 * or `undefined` when the decoder needs more bytes; it throws `WireError` on malformed input, and
 * the stream cannot be resynchronised afterwards. `Data` pieces are views of the pushed chunks. */
export class FilesBodyReader {
  readonly bodyBytes: number
  private readonly pieceBytesMax: number
  private readonly nameBytesMax: number
  private state: State = { _tag: "Count" }
  private count = 0
  private index = 0
  private announced = false

  constructor(private readonly decoder: FrameDecoder, options: FilesBodyReaderOptions = {}) {
    this.bodyBytes = decoder.streamedBodyBytesLeft
    this.pieceBytesMax = options.pieceBytesMax ?? filesPieceBytesMax
    this.nameBytesMax = options.nameBytesMax ?? filesNameBytesMax
    assert(Number.isSafeInteger(this.pieceBytesMax) && this.pieceBytesMax >= 1, "pieceBytesMax ≥ 1")
    assert(Number.isSafeInteger(this.nameBytesMax) && this.nameBytesMax >= wordBytes, "nameBytesMax holds a word")
  }

  /** Bytes of the body not taken yet. */
  get bodyBytesLeft(): number {
    return this.decoder.streamedBodyBytesLeft
  }

  /** Which file is being read (its index), for error messages. */
  get fileIndex(): number {
    return this.index
  }

  next(): FilesPiece | undefined {
    const decoder = this.decoder
    for (;;) {
      const state = this.state
      switch (state._tag) {
        case "Count": {
          if (decoder.streamedBodyBytesLeft < wordBytes) {
            throw new WireError("Truncated", "files.n", `a body of ${this.bodyBytes} bytes has no room for the count of files`)
          }
          const word = decoder.takeBodyBytes(wordBytes)
          if (word === undefined) return undefined
          const count = new DataView(word.buffer, word.byteOffset, wordBytes).getBigUint64(0, true)
          // Each file takes at least a one-word name and a size.
          if (count * 16n > BigInt(decoder.streamedBodyBytesLeft)) {
            throw new WireError("Truncated", "files", `${count} files cannot fit in ${decoder.streamedBodyBytesLeft} bytes`)
          }
          this.count = Number(count)
          this.state = this.count === 0 ? { _tag: "Trailing" } : { _tag: "Name", words: [] }
          this.announced = true
          return { _tag: "Files", count: this.count, bodyBytes: this.bodyBytes }
        }
        case "Name": {
          const field = `files[${this.index}].name`
          if (decoder.streamedBodyBytesLeft === 0 && state.words.length === 0) {
            throw new WireError("Truncated", field, `the body ends after ${this.index} of the ${this.count} files it announced`)
          }
          if (decoder.streamedBodyBytesLeft < wordBytes) {
            throw new WireError("UnterminatedText", field, `no NUL before the end of the ${this.bodyBytes}-byte body`)
          }
          if (state.words.length * wordBytes >= this.nameBytesMax) {
            throw new WireError("TooLarge", field, `no NUL within ${this.nameBytesMax} bytes`)
          }
          const word = decoder.takeBodyBytes(wordBytes)
          if (word === undefined) return undefined
          state.words.push(word)
          const nul = word.indexOf(0)
          if (nul === -1) continue
          const length = (state.words.length - 1) * wordBytes + nul
          const text = new Uint8Array(length)
          state.words.forEach((w, i) => text.set(w.subarray(0, Math.min(wordBytes, length - i * wordBytes)), i * wordBytes))
          this.state = { _tag: "Size", name: utf8Decoder.decode(text) }
          continue
        }
        case "Size": {
          const field = `files[${this.index}].size`
          if (decoder.streamedBodyBytesLeft < wordBytes) throw new WireError("Truncated", field, "the body ends before the file's size")
          const word = decoder.takeBodyBytes(wordBytes)
          if (word === undefined) return undefined
          const size = new DataView(word.buffer, word.byteOffset, wordBytes).getBigUint64(0, true)
          if (size > BigInt(decoder.streamedBodyBytesLeft)) {
            throw new WireError("Truncated", `files[${this.index}].data`, `a file of ${size} bytes overruns the ${decoder.streamedBodyBytesLeft} bytes left of the body`)
          }
          const sizeBytes = Number(size)
          this.state = { _tag: "Data", left: sizeBytes }
          return { _tag: "File", index: this.index, name: state.name, sizeBytes }
        }
        case "Data": {
          if (state.left === 0) {
            this.index += 1
            this.state = this.index < this.count ? { _tag: "Name", words: [] } : { _tag: "Trailing" }
            continue
          }
          const bytes = decoder.takeBodySlice(Math.min(state.left, this.pieceBytesMax))
          if (bytes === undefined) return undefined
          state.left -= bytes.byteLength
          return { _tag: "Data", bytes }
        }
        case "Trailing": {
          // Bytes after the last file: dropped as they arrive (the whole-message decoder ignores
          // them too); the body must still be taken whole to stay in step with the stream.
          if (decoder.streamedBodyBytesLeft > 0) {
            if (decoder.takeBodySlice(this.pieceBytesMax) === undefined) return undefined
            continue
          }
          assert(this.announced, "the count came first")
          this.state = { _tag: "Done" }
          return { _tag: "End" }
        }
        case "Done":
          return undefined
      }
    }
  }

  /** Where the reader stands, for the error when the stream ends early. */
  describePosition(): string {
    const taken = this.bodyBytes - this.decoder.streamedBodyBytesLeft
    const where = this.state._tag === "Data" ? ` inside file ${this.index} (${this.state.left} of its bytes missing)` : this.state._tag === "Count" ? " before the count of files" : ` at file ${this.index}`
    return `after ${taken} of the ${this.bodyBytes}-byte FILES body${where}`
  }
}
