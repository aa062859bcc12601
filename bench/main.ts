// `npm run bench -- <name> [options]`: runs one benchmark. Each entry names a module in bench/;
// a module either exports `main(args)` or runs when imported (args are in process.argv too).
// Add a benchmark by adding a line here.

const benches: Record<string, { readonly module: string; readonly about: string }> = {
  fsync: { module: "./fsync.ts", about: "one fdatasync after a log-sized record: growing file vs preallocated (written once) vs fallocate'd region, blocking vs libuv's pool, turn by turn (--rounds, --record-bytes, --files N processes at once)" },
  log: { module: "./log.ts", about: "Raft log: append throughput vs a raw write+fdatasync loop; group commit vs fsync per entry" },
  raft: { module: "./raft.ts", about: "Raft actor stack: proposals/s of a 3-node in-process cluster on real disk vs one node (1/8/64 proposers)" },
  walFrames: { module: "./walFrames.ts", about: "SQLite page machinery: WAL capture overhead, checksum, page apply" },
  "versus-dqlite": { module: "./versusDqlite.ts", about: "dqload (go-dqlite driver) against 3 dqlite-demo and 3 tqlite processes, rows interleaved; ratio table, SVG plot, JSON (--seconds, --rows, --dqload, --plot, --json)" },
  "long-query": { module: "./longQuery.ts", about: "a long read on the leader: leader changes, SELECT 1 latency and kvwrite p99 vs baseline, pass/fail against issue 12 (--query-seconds, --seconds, --dqlite)" },
  embed: { module: "./embed.ts", about: "embedding API on a 3-node loopback cluster: inserts and selects via the leader (local), a follower (routed) and layerRemote (--writers 1,16 --routes local,routed,remote)" },
  "embed-reads": { module: "./embedReads.ts", about: "linearizable point reads on 3 embedded nodes: all through the leader vs each node reading its own copy; reads/s, p50, p99, ratio (--seconds 3 --readers 8 --writers 0)" },
  failover: { module: "./failover.ts", about: "availability: kill -9 of the leader (5×) and of the whole cluster (3×) under writes; the gap to the first acknowledged write (--kills, --restarts, --writers, --dqload PATH)" },
  opcount: { module: "./opcount.ts", about: "Effect operations and fiber resumptions per committed entry and per statement (writer+client vs the rest), 3 nodes in one process, 1/8 writers" },
  "gateway-cost": { module: "./gatewayCost.ts", about: "CPU per request of the gateway's request loop: LEADER and QUERY_SQL SELECT 1 one at a time from the raw test client in the same process, the node's metrics observing (--requests N); run in each build's worktree to compare. --replicated: INSERT + point SELECT on a one-node leader, the plain statement path against the fiber per request, alternating blocks in one process" },
  readpool: { module: "./readPool.ts", about: "one read through a reader worker thread vs the same statement on the main thread (µs per read, the cost of one hop)" },
  "snapshot-transfer": { module: "./snapshotTransfer.ts", about: "one snapshot streamed file to file between two TCP transports on loopback: MB/s vs the raw copy speed of this disk, event-loop delay, RSS growth (--mb N, default 200)" },
  "stream-out": { module: "./streamOut.ts", about: "what a large result costs the leader: one tqlite process (--cli BUNDLE, to compare builds), SELECT of a --mb MB table (time to first row, rows/s) and DUMP, the leader's peak RSS above rest for each" },
  scale: { module: "./scale.ts", about: "a database larger than memory: --gib N (0.1 for a quick run) in 3 tqlite processes; peak RSS per node, longest write stall while snapshots are taken, 4th-node join MB/s vs raw copy, restart time (--stall-seconds, --json, --keep)" },
  "write-trace": { module: "./writeTrace.ts", about: "latency breakdown of one request: 3 tqlite processes with TQLITE_TRACE stage stamps under dqload (--seconds, --workers 1, --workload kvwrite, --dqload PATH)" },
  sqlite: { module: "./sqlite.ts", about: "3-node replicated SQLite (real disk, fsync) vs plain better-sqlite3 with an fsync per transaction, 1/8/64 writers" }
}

const [name, ...args] = process.argv.slice(2)
const bench = name === undefined ? undefined : benches[name]
if (bench === undefined) {
  process.stderr.write(`usage: npm run bench -- <name> [options]\n\n`)
  for (const [key, value] of Object.entries(benches)) process.stderr.write(`  ${key.padEnd(12)} ${value.about}\n`)
  process.exitCode = 2
} else {
  const loaded = (await import(bench.module)) as { readonly main?: (args: ReadonlyArray<string>) => Promise<void> }
  if (typeof loaded.main === "function") await loaded.main(args)
}
