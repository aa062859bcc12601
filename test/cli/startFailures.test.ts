// `tqlite start` failures a new user meets: one line saying why and what to do, exit ≠ 0, no
// stack trace, and nothing written to the data dir by a start that could not listen.
import * as fs from "node:fs"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { Cause, Effect } from "effect"
import { describe, expect, it } from "vitest"
import { describe as describeError, failureLine } from "../../src/cli/failureText.ts"
import { ListenFailed } from "../../src/net/peers/errors.ts"
import { IdentityMismatch, loadOrCreateIdentity } from "../../src/node/identity.ts"
import { LogCorrupted } from "../../src/storage/errors.ts"
import { Disk } from "../../src/storage/Disk.ts"
import { freePort } from "../freePort.ts"
import { tqlite } from "./harness.ts"

const scratch = () => fs.mkdtempSync(path.join(os.tmpdir(), "tqlite-start-fail-"))

/** Stack-trace lines ("    at f (file:1:2)") that must not reach the operator. */
const stackLine = /^\s+at .+/m

describe("tqlite start failures", () => {
  it("the failure line names the reason in the library's words and the remedy", () => {
    const mismatch = new IdentityMismatch({ file: "/d/tqlite-node", detail: "this data directory belongs to the node at 127.0.0.1:9001, not 127.0.0.1:9002" })
    expect(failureLine(Cause.fail(mismatch), "/d")).toBe(
      "this data directory belongs to the node at 127.0.0.1:9001, not 127.0.0.1:9002 — start it with the address it was created with, or use another --data-dir"
    )
    const corrupt = new LogCorrupted({ file: "/d/log/seg-1", offset: 4096, reason: "checksum mismatch" })
    expect(failureLine(Cause.fail(corrupt), "/d")).toBe("log corrupted: /d/log/seg-1 at byte 4096: checksum mismatch — run: tqlite repair --data-dir /d")
    const inUse = new ListenFailed({ address: "127.0.0.1:9001", cause: Object.assign(new Error("listen EADDRINUSE"), { code: "EADDRINUSE" }) })
    expect(inUse.message).toMatch(/address is in use/)
    // Errors without a message of their own fall back to detail, then to their cause.
    expect(describeError({ _tag: "Thing", cause: new Error("inner words") })).toBe("Thing: inner words")
    expect(failureLine(Cause.die(new Error("boom")), "/d")).toBe("boom")
  })

  it("a data dir started under another address: one line, exit 1, no stack", async () => {
    const dataDir = path.join(scratch(), "n1")
    const [first, second] = [await Effect.runPromise(freePort), await Effect.runPromise(freePort)]
    await Effect.runPromise(loadOrCreateIdentity(dataDir, `127.0.0.1:${first}`, () => ({ nodeId: 7, clusterId: "c" })).pipe(Effect.provide(Disk.layerNode)))
    const run = await tqlite(["start", "--address", `127.0.0.1:${second}`, "--data-dir", dataDir, "--log-format", "json"])
    expect(run.code).toBe(1)
    expect(run.err).toBe(
      `tqlite start: this data directory belongs to the node at 127.0.0.1:${first}, not 127.0.0.1:${second} — start it with the address it was created with, or use another --data-dir\n`
    )
    expect(run.out).not.toMatch(stackLine)
  }, 60_000)

  it("a taken port or a bad address fails before the data dir is written", async () => {
    const base = scratch()
    const holder = net.createServer()
    const port = await new Promise<number>((resolve) => holder.listen(0, "127.0.0.1", () => resolve((holder.address() as net.AddressInfo).port)))
    try {
      const taken = await tqlite(["start", "--address", `127.0.0.1:${port}`, "--data-dir", path.join(base, "taken")])
      expect(taken.code).toBe(1)
      expect(taken.err).toMatch(new RegExp(`^tqlite start: cannot listen on 127\\.0\\.0\\.1:${port}: the address is in use.* — choose another --address`))
      expect(taken.err).not.toMatch(stackLine)
      expect(fs.existsSync(path.join(base, "taken"))).toBe(false)
    } finally {
      holder.close()
    }
    const bad = await tqlite(["start", "--address", "127.0.0.1:99999", "--data-dir", path.join(base, "bad")])
    expect(bad.code).toBe(2)
    expect(bad.err).toMatch(/--address wants HOST:PORT/)
    expect(fs.existsSync(path.join(base, "bad"))).toBe(false)
  }, 60_000)

  it("tqlite demo on a taken port: one line, exit 1, no stack", async () => {
    const holder = net.createServer()
    const port = await new Promise<number>((resolve) => holder.listen(0, "127.0.0.1", () => resolve((holder.address() as net.AddressInfo).port)))
    try {
      const run = await tqlite(["demo", "--nodes", "1", "--base-port", String(port), "--data-dir", path.join(scratch(), "demo")])
      expect(run.code).toBe(1)
      expect(run.err).toMatch(new RegExp(`^tqlite demo: cannot listen on 127\\.0\\.0\\.1:${port}: the address is in use.*\n$`))
      expect(run.err).not.toMatch(stackLine)
    } finally {
      holder.close()
    }
  }, 60_000)
})
