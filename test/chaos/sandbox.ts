// The chaos suite's private world: the runner re-executes itself under `unshare --net --mount`,
// so every network namespace, bridge, route and tmpfs it makes lives in namespaces of its own
// and vanishes with it — even when it is killed: it is process 1 of its own PID namespace, so
// the kernel kills every node it started when it exits. Inside: one network namespace per node
// (`chaos-N`, address 10.213.0.N on eth0), veth pairs on a bridge in the runner's namespace
// (10.213.0.254: the clients), and one tmpfs per node's data directory (so a disk can fill up).
// Partitions are blackhole routes in the nodes' namespaces.
import { execFile, spawn } from "node:child_process"
import * as fs from "node:fs"
import { promisify } from "node:util"

const run = promisify(execFile)

export const sandboxEnv = "TQLITE_CHAOS_SANDBOX"
export const subnet = "10.213.0"
export const clientAddress = `${subnet}.254`
const bridge = "chaosbr"

export function nodeNetns(index: number): string {
  return `chaos-${index}`
}

export function nodeIp(index: number): string {
  return `${subnet}.${index}`
}

/** Inside the sandbox already? Otherwise runs this same command in one and exits with its code. */
export function ensureSandbox(): boolean {
  if (process.env[sandboxEnv] === "1") return true
  if (process.getuid?.() !== 0) {
    process.stderr.write("chaos: needs root (network namespaces, tmpfs mounts): run as root or in a root container\n")
    process.exit(2)
  }
  const child = spawn("unshare", ["--net", "--mount", "--propagation", "private", "--pid", "--fork", "--kill-child", "--mount-proc", "--", process.execPath, ...process.execArgv, ...process.argv.slice(1)], {
    stdio: "inherit",
    env: { ...process.env, [sandboxEnv]: "1" }
  })
  // The terminal's Ctrl-C reaches the child too (same process group); pass on a kill from elsewhere.
  for (const signal of ["SIGTERM", "SIGHUP"] as const) process.on(signal, () => child.kill(signal))
  process.on("SIGINT", () => {})
  child.on("exit", (code, signal) => process.exit(code ?? (signal !== null ? 128 + 15 : 1)))
  return false
}

async function ip(...args: ReadonlyArray<string>): Promise<void> {
  await run("ip", [...args])
}

/** Builds the bridge and one namespace per node (1..count). */
export async function makeNetwork(count: number): Promise<void> {
  // A tmpfs of our own over /run/netns: the named namespaces stay in this mount namespace.
  fs.mkdirSync("/run/netns", { recursive: true })
  await run("mount", ["-t", "tmpfs", "-o", "size=1m", "chaos-netns", "/run/netns"])
  await ip("link", "set", "lo", "up")
  await ip("link", "add", bridge, "type", "bridge")
  await ip("addr", "add", `${clientAddress}/24`, "dev", bridge)
  await ip("link", "set", bridge, "up")
  for (let index = 1; index <= count; index++) {
    const netns = nodeNetns(index)
    await ip("netns", "add", netns)
    await ip("link", "add", `veth${index}`, "type", "veth", "peer", "name", "eth0", "netns", netns)
    await ip("link", "set", `veth${index}`, "master", bridge, "up")
    await ip("-n", netns, "addr", "add", `${nodeIp(index)}/24`, "dev", "eth0")
    await ip("-n", netns, "link", "set", "eth0", "up")
    await ip("-n", netns, "link", "set", "lo", "up")
  }
}

/** Removes what makeNetwork made (best effort: the namespaces die with the sandbox anyway). */
export async function removeNetwork(count: number): Promise<void> {
  for (let index = 1; index <= count; index++) await ip("netns", "del", nodeNetns(index)).catch(() => {})
  await ip("link", "del", bridge).catch(() => {})
  await run("umount", ["/run/netns"]).catch(() => {})
}

/** The partition in force: pairs of nodes (1-based) that cannot reach each other. */
const cuts = new Set<string>()

/** Cuts every link between a node of `side` and a node of `other`, both ways. */
export async function cut(side: ReadonlyArray<number>, other: ReadonlyArray<number>): Promise<void> {
  for (const a of side) {
    for (const b of other) {
      for (const [from, to] of [[a, b], [b, a]] as const) {
        const key = `${from}>${to}`
        if (cuts.has(key)) continue
        await ip("-n", nodeNetns(from), "route", "add", "blackhole", `${nodeIp(to)}/32`)
        cuts.add(key)
      }
    }
  }
}

export async function healNetwork(): Promise<void> {
  for (const key of [...cuts]) {
    const [from, to] = key.split(">").map(Number) as [number, number]
    await ip("-n", nodeNetns(from), "route", "del", "blackhole", `${nodeIp(to)}/32`)
    cuts.delete(key)
  }
}

export async function mountTmpfs(dir: string, sizeMb: number): Promise<void> {
  fs.mkdirSync(dir, { recursive: true })
  await run("mount", ["-t", "tmpfs", "-o", `size=${sizeMb}m`, "chaos-data", dir])
}

export async function unmount(dir: string): Promise<void> {
  await run("umount", ["-l", dir]).catch(() => {})
}

/** Fills the file system holding `dir` with `file` until ENOSPC (MiB writes, then 4 KiB ones). */
export async function fillDisk(file: string): Promise<number> {
  const handle = await fs.promises.open(file, "w")
  let written = 0
  try {
    for (const chunk of [Buffer.alloc(1 << 20, 0xcc), Buffer.alloc(4096, 0xcc)]) {
      for (;;) {
        try {
          const { bytesWritten } = await handle.write(chunk)
          written += bytesWritten
          if (bytesWritten < chunk.length) break
        } catch (error) {
          if ((error as NodeJS.ErrnoException).code === "ENOSPC") break
          throw error
        }
      }
    }
  } finally {
    await handle.close()
  }
  return written
}
