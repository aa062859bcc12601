// `npm run bench -- fsync [--rounds 400] [--record-bytes 8192] [--files 1] [--dir D]`: what one
// fdatasync costs on this disk for the log's pattern (one record appended, then fdatasync), in
// four ways that take turns record by record, so the machine's load hits them alike:
//   append     the file grows with every record: the size changes, so ext4 must commit metadata
//   written    the record overwrites a region written (zeros) and fdatasynced once before: what a
//              preallocated segment would do (libraft/dqlite), data only
//   fallocate  the record lands in fallocate'd, never-written blocks (unwritten extents: the
//              first write converts them, a metadata change again)
//   pool       like `written`, but the fdatasync runs on libuv's thread pool (fs.fdatasync with a
//              callback, what the log store does) instead of blocking the thread (fdatasyncSync):
//              the difference is the cost of the hop
// `--files N` runs N such processes at once (three nodes on one machine share one device).
import { spawn } from "node:child_process"
import fs from "node:fs"
import os from "node:os"
import path from "node:path"
import { performance } from "node:perf_hooks"
import { fileURLToPath } from "node:url"
import { option } from "./load.ts"

const modes = ["append", "written", "fallocate", "pool"] as const
type Mode = (typeof modes)[number]

function positiveInteger(text: string | undefined, fallback: number, name: string): number {
  const value = Number(text ?? fallback)
  if (!Number.isSafeInteger(value) || value <= 0) throw new Error(`--${name} wants a positive integer, not "${text}"`)
  return value
}

export async function main(args: ReadonlyArray<string>): Promise<void> {
  const rounds = positiveInteger(option(args, "rounds"), 400, "rounds")
  const recordBytes = positiveInteger(option(args, "record-bytes"), 8192, "record-bytes")
  const files = positiveInteger(option(args, "files"), 1, "files")
  if (files > 8) throw new Error("--files: at most 8")
  const dir = fs.mkdtempSync(path.join(option(args, "dir") ?? os.tmpdir(), "tqlite-fsync-"))
  try {
    if (args.includes("--child")) {
      process.stdout.write(JSON.stringify(await measure(dir, rounds, recordBytes)) + "\n")
      return
    }
    process.stdout.write(`fdatasync after one ${recordBytes}-byte record, ${rounds} rounds, ${files} process(es) at once, load ${os.loadavg()[0]!.toFixed(1)} (ms)\n`)
    const results = files === 1 ? [await measure(dir, rounds, recordBytes)] : await Promise.all(Array.from({ length: files }, () => child(args, dir)))
    process.stdout.write("| mode | p10 | p50 | p90 | p99 | mean |\n|---|--:|--:|--:|--:|--:|\n")
    for (const mode of modes) {
      const samples = results.flatMap((result) => result[mode]).sort((a, b) => a - b)
      const at = (q: number) => samples[Math.min(samples.length - 1, Math.floor(samples.length * q))]!.toFixed(3)
      const mean = samples.reduce((sum, x) => sum + x, 0) / samples.length
      process.stdout.write(`| ${mode} | ${at(0.1)} | ${at(0.5)} | ${at(0.9)} | ${at(0.99)} | ${mean.toFixed(3)} |\n`)
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

function child(args: ReadonlyArray<string>, dir: string): Promise<Record<Mode, Array<number>>> {
  const self = fileURLToPath(new URL("./main.ts", import.meta.url))
  const rest = args.filter((arg, i) => arg !== "--files" && args[i - 1] !== "--files" && arg !== "--dir" && args[i - 1] !== "--dir")
  return new Promise((resolve, reject) => {
    const process_ = spawn(process.execPath, [...process.execArgv, self, "fsync", ...rest, "--dir", dir, "--child"], { stdio: ["ignore", "pipe", "inherit"] })
    let out = ""
    process_.stdout.on("data", (chunk: Buffer) => (out += chunk.toString()))
    process_.once("error", reject)
    process_.once("close", (code) => (code === 0 ? resolve(JSON.parse(out) as Record<Mode, Array<number>>) : reject(new Error(`fsync child exited ${code}`))))
  })
}

async function measure(dir: string, rounds: number, recordBytes: number): Promise<Record<Mode, Array<number>>> {
  const regionBytes = rounds * recordBytes
  const open = (name: string) => fs.openSync(path.join(dir, name), "w+")
  const fds: Record<Mode, number> = { append: open("append"), written: open("written"), fallocate: open("fallocate"), pool: open("pool") }
  for (const mode of ["written", "pool"] as const) {
    const zeros = Buffer.alloc(1024 * 1024)
    for (let at = 0; at < regionBytes; at += zeros.length) fs.writeSync(fds[mode], zeros, 0, Math.min(zeros.length, regionBytes - at), at)
    fs.fsyncSync(fds[mode])
  }
  await fallocate(path.join(dir, "fallocate"), regionBytes)
  fs.fsyncSync(fds.fallocate)
  const record = Buffer.alloc(recordBytes, 0x5a)
  const samples: Record<Mode, Array<number>> = { append: [], written: [], fallocate: [], pool: [] }
  for (let round = 0; round < rounds; round++) {
    for (const mode of modes) {
      const fd = fds[mode]
      fs.writeSync(fd, record, 0, recordBytes, round * recordBytes)
      const start = performance.now()
      if (mode === "pool") await new Promise<void>((resolve, reject) => fs.fdatasync(fd, (error) => (error === null ? resolve() : reject(error))))
      else fs.fdatasyncSync(fd)
      samples[mode].push(performance.now() - start)
    }
  }
  for (const fd of Object.values(fds)) fs.closeSync(fd)
  return samples
}

/** fallocate(1) (util-linux): node has no fallocate call. Without it the mode measures a plain
 * empty file, and says so. */
function fallocate(file: string, bytes: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const process_ = spawn("fallocate", ["-l", String(bytes), file], { stdio: "ignore" })
    process_.once("error", () => {
      process.stderr.write("fallocate(1) missing: the fallocate row is a plain growing file\n")
      resolve()
    })
    process_.once("close", (code) => (code === 0 ? resolve() : reject(new Error(`fallocate exited ${code}`))))
  })
}
