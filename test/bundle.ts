// The bundled CLI (dist/tqlite.mjs, what `npx tqlite` and `npm start` run) for tests and
// benchmarks that start real processes. A process started from the bundle is up in ~0.3 s of CPU;
// through tsx it compiled every source file first, ~2 s of CPU per process, which on a 2-core
// machine made the process tests pay more for start-ups than for what they test. vitest's global
// set-up (test/globalSetup.ts) makes sure the bundle is as new as the sources before any test
// runs, so a test never runs stale code.
import { spawnSync } from "node:child_process"
import fs from "node:fs"
import path from "node:path"

const root = path.resolve(import.meta.dirname, "..")

/** The launcher `npm run build` writes. */
export const cliBundle = path.join(root, "dist/tqlite.mjs")

/** Node arguments that run the `tqlite` CLI: `[process.execPath, ...cliArgs, "start", …]`. */
export const cliArgs: ReadonlyArray<string> = [cliBundle]

/** What the bundle is built from: newer files here mean a stale bundle. */
const sources = ["src", "scripts", "package.json", "tsconfig.build.json"].map((p) => path.join(root, p))

function newestMtimeMs(file: string): number {
  const stat = fs.statSync(file)
  if (!stat.isDirectory()) return stat.mtimeMs
  let newest = stat.mtimeMs
  for (const entry of fs.readdirSync(file)) newest = Math.max(newest, newestMtimeMs(path.join(file, entry)))
  return newest
}

/** Why the bundle must be built, or null when it is as new as every source. */
export function bundleStaleness(): string | null {
  if (!fs.existsSync(cliBundle)) return `${path.relative(root, cliBundle)} missing`
  const built = fs.statSync(cliBundle).mtimeMs
  const newest = Math.max(...sources.filter((p) => fs.existsSync(p)).map(newestMtimeMs))
  return newest > built ? `${path.relative(root, cliBundle)} older than the sources` : null
}

/** `npm run build` when the bundle is missing or stale; throws with the build's output if it fails. */
export function ensureBundle(log: (line: string) => void): void {
  const why = bundleStaleness()
  if (why === null) return
  log(`${why}: npm run build …`)
  const result = spawnSync("npm", ["run", "build"], { cwd: root, stdio: ["ignore", "pipe", "pipe"], timeout: 10 * 60_000 })
  if (result.status !== 0) throw new Error(`npm run build failed: ${String(result.stderr).slice(-2000)}${String(result.stdout).slice(-2000)}`)
}
