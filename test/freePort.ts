// A loopback port nothing listens on right now, for tests and benchmarks that start servers.
import * as net from "node:net"
import { Effect } from "effect"

export const freePort: Effect.Effect<number> = Effect.async<number>((resume) => {
  const server = net.createServer()
  server.listen(0, "127.0.0.1", () => {
    const port = (server.address() as net.AddressInfo).port
    server.close(() => resume(Effect.succeed(port)))
  })
})

/** The same, for code outside Effect. */
export const freePortNow = (): Promise<number> => Effect.runPromise(freePort)
