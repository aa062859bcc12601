// `tqlite start`: runs one node until a signal. With an empty data dir and no --join it founds a
// new cluster; with --join it asks a member to add it; with an existing data dir it rejoins.
import { Effect } from "effect"
import * as net from "node:net"
import * as path from "node:path"
import { parseArgs } from "node:util"
import { ListenFailed } from "../../net/peers/errors.ts"
import { formatAddress, parseAddress } from "../../net/peers/sockets.ts"
import { parseTlsFlags, tlsFlags } from "../common.ts"
import { reportFailure } from "../failureText.ts"
import * as SqlNode from "../../node/SqlNode.ts"
import { loggerLayer, logFormats, logLevelNames, parseLogFormat, parseLogLevel } from "../../observability/logging.ts"
import { Disk } from "../../storage/Disk.ts"
import type { Command } from "./command.ts"
import { usageError, version } from "./command.ts"
import { runUntilSignal } from "./signals.ts"

export const start: Command = {
  name: "start",
  usage: `tqlite start [--address HOST:PORT] [--data-dir DIR] [--join ADDR,...] [--join-timeout SECONDS] [--failure-domain N]
               [--voters N] [--standbys N] [--tls-cert FILE --tls-key FILE --tls-ca FILE]
               [--metrics HOST:PORT] [--log-format pretty|json|logfmt] [--log-level LEVEL] [--snapshot-every ENTRIES]
      runs a node: with an empty data dir and no --join it founds a new cluster; with --join it
      asks a member to add it (as a spare: the leader promotes it as needed), retrying for up to
      --join-timeout seconds (default 120) while no member answers; with an existing
      data dir it rejoins as the same node. SIGTERM/SIGINT shut down gracefully (a second one
      exits at once; docs/operations.md).
      --metrics serves Prometheus /metrics and /health over HTTP (docs/observability.md).
      LEVEL: all, trace, debug, info, warning, error, fatal or none.
      --snapshot-every: take a snapshot (and compact the log) after this many applied entries
      (default 10000).
      Defaults: --address 127.0.0.1:9001 --data-dir .tqlite/<port> --failure-domain 0
      --voters 3 --standbys 3 --log-format pretty --log-level info`,
  run: (args) => {
    const { values } = parseArgs({
      args: [...args],
      options: {
        address: { type: "string" },
        "data-dir": { type: "string" },
        join: { type: "string" },
        "join-timeout": { type: "string" },
        "failure-domain": { type: "string" },
        voters: { type: "string" },
        standbys: { type: "string" },
        ...tlsFlags,
        metrics: { type: "string" },
        "log-format": { type: "string" },
        "log-level": { type: "string" },
        "snapshot-every": { type: "string" }
      }
    })
    const logFormat = parseLogFormat(values["log-format"] ?? "pretty")
    if (logFormat === null) return usageError("start", `--log-format must be one of ${logFormats.join(", ")}`)
    const logLevel = parseLogLevel(values["log-level"] ?? "info")
    if (logLevel === null) return usageError("start", `--log-level must be one of ${logLevelNames.join(", ")}`)
    const metrics = values.metrics
    if (metrics !== undefined && !isAddress(metrics)) return usageError("start", `--metrics wants HOST:PORT, not "${metrics}"`)
    const parsedTls = parseTlsFlags(values)
    if ("error" in parsedTls) return usageError("start", parsedTls.error)
    const tls = parsedTls.tls ?? undefined
    const address = values.address ?? "127.0.0.1:9001"
    const port = address.split(":").at(-1) ?? "9001"
    const dataDir = path.resolve(values["data-dir"] ?? path.join(".tqlite", port))
    const failureDomain = parseUint64(values["failure-domain"] ?? "0")
    if (failureDomain === null) return usageError("start", "--failure-domain must be an integer from 0 to 2^64-1")
    const voters = Number(values.voters ?? 3)
    if (!Number.isSafeInteger(voters) || voters < 1 || voters % 2 === 0) return usageError("start", "--voters must be an odd number, 1 or more")
    const standbys = Number(values.standbys ?? 3)
    if (!Number.isSafeInteger(standbys) || standbys < 0) return usageError("start", "--standbys must be 0 or more")
    const join = (values.join ?? "").split(",").map((s) => s.trim()).filter((s) => s.length > 0)
    const joinTimeoutSeconds = Number(values["join-timeout"] ?? SqlNode.joinTimeoutMsDefault / 1000)
    if (!Number.isFinite(joinTimeoutSeconds) || joinTimeoutSeconds < 0 || joinTimeoutSeconds > 86_400) return usageError("start", "--join-timeout must be a number of seconds from 0 to 86400")
    const snapshotEvery = values["snapshot-every"] === undefined ? undefined : Number(values["snapshot-every"])
    if (snapshotEvery !== undefined && (!Number.isSafeInteger(snapshotEvery) || snapshotEvery < 1)) return usageError("start", "--snapshot-every must be a number of entries, 1 or more")
    if (!isAddress(address)) return usageError("start", `--address wants HOST:PORT (port 1-65535), not "${address}"`)
    const program = Effect.gen(function*() {
      // Before anything is written to the data dir: a first start on a taken port must not leave
      // an identity (and a log) that binds the data dir to that address.
      yield* probeListen(address)
      const { node, metricsAddress } = yield* SqlNode.start({
        dataDir,
        address,
        join,
        joinTimeoutMs: joinTimeoutSeconds * 1000,
        failureDomain,
        roles: { targets: { voters, standbys } },
        ...(snapshotEvery !== undefined ? { storage: { snapshotEveryEntries: snapshotEvery } } : {}),
        ...(tls !== undefined ? { tls } : {}),
        ...(metrics !== undefined ? { metrics } : {})
      })
      const self = node.identity
      // With TLS on, the hints carry the flags each shell needs (dqlite's takes -c/-k).
      const tlsHint = tls === undefined
        ? { dqlite: "", tqlite: "" }
        : { dqlite: ` -c ${values["tls-cert"]} -k ${values["tls-key"]}`, tqlite: ` --tls-cert ${values["tls-cert"]} --tls-key ${values["tls-key"]} --tls-ca ${values["tls-ca"]}` }
      // How long the start took (a whole-cluster restart waits for it; docs/performance.md).
      const cpu = process.cpuUsage()
      const startup = { startup_ms: String(Math.round(process.uptime() * 1000)), startup_cpu_ms: String(Math.round((cpu.user + cpu.system) / 1000)) }
      if (logFormat === "json") {
        // Machine-read output stays one JSON object per line.
        yield* Effect.logInfo(`tqlite ${version} started`).pipe(
          Effect.annotateLogs({ node_id: String(self.nodeId), cluster_id: self.clusterId, address: self.address, data_dir: dataDir, metrics: metricsAddress ?? "", ...startup })
        )
      } else {
        yield* Effect.logDebug(`started ${startup.startup_ms} ms after the process began (${startup.startup_cpu_ms} ms of CPU)`)
        process.stdout.write(
          `tqlite ${version}: node ${self.nodeId} of cluster ${self.clusterId}\n` +
            `  listening on ${self.address} (dqlite wire protocol v1 and peers), data in ${dataDir}\n` +
            (metricsAddress !== null ? `  metrics:   http://${metricsAddress}/metrics and /health\n` : "") +
            `  connect:   dqlite -s ${self.address}${tlsHint.dqlite} mydb\n` +
            `             tqlite shell --servers ${self.address}${tlsHint.tqlite} mydb\n` +
            `  add nodes: npx tqlite start --address ${nextAddress(self.address)} --join ${self.address}${tlsHint.tqlite}\n`
        )
      }
      // An actor that gave up ends the node on purpose: the scope closes (a graceful shutdown as
      // far as it goes) and the process exits 1, rather than serving on as a zombie.
      yield* node.raft.failed
    })
    const main = Effect.scoped(program).pipe(
      // Reported here, inside the chosen logger, rather than by runMain's default one.
      reportFailure("start", dataDir),
      Effect.provide(Disk.layerNode),
      Effect.provide(loggerLayer(logFormat, logLevel))
    )
    runUntilSignal(main, { disableErrorReporting: true, disablePrettyLogger: true })
  }
}

/** A dqlite failure domain: an unsigned 64-bit integer, in decimal. */
function parseUint64(text: string): bigint | null {
  if (!/^\d{1,20}$/.test(text)) return null
  const value = BigInt(text)
  return value < 2n ** 64n ? value : null
}

/** The banner's example address for a second node: this node's host, the next port. */
function nextAddress(address: string): string {
  const { host, port } = parseAddress(address)
  return formatAddress(host, port + 1)
}

/** Binds `address` and lets it go at once: fails with ListenFailed if it cannot be listened on. */
const probeListen = (address: string): Effect.Effect<void, ListenFailed> =>
  Effect.async<void, ListenFailed>((resume) => {
    const { host, port } = parseAddress(address)
    const server = net.createServer()
    server.once("error", (cause) => resume(Effect.fail(new ListenFailed({ address, cause }))))
    server.listen({ host, port, exclusive: true }, () => server.close(() => resume(Effect.void)))
  })

function isAddress(text: string): boolean {
  try {
    parseAddress(text)
    return true
  } catch {
    return false
  }
}
