// The simulator's disk for SQLite's files: the in-memory SimDisk model (what survives a power
// loss: unsynced writes lost or torn, directory changes not fsynced undone, ENOSPC part way)
// mirrored onto a real directory, because SQLite (better-sqlite3) can only read and write real
// files.
//
// Two writers share those files:
// - tqlite, through this Disk: every call runs on the model first, then the same bytes (a short
//   write included) and the same name changes are copied onto the real files;
// - SQLite, through its own VFS, which this Disk never sees: the leader's WAL and -shm, its
//   checkpoints into the main file, the step-down's checkpoint.
// SQLite's writes are taken as durable when tqlite next touches the file (it is "adopted": the
// model takes the real content as synced, tqlite's unsynced writes in it included), and before a
// crash every file is adopted. That matches what tqlite relies on: SQLite fsyncs the main file
// after each checkpoint (which makes every write to that file durable, tqlite's too), and no WAL
// or -shm survives a restart. What it does not model: SQLite's unsynced WAL appends lost in a
// power loss (irrelevant: a starting node deletes every WAL).
//
// On a crash the model forgets what it would lose, then the real files are made to hold exactly
// the model's content (files it lost are deleted; files only SQLite ever wrote are left alone).
import fs from "node:fs"
import path from "node:path"
import { Effect, Layer } from "effect"
import { Disk } from "../../src/storage/Disk.ts"
import type { DiskFile, DiskService, OpenMode } from "../../src/storage/Disk.ts"
import type { SimDisk } from "./SimDisk.ts"
import { makeSimDisk } from "./SimDisk.ts"

interface Stamp {
  readonly size: bigint
  readonly mtimeNs: bigint
  readonly ino: bigint
}

export function makeMirrorDisk(options: { readonly seed: number }): SimDisk {
  /** The real file's stat after tqlite's last change to it (or its last adoption). */
  const stamps = new Map<string, Stamp>()
  const statOf = (filePath: string): Stamp | undefined => {
    const stat = fs.statSync(filePath, { throwIfNoEntry: false, bigint: true })
    return stat === undefined || !stat.isFile() ? undefined : { size: stat.size, mtimeNs: stat.mtimeNs, ino: stat.ino }
  }
  const same = (a: Stamp | undefined, b: Stamp | undefined) => a === b || (a !== undefined && b !== undefined && a.size === b.size && a.mtimeNs === b.mtimeNs && a.ino === b.ino)

  const inner: SimDisk = makeSimDisk({ seed: options.seed, beforeCrash: () => adoptAll(), afterCrash: () => writeBack() })
  const model = inner.driver
  const norm = (p: string) => path.posix.resolve("/", p)

  /** Takes SQLite's changes to `filePath` (since tqlite last touched it) into the model. */
  const adopt = (filePath: string): void => {
    const real = statOf(filePath)
    const known = model.fileLength(filePath) !== undefined
    if (real === undefined) {
      if (known && stamps.has(filePath)) model.forget(filePath)
      stamps.delete(filePath)
      return
    }
    if (known && same(real, stamps.get(filePath))) return
    model.ensureDir(path.dirname(filePath))
    model.forget(filePath)
    model.writeFile(filePath, new Uint8Array(fs.readFileSync(filePath)))
    stamps.set(filePath, real)
  }

  const adoptAll = (): void => {
    for (const filePath of new Set([...stamps.keys(), ...model.files()])) adopt(filePath)
  }

  /** After a crash: the real files hold exactly what the model kept. */
  const writeBack = (): void => {
    for (const filePath of new Set([...stamps.keys(), ...model.files()])) {
      const length = model.fileLength(filePath)
      if (length === undefined) {
        if (fs.existsSync(filePath)) fs.unlinkSync(filePath)
        stamps.delete(filePath)
        continue
      }
      const content = model.readRange(filePath, 0, length)
      fs.mkdirSync(path.dirname(filePath), { recursive: true })
      const current = fs.existsSync(filePath) ? fs.readFileSync(filePath) : null
      if (current === null || Buffer.compare(current, content) !== 0) fs.writeFileSync(filePath, content)
      stamps.set(filePath, statOf(filePath)!)
    }
  }

  /** Copies the model's bytes of `filePath` from `position` (`length` of them) and its length onto
   * the real file. */
  const mirrorBytes = (filePath: string, position: number, length: number): void => {
    const modelLength = model.fileLength(filePath)
    if (modelLength === undefined) return
    const fd = fs.openSync(filePath, fs.constants.O_RDWR | fs.constants.O_CREAT, 0o644)
    try {
      const bytes = model.readRange(filePath, position, length)
      if (bytes.byteLength > 0) fs.writeSync(fd, bytes, 0, bytes.byteLength, position)
      if (fs.fstatSync(fd).size !== modelLength) fs.ftruncateSync(fd, modelLength)
    } finally {
      fs.closeSync(fd)
    }
    stamps.set(filePath, statOf(filePath)!)
  }

  /** Runs a model call, then mirrors it whether it succeeded or failed part way. */
  const mirrored = <A, E>(call: Effect.Effect<A, E>, mirror: () => void): Effect.Effect<A, E> =>
    Effect.ensuring(call, Effect.sync(() => {
      if (!model.isCrashed()) mirror()
    }))

  const wrapFile = (filePath: string, file: DiskFile): DiskFile => ({
    path: file.path,
    read: file.read,
    size: file.size,
    sync: file.sync,
    close: file.close,
    write: (position, data) => mirrored(file.write(position, data), () => mirrorBytes(filePath, position, data.byteLength)),
    truncate: (length) => mirrored(file.truncate(length), () => mirrorBytes(filePath, 0, 0))
  })

  const withAdopted = <A, E>(filePath: string, use: (p: string) => Effect.Effect<A, E>): Effect.Effect<A, E> =>
    Effect.suspend(() => {
      const p = norm(filePath)
      if (!model.isCrashed()) {
        model.ensureDir(path.dirname(p))
        adopt(p)
      }
      return use(p)
    })

  const service: DiskService = {
    open: (filePath: string, mode: OpenMode) =>
      withAdopted(filePath, (p) =>
        Effect.map(
          mirrored(inner.service.open(p, mode), () => {
            if (model.fileLength(p) !== undefined && !fs.existsSync(p)) mirrorBytes(p, 0, 0)
          }),
          (file) => wrapFile(p, file)
        )),
    readFile: (filePath) => withAdopted(filePath, (p) => inner.service.readFile(p)),
    list: (dir) =>
      Effect.suspend(() => {
        const p = norm(dir)
        if (model.isCrashed()) return inner.service.list(p)
        model.ensureDir(p)
        const names = new Set(fs.existsSync(p) ? fs.readdirSync(p) : [])
        for (const file of model.files()) if (path.posix.dirname(file) === p) names.add(path.posix.basename(file))
        for (const name of names) if (!fs.existsSync(path.join(p, name)) || statOf(path.join(p, name)) !== undefined) adopt(path.join(p, name))
        return inner.service.list(p)
      }),
    exists: (filePath) => withAdopted(filePath, (p) => Effect.map(inner.service.exists(p), (there) => there || fs.existsSync(p))),
    mkdir: (dir) => mirrored(inner.service.mkdir(dir), () => fs.mkdirSync(norm(dir), { recursive: true })),
    rename: (from, to) =>
      withAdopted(from, (f) =>
        withAdopted(to, (t) =>
          mirrored(inner.service.rename(f, t), () => {
            if (model.fileLength(t) === undefined || !fs.existsSync(f)) return
            fs.renameSync(f, t)
            stamps.delete(f)
            stamps.set(t, statOf(t)!)
          }))),
    unlink: (filePath) =>
      withAdopted(filePath, (p) =>
        mirrored(inner.service.unlink(p), () => {
          if (model.fileLength(p) !== undefined || !fs.existsSync(p)) return
          fs.unlinkSync(p)
          stamps.delete(p)
        })),
    fsyncDir: (dir) => inner.service.fsyncDir(dir),
    checkWritable: (filePath) => inner.service.checkWritable!(filePath)
  }

  return { service, layer: Layer.succeed(Disk, service), driver: inner.driver }
}
