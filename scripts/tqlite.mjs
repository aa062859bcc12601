#!/usr/bin/env node
// The `tqlite` command (copied to dist/tqlite.mjs by `npm run bundle`): runs the bundled CLI,
// dist/tqlite.cjs, with V8's code cache, dist/tqlite.cjs.cache, written at build time. Compiling
// the ~2.5 MB bundle was a third of a start's CPU, and a whole-cluster restart waits for three
// starts on two cores (docs/performance.md). Node 20 has no module.enableCompileCache (22.1+);
// vm.Script's cachedData is its stable form, for a CommonJS script.
// The cache starts with the SHA-256 of the bundle it was made from: V8 itself checks only the
// source's length, and a stale cache of a same-length bundle would run old code. A cache that
// does not match, or that V8 rejects (another Node version or flags), only costs the compile.
import { createHash } from "node:crypto"
import fs from "node:fs"
import Module, { createRequire } from "node:module"
import path from "node:path"
import { fileURLToPath } from "node:url"
import vm from "node:vm"

const bundlePath = fileURLToPath(new URL("./tqlite.cjs", import.meta.url))
const cachePath = `${bundlePath}.cache`
const bytes = fs.readFileSync(bundlePath)
const digest = createHash("sha256").update(bytes).digest()
let cachedData
try {
  const cache = fs.readFileSync(cachePath)
  if (cache.subarray(0, digest.length).equals(digest)) cachedData = cache.subarray(digest.length)
} catch {
  // No cache: compile.
}
// esbuild writes ASCII (it escapes the rest), which latin1 decodes fastest; the shebang goes.
const source = bytes.toString("latin1").replace(/^#!.*/, "")
const script = new vm.Script(Module.wrap(source), { filename: bundlePath, cachedData })
if (process.env.TQLITE_WRITE_CODE_CACHE === "1") {
  // After the run, so the cache also holds the functions compiled while it ran.
  process.once("exit", () => fs.writeFileSync(cachePath, Buffer.concat([digest, script.createCachedData()])))
}
const module = { exports: {} }
script.runInThisContext().call(module.exports, module.exports, createRequire(bundlePath), module, bundlePath, path.dirname(bundlePath))
