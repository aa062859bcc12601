// An in-memory `Disk` for the simulator and the crash tests, with a driver that injects the
// faults the storage layer claims to survive: power loss (unsynced data and directory changes
// lost, the last writes torn) and bit flips.
//
// The model, per file: the current bytes plus an undo log of the writes and truncates since the
// last `sync`. `sync` clears the undo log (those changes are durable). A crash keeps, per file,
// what the crash mode says (see `CrashMode`) and undoes the rest.
// Per directory: the current names plus the list of creates / renames / unlinks since the last
// `fsyncDir`; a crash keeps a random prefix of that list (an ordered metadata journal, like ext4's
// or xfs's) and undoes the rest. A file no name points to after a crash is gone.
// Simplifications (documented, deliberate): `mkdir` is durable at once; `rename` works within one
// directory only; there is no latency; sizes are exact (no preallocation).
//
// Determinism: every random choice comes from one seeded PRNG (test/sim/Prng.ts, never
// Math.random), so a seed replays the same crash bit for bit.
import * as path from "node:path"
import { Effect, Layer } from "effect"
import { Disk } from "../../src/storage/Disk.ts"
import type { DiskFile, DiskService, OpenMode } from "../../src/storage/Disk.ts"
import { DiskError, DiskFull } from "../../src/storage/errors.ts"
import type { DiskFailure } from "../../src/storage/errors.ts"
import { Prng } from "./Prng.ts"

/**
 * What survives a crash of the changes not yet synced:
 * - "lose": nothing — every byte not covered by a sync of its file and every directory change not
 *   covered by an fsync of its directory is gone;
 * - "prefix": per file a random prefix of its unsynced writes, the next one possibly torn at a
 *   random byte; per directory a random prefix of its unsynced changes (the default);
 * - "sectors": per file each 512-byte sector touched since the sync is independently new or old
 *   (pages written back out of order; unwritten parts read as the old bytes or zeros), and the size
 *   is the old or the new one; directories as in "prefix".
 */
export type CrashMode = "lose" | "prefix" | "sectors"

export interface SimDiskDriver {
  /** Power loss now. Every open handle dies, and every call fails until `restart`. */
  readonly crash: (mode?: CrashMode) => void
  /** Arms a crash: the mutating call number `op` (counted from 0 since the disk was made, see
   * `ops`) crashes the disk instead of running. `null` disarms. */
  readonly crashAtOp: (op: number | null, mode?: CrashMode) => void
  /** Power back on: calls work again (a new process opens the files anew). */
  readonly restart: () => void
  /** Mutating calls so far (open for write, write, truncate, sync, rename, unlink, mkdir, fsyncDir). */
  readonly ops: () => number
  readonly isCrashed: () => boolean
  /** Flips one bit of a file's current content (media damage). */
  readonly flipBit: (filePath: string, byteOffset: number, bit?: number) => void
  /** A copy of a file's current content. */
  readonly fileBytes: (filePath: string) => Uint8Array
  /** Replaces a file's content, durably (for setting up a test). */
  readonly writeFile: (filePath: string, data: Uint8Array) => void
  readonly exists: (filePath: string) => boolean
  readonly list: (dir: string) => ReadonlyArray<string>
  /** While full, every call that needs space fails with DiskFull: a write that extends the file
   * first writes the part that overwrites existing bytes (a short write, then ENOSPC), and
   * `checkWritable` fails (SQLite's own writes). */
  readonly setFull: (full: boolean) => void
  /** `length` bytes of a file's current content from `position` (fewer at its end). */
  readonly readRange: (filePath: string, position: number, length: number) => Uint8Array
  /** The file's current length, or undefined when no name points to it. */
  readonly fileLength: (filePath: string) => number | undefined
  /** True when the file has writes or truncates not yet synced. */
  readonly hasUnsynced: (filePath: string) => boolean
  /** Removes a name at once and durably (another writer deleted the file: see MirrorDisk.ts). */
  readonly forget: (filePath: string) => void
  /** Creates a directory (and its parents) at once and durably, without counting an op. */
  readonly ensureDir: (dir: string) => void
  /** Every file path the disk knows now. */
  readonly files: () => ReadonlyArray<string>
}

export interface SimDiskOptions {
  readonly seed: number
  /** Called on a crash before the model forgets what was not synced, and after. */
  readonly beforeCrash?: () => void
  readonly afterCrash?: () => void
}

export interface SimDisk {
  readonly service: DiskService
  readonly layer: Layer.Layer<Disk>
  readonly driver: SimDiskDriver
}

// --- the model ---------------------------------------------------------------------------------

interface UndoWrite {
  readonly kind: "write"
  readonly position: number
  readonly data: Uint8Array
  readonly oldLength: number
  readonly oldBytes: Uint8Array
}
interface UndoTruncate {
  readonly kind: "truncate"
  readonly newLength: number
  readonly oldLength: number
  readonly oldBytes: Uint8Array
}

class Inode {
  bytes = new Uint8Array(256)
  length = 0
  undo: Array<UndoWrite | UndoTruncate> = []

  content(): Uint8Array {
    return this.bytes.slice(0, this.length)
  }

  private ensure(capacity: number): void {
    if (capacity <= this.bytes.byteLength) return
    let size = this.bytes.byteLength
    while (size < capacity) size *= 2
    const grown = new Uint8Array(size)
    grown.set(this.bytes.subarray(0, this.length))
    this.bytes = grown
  }

  /** Sets the length, zero-filling when it grows (the buffer may hold stale bytes). */
  private resize(length: number): void {
    if (length > this.length) {
      this.ensure(length)
      this.bytes.fill(0, this.length, length)
    }
    this.length = length
  }

  private place(position: number, data: Uint8Array): void {
    if (position + data.byteLength > this.length) this.resize(position + data.byteLength)
    this.bytes.set(data, position)
  }

  write(position: number, data: Uint8Array): void {
    const oldBytes = this.bytes.slice(position, Math.min(this.length, position + data.byteLength))
    this.undo.push({ kind: "write", position, data: data.slice(), oldLength: this.length, oldBytes })
    if (position > this.length) this.resize(position)
    this.place(position, data)
  }

  truncate(length: number): void {
    const oldBytes = length < this.length ? this.bytes.slice(length, this.length) : new Uint8Array(0)
    this.undo.push({ kind: "truncate", newLength: length, oldLength: this.length, oldBytes })
    this.resize(length)
  }

  private undoOne(op: UndoWrite | UndoTruncate): void {
    if (op.kind === "write") {
      this.bytes.set(op.oldBytes, op.position)
      this.length = op.oldLength
    } else {
      this.resize(op.oldLength)
      this.bytes.set(op.oldBytes, op.newLength)
    }
  }

  /** Rolls back to the durable content; returns the changes that were undone, oldest first. */
  rollback(): Array<UndoWrite | UndoTruncate> {
    const ops = this.undo
    for (let i = ops.length - 1; i >= 0; i--) this.undoOne(ops[i]!)
    this.undo = []
    return ops
  }

  crash(mode: CrashMode, prng: Prng): void {
    if (this.undo.length === 0) return
    if (mode === "sectors") return this.crashSectors(prng)
    const ops = this.rollback()
    if (mode === "lose") return
    const keep = prng.int(0, ops.length)
    for (let i = 0; i < keep; i++) this.redo(ops[i]!)
    const next = ops[keep]
    if (next !== undefined && next.kind === "write" && prng.chance(0.5)) {
      this.place(next.position, next.data.subarray(0, prng.int(0, next.data.byteLength - 1)))
    }
    this.undo = []
  }

  private redo(op: UndoWrite | UndoTruncate): void {
    if (op.kind === "write") {
      if (op.position > this.length) this.resize(op.position)
      this.place(op.position, op.data)
    } else {
      this.resize(op.newLength)
    }
  }

  private crashSectors(prng: Prng): void {
    const current = this.content()
    this.rollback()
    const durable = this.content()
    const length = prng.chance(0.5) ? current.byteLength : durable.byteLength
    const result = new Uint8Array(length)
    result.set(durable.subarray(0, Math.min(length, durable.byteLength)))
    const sectorBytes = 512
    for (let start = 0; start < length; start += sectorBytes) {
      const end = Math.min(start + sectorBytes, length)
      const changed = start >= durable.byteLength || !sameBytes(current, durable, start, end)
      if (changed && prng.chance(0.5)) {
        result.fill(0, start, end)
        result.set(current.subarray(start, Math.min(end, current.byteLength)), start)
      }
    }
    this.bytes = new Uint8Array(Math.max(256, length))
    this.bytes.set(result)
    this.length = length
    this.undo = []
  }
}

function sameBytes(a: Uint8Array, b: Uint8Array, start: number, end: number): boolean {
  for (let i = start; i < end; i++) if (a[i] !== b[i]) return false
  return true
}

type DirChange =
  | { readonly kind: "link"; readonly name: string; readonly inode: Inode }
  | { readonly kind: "unlink"; readonly name: string }
  | { readonly kind: "rename"; readonly from: string; readonly to: string }

class Directory {
  names = new Map<string, Inode>()
  durable = new Map<string, Inode>()
  changes: Array<DirChange> = []

  change(change: DirChange): void {
    this.changes.push(change)
    applyChange(this.names, change)
  }

  sync(): void {
    this.durable = new Map(this.names)
    this.changes = []
  }

  crash(mode: CrashMode, prng: Prng): void {
    const keep = mode === "lose" ? 0 : prng.int(0, this.changes.length)
    for (let i = 0; i < keep; i++) applyChange(this.durable, this.changes[i]!)
    this.names = new Map(this.durable)
    this.changes = []
  }
}

function applyChange(names: Map<string, Inode>, change: DirChange): void {
  switch (change.kind) {
    case "link":
      names.set(change.name, change.inode)
      return
    case "unlink":
      names.delete(change.name)
      return
    case "rename": {
      const inode = names.get(change.from)
      if (inode === undefined) return
      names.delete(change.from)
      names.set(change.to, inode)
      return
    }
  }
}

// --- the service -------------------------------------------------------------------------------

export function makeSimDisk(options: SimDiskOptions): SimDisk {
  const prng = new Prng(options.seed)
  const dirs = new Map<string, Directory>([["/", new Directory()]])
  let opCount = 0
  let epoch = 0
  let crashed = false
  let full = false
  let armed: { readonly op: number; readonly mode: CrashMode } | null = null

  const crash = (mode: CrashMode = "prefix") => {
    options.beforeCrash?.()
    const inodes = new Set<Inode>()
    for (const dir of dirs.values()) {
      for (const inode of dir.names.values()) inodes.add(inode)
      for (const inode of dir.durable.values()) inodes.add(inode)
    }
    for (const inode of inodes) inode.crash(mode, prng)
    for (const dir of dirs.values()) dir.crash(mode, prng)
    epoch++
    crashed = true
    armed = null
    options.afterCrash?.()
  }

  const norm = (p: string) => path.posix.resolve("/", p)
  const failure = (op: string, p: string, code: string): DiskError =>
    new DiskError({ op, path: p, code, cause: new Error(`simulated ${code}`) })
  const noSpace = (op: string, p: string): DiskFull =>
    new DiskFull({ op, path: p, cause: Object.assign(new Error("simulated ENOSPC"), { code: "ENOSPC" }) })

  /** Runs one call: fails while crashed, counts it if it mutates, fires an armed crash. */
  const call = <A>(op: string, p: string, mutates: boolean, f: () => A | DiskFailure): Effect.Effect<A, DiskFailure> =>
    Effect.suspend(() => {
      if (crashed) return Effect.fail(failure(op, p, "EIO"))
      if (mutates) {
        if (armed !== null && armed.op === opCount) {
          crash(armed.mode)
          return Effect.fail(failure(op, p, "EIO"))
        }
        opCount++
      }
      const result = f()
      if (result instanceof DiskError || result instanceof DiskFull) return Effect.fail(result)
      return Effect.succeed(result as A)
    })

  const dirOf = (p: string): Directory | undefined => dirs.get(path.posix.dirname(p))
  const lookup = (p: string): Inode | undefined => dirOf(p)?.names.get(path.posix.basename(p))

  const makeFile = (filePath: string, inode: Inode, writable: boolean): DiskFile => {
    const myEpoch = epoch
    let closed = false
    const handleCall = <A>(op: string, mutates: boolean, f: () => A | DiskFailure) =>
      call(op, filePath, mutates, () => {
        if (epoch !== myEpoch) return failure(op, filePath, "EIO")
        if (closed) throw new Error(`${op} on a closed file ${filePath}`)
        return f()
      })
    return {
      path: filePath,
      read: (position, length) =>
        handleCall("read", false, () => inode.bytes.slice(Math.min(position, inode.length), Math.min(position + length, inode.length))),
      write: (position, data) =>
        handleCall("write", true, () => {
          if (!writable) return failure("write", filePath, "EBADF")
          if (full && position + data.byteLength > inode.length) {
            // A short write: what overwrites existing bytes lands, the rest needs space.
            if (position < inode.length) inode.write(position, data.subarray(0, inode.length - position))
            return noSpace("write", filePath)
          }
          inode.write(position, data)
        }),
      size: handleCall("fstat", false, () => inode.length),
      truncate: (length) =>
        handleCall("ftruncate", true, () => {
          if (!writable) return failure("ftruncate", filePath, "EBADF")
          if (full && length > inode.length) return noSpace("ftruncate", filePath)
          inode.truncate(length)
        }),
      sync: handleCall("fdatasync", true, () => {
        inode.undo = []
      }),
      close: Effect.sync(() => {
        closed = true
      })
    }
  }

  const service: DiskService = {
    open: (filePath: string, mode: OpenMode) => {
      const p = norm(filePath)
      return call("open", p, mode === "write", () => {
        const dir = dirOf(p)
        if (dir === undefined) return failure("open", p, "ENOENT")
        const name = path.posix.basename(p)
        let inode = dir.names.get(name)
        if (inode === undefined) {
          if (mode === "read") return failure("open", p, "ENOENT")
          if (full) return noSpace("open", p)
          inode = new Inode()
          dir.change({ kind: "link", name, inode })
        }
        return makeFile(p, inode, mode === "write")
      })
    },
    readFile: (filePath) => {
      const p = norm(filePath)
      return call("readFile", p, false, () => lookup(p)?.content() ?? failure("readFile", p, "ENOENT"))
    },
    list: (dir) => {
      const p = norm(dir)
      return call("readdir", p, false, () => {
        const directory = dirs.get(p)
        if (directory === undefined) return failure("readdir", p, "ENOENT")
        return listNames(p, directory)
      })
    },
    exists: (filePath) => {
      const p = norm(filePath)
      return call("stat", p, false, () => dirs.has(p) || lookup(p) !== undefined)
    },
    mkdir: (dir) => {
      const p = norm(dir)
      return call("mkdir", p, true, () => {
        for (let d = p; !dirs.has(d); d = path.posix.dirname(d)) dirs.set(d, new Directory())
      })
    },
    rename: (from, to) => {
      const f = norm(from)
      const t = norm(to)
      return call("rename", f, true, () => {
        if (path.posix.dirname(f) !== path.posix.dirname(t)) return failure("rename", f, "EXDEV")
        const dir = dirOf(f)
        if (dir === undefined || !dir.names.has(path.posix.basename(f))) return failure("rename", f, "ENOENT")
        dir.change({ kind: "rename", from: path.posix.basename(f), to: path.posix.basename(t) })
      })
    },
    unlink: (filePath) => {
      const p = norm(filePath)
      return call("unlink", p, true, () => {
        const dir = dirOf(p)
        if (dir === undefined || !dir.names.has(path.posix.basename(p))) return failure("unlink", p, "ENOENT")
        dir.change({ kind: "unlink", name: path.posix.basename(p) })
      })
    },
    fsyncDir: (dir) => {
      const p = norm(dir)
      return call("fsync", p, true, () => {
        const directory = dirs.get(p)
        if (directory === undefined) return failure("fsync", p, "ENOENT")
        directory.sync()
      })
    },
    checkWritable: (filePath) => {
      const p = norm(filePath)
      return call("checkWritable", p, false, () => (full ? noSpace("write", p) : undefined))
    }
  }

  function listNames(p: string, directory: Directory): Array<string> {
    const names = new Set(directory.names.keys())
    for (const d of dirs.keys()) if (d !== p && path.posix.dirname(d) === p) names.add(path.posix.basename(d))
    return [...names].sort()
  }

  const inodeOf = (filePath: string): Inode => {
    const inode = lookup(norm(filePath))
    if (inode === undefined) throw new Error(`no file ${filePath}`)
    return inode
  }

  const driver: SimDiskDriver = {
    crash: (mode) => crash(mode),
    crashAtOp: (op, mode = "prefix") => {
      armed = op === null ? null : { op, mode }
    },
    restart: () => {
      crashed = false
    },
    ops: () => opCount,
    isCrashed: () => crashed,
    flipBit: (filePath, byteOffset, bit = 0) => {
      const inode = inodeOf(filePath)
      if (byteOffset < 0 || byteOffset >= inode.length) throw new Error(`offset ${byteOffset} outside ${filePath}`)
      inode.bytes[byteOffset]! ^= 1 << bit
    },
    fileBytes: (filePath) => inodeOf(filePath).content(),
    writeFile: (filePath, data) => {
      const p = norm(filePath)
      for (let d = path.posix.dirname(p); !dirs.has(d); d = path.posix.dirname(d)) dirs.set(d, new Directory())
      const dir = dirOf(p)!
      const inode = new Inode()
      inode.write(0, data)
      inode.undo = []
      dir.names.set(path.posix.basename(p), inode)
      dir.durable.set(path.posix.basename(p), inode)
    },
    exists: (filePath) => {
      const p = norm(filePath)
      return dirs.has(p) || lookup(p) !== undefined
    },
    list: (dir) => {
      const p = norm(dir)
      const directory = dirs.get(p)
      return directory === undefined ? [] : listNames(p, directory)
    },
    setFull: (value) => {
      full = value
    },
    readRange: (filePath, position, length) => {
      const inode = inodeOf(filePath)
      return inode.bytes.slice(Math.min(position, inode.length), Math.min(position + length, inode.length))
    },
    fileLength: (filePath) => lookup(norm(filePath))?.length,
    hasUnsynced: (filePath) => (lookup(norm(filePath))?.undo.length ?? 0) > 0,
    forget: (filePath) => {
      const p = norm(filePath)
      const dir = dirOf(p)
      if (dir === undefined) return
      const name = path.posix.basename(p)
      dir.names.delete(name)
      dir.durable.delete(name)
      dir.changes = dir.changes.filter((change) => change.kind === "rename" ? change.from !== name && change.to !== name : change.name !== name)
    },
    ensureDir: (dir) => {
      for (let d = norm(dir); !dirs.has(d); d = path.posix.dirname(d)) dirs.set(d, new Directory())
    },
    files: () => {
      const out: Array<string> = []
      for (const [d, directory] of dirs) for (const name of directory.names.keys()) out.push(path.posix.join(d, name))
      return out
    }
  }

  return { service, layer: Layer.succeed(Disk, service), driver }
}
