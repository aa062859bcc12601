// The example service (examples/http-service) started in-process once: a one-node cluster
// behind the HTTP API, a note posted, read back in the list and by id, a bad body refused.
import { HttpServer } from "@effect/platform"
import { describe, expect, it } from "@effect/vitest"
import { Context, Effect, Layer } from "effect"
import { NotesService } from "../../examples/http-service/NotesService.ts"
import { loopbackAddress, tempDir } from "./cluster.ts"

const request = (url: string, init?: RequestInit) =>
  Effect.promise(async () => {
    const response = await fetch(url, { ...init, signal: AbortSignal.timeout(10_000) })
    return { status: response.status, body: await response.json() as unknown }
  })

describe("examples/http-service", () => {
  it.live("serves POST /notes and GET /notes, /notes/:id, /cluster", () =>
    Effect.scoped(Effect.gen(function*() {
      const address = yield* loopbackAddress
      const context = yield* Layer.build(NotesService({ address, join: [], dataDir: tempDir("tqlite-notes-"), httpHost: "127.0.0.1", httpPort: 0, tickMs: 20 }))
      const server = Context.get(context, HttpServer.HttpServer).address
      if (server._tag !== "TcpAddress") return expect.fail("the server has no TCP address")
      const base = `http://127.0.0.1:${server.port}`

      const created = yield* request(`${base}/notes`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ body: "hello tqlite" }) })
      expect(created.status).toBe(201)
      const note = created.body as { id: number; body: string; createdBy: string; createdAt: string }
      expect(note).toMatchObject({ body: "hello tqlite", createdBy: address })
      expect(Number.isNaN(Date.parse(note.createdAt))).toBe(false)

      expect(yield* request(`${base}/notes`)).toEqual({ status: 200, body: [note] })
      expect(yield* request(`${base}/notes/${note.id}`)).toEqual({ status: 200, body: note })
      expect((yield* request(`${base}/notes/${note.id + 1}`)).status).toBe(404)
      expect((yield* request(`${base}/notes`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ body: "" }) })).status).toBe(400)

      const cluster = yield* request(`${base}/cluster`)
      expect(cluster.body).toMatchObject({ role: "leader", leader: { address }, members: [{ address, role: "voter" }] })
    })), 30_000)
})
