// The file system as a service, so the log and the snapshot store run unchanged on the real disk
// (`Disk.layerNode`) and on the simulator's in-memory disk (test/sim/SimDisk.ts).
//
// The contract mirrors POSIX as the storage code relies on it:
// - `write` lands in a cache: after a crash it may be lost, or (for the last writes) be only
//   partly there, until `sync` (fdatasync) of that file returns.
// - Creating, renaming or unlinking a name is durable only after `fsyncDir` of its directory
//   returns; before that a crash may undo it (a file whose data was synced can still vanish).
// - `rename` within one directory atomically replaces the target.
// - Every call except `sync` and `fsyncDir` completes synchronously in every implementation (the
//   node one uses node's sync calls, the simulator's is in memory): synchronous code (the SQLite
//   page machinery, between better-sqlite3 calls) runs them with `runNow`. Only a sync waits —
//   and the optional `readAsync` / `writeAsync` of a file (the node disk's thread pool), which
//   the log's appends and every snapshot chunk use through `readOffLoop` / `writeOffLoop`.
import * as fs from "node:fs"
import * as path from "node:path"
import { Cause, Context, Effect, Exit, Layer, Option } from "effect"
import { DiskError, DiskFull } from "./errors.ts"
import type { DiskFailure } from "./errors.ts"

/** "read": the file must exist. "write": read and write, created (empty) if missing. */
export type OpenMode = "read" | "write"

/** An open file. Positions are byte offsets; there is no implicit file pointer. */
export interface DiskFile {
  readonly path: string
  /** Up to `length` bytes from `position` (fewer at the end of the file). */
  readonly read: (position: number, length: number) => Effect.Effect<Uint8Array, DiskFailure>
  /** All of `data` at `position` (the file grows as needed). The caller may reuse `data` once
   * this returns. */
  readonly write: (position: number, data: Uint8Array) => Effect.Effect<void, DiskFailure>
  /** Optional: `read` and `write` done on a thread pool, for the chunks of a long streamed copy
   * (snapshots: taken, received, installed). A write into the page cache blocks while the kernel
   * throttles a process with many dirty pages, and a read of a cold file waits on the device:
   * on the event loop that was 100–430 ms per 1 MiB chunk during issue 17's scale runs. An
   * implementation without a pool (the simulator's, which must stay synchronous) omits them;
   * callers use `readOffLoop` / `writeOffLoop` below, which fall back to `read` / `write`.
   * `into` (at least `length` bytes): read into it and return a view of it, for a caller that
   * reuses its buffers (a snapshot sender: fresh memory costs ~0.9 ms per MiB on the dev VM). */
  readonly readAsync?: (position: number, length: number, into?: Uint8Array) => Effect.Effect<Uint8Array, DiskFailure>
  readonly writeAsync?: (position: number, data: Uint8Array) => Effect.Effect<void, DiskFailure>
  /** Optional: `write` and `sync` of this one write as one call on the thread pool (through a
   * second descriptor opened with O_DSYNC). When it returns, `data` is at `position` and durable,
   * as after `write` then `sync` — but only this write: earlier writes not yet synced are not
   * covered, the caller syncs those first. It replaces a write on the event loop and the pool
   * hop of `sync` by one pool hop (the log's append; docs/performance.md, "The log's append").
   * An implementation without a pool (the simulator's) omits it; callers use `writeDurable`
   * below, which falls back to `write` then `sync`. */
  readonly writeDurable?: (position: number, data: Uint8Array) => Effect.Effect<void, DiskFailure>
  readonly size: Effect.Effect<number, DiskFailure>
  readonly truncate: (length: number) => Effect.Effect<void, DiskFailure>
  /** fdatasync: every write and truncate before it is durable when it returns. */
  readonly sync: Effect.Effect<void, DiskFailure>
  readonly close: Effect.Effect<void, DiskFailure>
}

export interface DiskService {
  readonly open: (path: string, mode: OpenMode) => Effect.Effect<DiskFile, DiskFailure>
  /** The whole file. With `into` large enough, an implementation may read into it and return a
   * view of it (a caller reading many large files reuses one buffer: fresh memory for each cost
   * a node's restart ~15 ms per MiB on the dev VM, issue 17); the view is the caller's until it
   * reads into `into` again. */
  readonly readFile: (path: string, into?: Uint8Array) => Effect.Effect<Uint8Array, DiskFailure>
  /** Names (not paths) in `dir`, sorted. */
  readonly list: (dir: string) => Effect.Effect<ReadonlyArray<string>, DiskFailure>
  readonly exists: (path: string) => Effect.Effect<boolean, DiskFailure>
  /** Like `mkdir -p`. */
  readonly mkdir: (dir: string) => Effect.Effect<void, DiskFailure>
  /** Atomic replace; both names in the same directory. Durable after `fsyncDir`. */
  readonly rename: (from: string, to: string) => Effect.Effect<void, DiskFailure>
  /** Durable after `fsyncDir`. */
  readonly unlink: (path: string) => Effect.Effect<void, DiskFailure>
  /** Optional: `unlink` on the thread pool. Freeing a large file's blocks takes the syscall
   * ~0.45 s per GiB on the dev VM's ext4 (scratch probe, issue 17): on the event loop that was a
   * 2.5 s hold when a node pruned its old 2 GiB snapshot. Callers use `unlinkOffLoop`. */
  readonly unlinkAsync?: (path: string) => Effect.Effect<void, DiskFailure>
  /** Makes every create, rename and unlink in `dir` durable. */
  readonly fsyncDir: (dir: string) => Effect.Effect<void, DiskFailure>
  /** Fails when a write to `path` would fail now (a full disk, a disk that lost power). For files
   * another component writes through its own I/O (SQLite's checkpoints): the real disk answers
   * nothing here (SQLite meets the real error itself); the simulator's disk answers for them. */
  readonly checkWritable?: (path: string) => Effect.Effect<void, DiskFailure>
}

export class Disk extends Context.Tag("tqlite/storage/Disk")<Disk, DiskService>() {
  /** The real file system through node:fs. */
  static readonly layerNode: Layer.Layer<Disk> = Layer.sync(Disk, () => nodeDisk)
}

/** Runs a Disk call that completes synchronously (any but `sync` and `fsyncDir`, see above) from
 * synchronous code: its value, or its DiskFailure thrown as is. */
export function runNow<A>(effect: Effect.Effect<A, DiskFailure>): A {
  const exit = Effect.runSyncExit(effect)
  if (Exit.isSuccess(exit)) return exit.value
  const failure = Cause.failureOption(exit.cause)
  throw Option.isSome(failure) ? failure.value : Cause.squash(exit.cause)
}

/** `file.read`, on the thread pool where the implementation has one (see `DiskFile.readAsync`). */
export const readOffLoop = (file: DiskFile, position: number, length: number, into?: Uint8Array): Effect.Effect<Uint8Array, DiskFailure> =>
  file.readAsync !== undefined ? file.readAsync(position, length, into) : file.read(position, length)

/** `disk.unlink`, on the thread pool where the implementation has one (see `unlinkAsync`). */
export const unlinkOffLoop = (disk: DiskService, filePath: string): Effect.Effect<void, DiskFailure> =>
  disk.unlinkAsync !== undefined ? disk.unlinkAsync(filePath) : disk.unlink(filePath)

/** `file.write`, on the thread pool where the implementation has one (see `DiskFile.writeAsync`). */
export const writeOffLoop = (file: DiskFile, position: number, data: Uint8Array): Effect.Effect<void, DiskFailure> =>
  file.writeAsync !== undefined ? file.writeAsync(position, data) : file.write(position, data)

/** `data` at `position`, durable when this returns: one pool call where the implementation has
 * one (see `DiskFile.writeDurable`), else `write` then `sync`. Writes before it must be synced. */
export const writeDurable = (file: DiskFile, position: number, data: Uint8Array): Effect.Effect<void, DiskFailure> =>
  file.writeDurable !== undefined ? file.writeDurable(position, data) : Effect.zipRight(file.write(position, data), file.sync)

/** Removes `filePath` when it exists (an absent file is not an error). */
export const unlinkIfExists = (disk: DiskService, filePath: string): Effect.Effect<void, DiskFailure> =>
  Effect.flatMap(disk.exists(filePath), (there) => (there ? disk.unlink(filePath) : Effect.void))

/** Opens `path`, runs `use`, and closes the file whatever happens. */
export const withFile = <A, E, R>(
  disk: DiskService,
  filePath: string,
  mode: OpenMode,
  use: (file: DiskFile) => Effect.Effect<A, E, R>
): Effect.Effect<A, E | DiskFailure, R> =>
  Effect.acquireUseRelease(disk.open(filePath, mode), use, (file) => Effect.ignore(file.close))

/** `mkdir -p dir`, and when `dir` did not exist, an fsync of its parent so the new directory
 * itself survives a power loss (levels further up are assumed to exist already). */
export const ensureDir = (disk: DiskService, dir: string): Effect.Effect<void, DiskFailure> =>
  Effect.gen(function* () {
    if (yield* disk.exists(dir)) return
    yield* disk.mkdir(dir)
    yield* disk.fsyncDir(path.dirname(dir))
  })

/** Replaces `filePath` with `data` atomically and durably: write `<path>.tmp`, fdatasync,
 * rename over `filePath`, fsync the directory. A crash leaves the old or the new content. */
export const writeFileAtomic = (
  disk: DiskService,
  filePath: string,
  data: Uint8Array
): Effect.Effect<void, DiskFailure> =>
  Effect.gen(function* () {
    const tmp = `${filePath}.tmp`
    yield* withFile(disk, tmp, "write", (file) =>
      Effect.gen(function* () {
        yield* file.truncate(0)
        yield* file.write(0, data)
        yield* file.sync
      }))
    yield* disk.rename(tmp, filePath)
    yield* disk.fsyncDir(path.dirname(filePath))
  })

// --- node:fs ---------------------------------------------------------------------------------
//
// Why sync calls for most operations and the thread pool only for fdatasync / fsync(dir): a
// write into the page cache and the metadata calls take microseconds, less than the two thread
// hops of node's async API (measured ~60 µs per hop on the dev VM), while a sync waits on the
// device for hundreds of microseconds to milliseconds and must not block the event loop that also
// runs the network and the Raft actor.

const noSpaceCodes = new Set(["ENOSPC", "EDQUOT"])

function errnoCode(cause: unknown): string | undefined {
  if (typeof cause === "object" && cause !== null && "code" in cause && typeof cause.code === "string") {
    return cause.code
  }
  return undefined
}

export function toDiskFailure(op: string, filePath: string, cause: unknown): DiskFailure {
  const code = errnoCode(cause)
  if (code !== undefined && noSpaceCodes.has(code)) return new DiskFull({ op, path: filePath, cause })
  return new DiskError({ op, path: filePath, code, cause })
}

const trySync = <A>(op: string, filePath: string, f: () => A): Effect.Effect<A, DiskFailure> =>
  Effect.try({ try: f, catch: (cause) => toDiskFailure(op, filePath, cause) })

const tryCallback = (
  op: string,
  filePath: string,
  f: (callback: (error: NodeJS.ErrnoException | null) => void) => void
): Effect.Effect<void, DiskFailure> =>
  Effect.async<void, DiskFailure>((resume) => {
    f((error) => resume(error === null ? Effect.void : Effect.fail(toDiskFailure(op, filePath, error))))
  })

function makeNodeFile(filePath: string, fd: number): DiskFile {
  let closed = false
  const guard = (op: string) => {
    if (closed) throw new Error(`${op} on a closed file`)
  }
  // writeDurable's descriptor: opened on first use (most files never need it), and checked to
  // be the same file as `fd` (the name could have been replaced since `fd` was opened).
  let dsyncFd: number | undefined
  const dsyncDescriptor = (): number => {
    if (dsyncFd !== undefined) return dsyncFd
    const opened = fs.openSync(filePath, fs.constants.O_WRONLY | fs.constants.O_DSYNC)
    const mine = fs.fstatSync(fd)
    const theirs = fs.fstatSync(opened)
    if (mine.ino !== theirs.ino || mine.dev !== theirs.dev) {
      fs.closeSync(opened)
      throw new Error(`${filePath} is no longer the file opened`)
    }
    dsyncFd = opened
    return opened
  }
  return {
    path: filePath,
    read: (position, length) =>
      trySync("read", filePath, () => {
        guard("read")
        const buffer = Buffer.allocUnsafe(length)
        let done = 0
        while (done < length) {
          const n = fs.readSync(fd, buffer, done, length - done, position + done)
          if (n === 0) break
          done += n
        }
        return new Uint8Array(buffer.buffer, buffer.byteOffset, done)
      }),
    write: (position, data) =>
      trySync("write", filePath, () => {
        guard("write")
        let done = 0
        while (done < data.byteLength) {
          done += fs.writeSync(fd, data, done, data.byteLength - done, position + done)
        }
      }),
    readAsync: (position, length, into) =>
      Effect.suspend(() => {
        guard("read")
        const buffer = into !== undefined && into.byteLength >= length ? into : Buffer.allocUnsafe(length)
        const step = (done: number): Effect.Effect<Uint8Array, DiskFailure> =>
          Effect.flatMap(
            Effect.async<number, DiskFailure>((resume) => {
              fs.read(fd, buffer, done, length - done, position + done, (error, n) => resume(error === null ? Effect.succeed(n) : Effect.fail(toDiskFailure("read", filePath, error))))
            }),
            (n) => (n === 0 || done + n >= length ? Effect.succeed(new Uint8Array(buffer.buffer, buffer.byteOffset, done + n)) : step(done + n))
          )
        // Uninterruptible: an interrupted caller would let its file be closed while the pool
        // still has the call queued, and the fd's number may by then name another file.
        return Effect.uninterruptible(step(0))
      }),
    writeAsync: (position, data) =>
      Effect.suspend(() => {
        guard("write")
        const step = (done: number): Effect.Effect<void, DiskFailure> =>
          Effect.flatMap(
            Effect.async<number, DiskFailure>((resume) => {
              fs.write(fd, data, done, data.byteLength - done, position + done, (error, n) => resume(error === null ? Effect.succeed(n) : Effect.fail(toDiskFailure("write", filePath, error))))
            }),
            (n) => (done + n >= data.byteLength ? Effect.void : step(done + n))
          )
        // Uninterruptible, as readAsync: a write queued on the pool must not outlive its fd.
        return data.byteLength === 0 ? Effect.void : Effect.uninterruptible(step(0))
      }),
    writeDurable: (position, data) =>
      Effect.suspend(() => {
        guard("write")
        let out: number
        try {
          out = dsyncDescriptor()
        } catch (cause) {
          return Effect.fail(toDiskFailure("open", filePath, cause))
        }
        const length = data.byteLength
        // One Effect for the whole write, however many calls a short write takes. Uninterruptible,
        // as writeAsync: a write queued on the pool must not outlive its descriptor.
        return Effect.uninterruptible(Effect.async<void, DiskFailure>((resume) => {
          let done = 0
          const next = (): void =>
            fs.write(out, data, done, length - done, position + done, (error, n) => {
              if (error !== null) return resume(Effect.fail(toDiskFailure("write", filePath, error)))
              done += n
              if (done >= length) resume(Effect.void)
              else next()
            })
          if (length === 0) fs.fdatasync(out, (error) => resume(error === null ? Effect.void : Effect.fail(toDiskFailure("fdatasync", filePath, error))))
          else next()
        }))
      }),
    size: trySync("fstat", filePath, () => {
      guard("fstat")
      return fs.fstatSync(fd).size
    }),
    truncate: (length) =>
      trySync("ftruncate", filePath, () => {
        guard("ftruncate")
        fs.ftruncateSync(fd, length)
      }),
    sync: Effect.suspend(() => {
      if (closed) return Effect.die(new Error("fdatasync on a closed file"))
      return tryCallback("fdatasync", filePath, (callback) => fs.fdatasync(fd, callback))
    }),
    close: trySync("close", filePath, () => {
      if (closed) return
      closed = true
      if (dsyncFd !== undefined) fs.closeSync(dsyncFd)
      fs.closeSync(fd)
    })
  }
}

/** The real file system through node:fs (what `Disk.layerNode` provides). */
export const nodeDisk: DiskService = makeNodeDisk()

function makeNodeDisk(): DiskService {
  return {
    open: (filePath, mode) =>
      trySync("open", filePath, () => {
        const flags = mode === "read" ? fs.constants.O_RDONLY : fs.constants.O_RDWR | fs.constants.O_CREAT
        return makeNodeFile(filePath, fs.openSync(filePath, flags, 0o644))
      }),
    readFile: (filePath, into) =>
      trySync("readFile", filePath, () => {
        if (into !== undefined) {
          const fd = fs.openSync(filePath, "r")
          try {
            const size = fs.fstatSync(fd).size
            if (size <= into.byteLength) {
              let done = 0
              while (done < size) {
                const n = fs.readSync(fd, into, done, size - done, done)
                if (n === 0) break
                done += n
              }
              return into.subarray(0, done)
            }
          } finally {
            fs.closeSync(fd)
          }
        }
        const buffer = fs.readFileSync(filePath)
        return new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength)
      }),
    list: (dir) => trySync("readdir", dir, () => fs.readdirSync(dir).sort()),
    exists: (filePath) => trySync("stat", filePath, () => fs.statSync(filePath, { throwIfNoEntry: false }) !== undefined),
    mkdir: (dir) =>
      trySync("mkdir", dir, () => {
        fs.mkdirSync(dir, { recursive: true })
      }),
    rename: (from, to) => trySync("rename", from, () => fs.renameSync(from, to)),
    unlink: (filePath) => trySync("unlink", filePath, () => fs.unlinkSync(filePath)),
    unlinkAsync: (filePath) => tryCallback("unlink", filePath, (callback) => fs.unlink(filePath, callback)),
    fsyncDir: (dir) =>
      Effect.acquireUseRelease(
        trySync("open", dir, () => fs.openSync(dir, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY)),
        (fd) => tryCallback("fsync", dir, (callback) => fs.fsync(fd, callback)),
        (fd) => Effect.sync(() => fs.closeSync(fd))
      )
  }
}
