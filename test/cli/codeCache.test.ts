// The launcher (scripts/tqlite.mjs, copied to dist/tqlite.mjs) runs the CommonJS bundle with V8's
// code cache. V8 checks only the source's length against a cache, so a same-length change to
// the bundle would run the old code; the launcher keys the cache by the bundle's SHA-256. Shown
// on a tiny bundle in a scratch directory: the changed bundle runs its new code, and the same
// cache with the digest forged to match (the launcher's check defeated) runs the old one.
import { execFileSync } from "node:child_process"
import { createHash } from "node:crypto"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, describe, expect, it } from "vitest"

const root = path.resolve(import.meta.dirname, "../..")
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tqlite-code-cache-"))
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }))

const bundle = path.join(dir, "tqlite.cjs")
const cache = `${bundle}.cache`
// A function compiled while the bundle runs, so its bytecode is in the cache.
const source = (word: string) => `#!/usr/bin/env node\n"use strict";\nfunction say() { return "${word}" }\nprocess.stdout.write(say() + " " + typeof require + " " + path() + "\\n")\nfunction path() { return require("node:path").basename(__filename) }\n`
const run = (env: Record<string, string> = {}) =>
  execFileSync(process.execPath, [path.join(dir, "tqlite.mjs")], { env: { ...process.env, ...env }, encoding: "utf8" }).trim()

describe("the launcher's code cache", () => {
  it("runs the bundle, writes a cache keyed by its digest, and never runs a stale cache of a same-length bundle", () => {
    fs.copyFileSync(path.join(root, "scripts/tqlite.mjs"), path.join(dir, "tqlite.mjs"))
    fs.writeFileSync(bundle, source("alpha"))
    expect(run({ TQLITE_WRITE_CODE_CACHE: "1" })).toBe("alpha function tqlite.cjs")
    const written = fs.readFileSync(cache)
    expect(written.subarray(0, 32).equals(createHash("sha256").update(fs.readFileSync(bundle)).digest())).toBe(true)
    expect(written.byteLength).toBeGreaterThan(32)
    expect(run()).toBe("alpha function tqlite.cjs")

    // Same length, other code: the digest differs, the cache is not used.
    fs.writeFileSync(bundle, source("gamma"))
    expect(fs.statSync(bundle).size).toBe(Buffer.byteLength(source("alpha")))
    expect(run()).toBe("gamma function tqlite.cjs")

    // The mutation: the stale cache under a forged digest. V8 accepts it and runs the old
    // function, which is what the digest check exists to prevent.
    fs.writeFileSync(cache, Buffer.concat([createHash("sha256").update(fs.readFileSync(bundle)).digest(), written.subarray(32)]))
    expect(run()).toBe("alpha function tqlite.cjs")
  })
})
