// One dqload row against 3 `tqlite start` processes of any build, with the costs that depend less on
// the machine's load than ok/s does (docs/performance.md, "Write coalescing"):
//   node bench/rowCost.mjs DIST_DIR WORKLOAD WORKERS SECONDS [ENV=VALUE ...]
// DIST_DIR: a build's dist/ (so main and a branch, each built in its own worktree, alternate).
// Prints one JSON line: dqload's ok/s, p50, p99; per node CPU µs per op (/proc utime+stime) and
// write/read syscalls per op (/proc/PID/io syscw, syscr: sockets and files alike); for the leader's
// main thread the share of the wall time on a CPU and waiting in the run queue (schedstat), and its
// event-loop delay (bench/loopDelayProbe.mjs preloaded: the median and max of the per-second p99
// over the row, and the max); the machine's busy share and dqload's own CPU per op.
// ENV=VALUE pairs go to the nodes' environment; NODEARGS="--cpu-prof --cpu-prof-dir=D" profiles
// them (stopped with SIGTERM so the profiles are written); STRACE=1 prints `strace -c` of node 1
// for 3 s (STRACE=fd: its write/writev calls to /tmp/rowCost-strace.txt). $DQLOAD or
// /tmp/dqload/dqload. Scratch tool: not run by the tests.
import { spawn, spawnSync, execFileSync } from "node:child_process"
import fs from "node:fs"
import net from "node:net"
import os from "node:os"
import path from "node:path"
const [dist, workload, workersText, secondsText, ...flags] = process.argv.slice(2)
const seconds = Number(secondsText), workers = Number(workersText)
const env = Object.fromEntries(flags.filter((f) => f.includes("=")).map((f) => [f.slice(0, f.indexOf("=")), f.slice(f.indexOf("=") + 1)]))
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "cork-ab-"))
const ldDir = path.join(dir, "ld"); fs.mkdirSync(ldDir)
const freePort = () => new Promise((res) => { const s = net.createServer(); s.listen(0, "127.0.0.1", () => { const p = s.address().port; s.close(() => res(p)) }) })
const addrs = []; for (let i = 0; i < 3; i++) addrs.push(`127.0.0.1:${await freePort()}`)
const kids = []
const startNode = (i, join) => { const log = fs.openSync(path.join(dir, `t${i}.log`), "a")
  const c = spawn(process.execPath, ["--import", path.join(import.meta.dirname, "loopDelayProbe.mjs"), ...(env.NODEARGS ? env.NODEARGS.split(" ") : []), path.join(dist, "tqlite.mjs"), "start", "--address", addrs[i], "--data-dir", path.join(dir, `d${i}`), "--log-level", "warning", ...(join ? ["--join", join] : [])],
    { stdio: ["ignore", log, log], env: { ...process.env, ...env, LOOP_DELAY_DIR: ldDir } }); kids.push(c); return c }
const stop = () => { for (const k of kids) try { k.kill("SIGKILL") } catch {} }
process.on("exit", stop)
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))
const tq = (args) => spawnSync(process.execPath, [path.join(dist, "tqlite.mjs"), ...args], { encoding: "utf8", timeout: 10000 })
startNode(0, null)
const deadline = Date.now() + 40000
for (let i = 0; ; i++) { if (Date.now() > deadline) { stop(); throw new Error("no leader") } const r = tq(["cluster", "--servers", addrs[0], "--format", "json", "list"]); if (r.status === 0) break; await sleep(300) }
startNode(1, addrs[0]); startNode(2, addrs[0])
for (let i = 0; ; i++) { if (Date.now() > deadline + 20000) { stop(); throw new Error("no 3 voters") } const r = tq(["cluster", "--servers", addrs.join(","), "--format", "json", "list"]);
  if (r.status === 0) { const m = JSON.parse(r.stdout); const list = Array.isArray(m) ? m : m.members ?? m; if (list.filter((x) => x.role === "voter").length === 3) { break } } await sleep(300) }
// The leader: dqload's JSON names it.
const stat = (pid) => { const s = fs.readFileSync(`/proc/${pid}/stat`, "utf8"); const f = s.slice(s.lastIndexOf(")") + 2).split(" "); const io = Object.fromEntries(fs.readFileSync(`/proc/${pid}/io`, "utf8").trim().split("\n").map((l) => l.split(": ")).map(([k, v]) => [k, Number(v)]))
  const ss = fs.readFileSync(`/proc/${pid}/task/${pid}/schedstat`, "utf8").trim().split(" ").map(Number)
  return { cpu: (Number(f[11]) + Number(f[12])) * 1e6 / 100, syscw: io.syscw, syscr: io.syscr, mainOnCpuNs: ss[0], mainWaitNs: ss[1] } }
const before = kids.map((k) => stat(k.pid)), t0 = Date.now()
let straceOut = null
const dq = spawn(process.env.DQLOAD ?? "/tmp/dqload/dqload", ["-servers", addrs.join(","), "-workload", workload, "-workers", String(workers), "-duration", String(seconds), "-json"], { stdio: ["ignore", "pipe", "pipe"] })
if (env.STRACE) { await sleep(2500); const lp = kids[0].pid; /* founder usually leads */
  straceOut = env.STRACE === "fd"
    ? (spawnSync("timeout", ["-s", "INT", "2", "strace", "-f", "-e", "trace=write,writev", "-e", "signal=none", "-s", "0", "-o", "/tmp/rowCost-strace.txt", "-p", String(lp)], { encoding: "utf8" }), "see /tmp/rowCost-strace.txt")
    : spawnSync("timeout", ["-s", "INT", "3", "strace", "-f", "-c", "-p", String(lp)], { encoding: "utf8" }).stderr }
let dqCpuUs = 0; const dqPoll = setInterval(() => { try { const t = fs.readFileSync(`/proc/${dq.pid}/stat`, "utf8"); const f = t.slice(t.lastIndexOf(")") + 2).split(" "); dqCpuUs = (Number(f[11]) + Number(f[12])) * 1e6 / 100 } catch {} }, 200)
const machine = () => { const l = fs.readFileSync("/proc/stat", "utf8").split("\n")[0].split(/\s+/).slice(1).map(Number); return { busy: l[0] + l[1] + l[2] + l[5] + l[6] + l[7], total: l.reduce((a, b) => a + b, 0) } }
const m0 = machine()
let out = ""; dq.stdout.on("data", (d) => out += d); dq.stderr.on("data", () => {})
await new Promise((r) => dq.on("exit", r))
const t1 = Date.now(), after = kids.map((k) => stat(k.pid)); clearInterval(dqPoll); const m1 = machine()
const res = JSON.parse(out.trim().split("\n").filter((l) => l.startsWith("{")).at(-1))
const leaderIdx = addrs.indexOf(res.leader) >= 0 ? addrs.indexOf(res.leader) : 0
const ok = res.ok
const per = kids.map((k, i) => ({ cpu: (after[i].cpu - before[i].cpu) / ok, w: (after[i].syscw - before[i].syscw) / ok, r: (after[i].syscr - before[i].syscr) / ok }))
const ld = (pid) => { const f = path.join(ldDir, `${pid}.jsonl`); if (!fs.existsSync(f)) return null
  const rows = fs.readFileSync(f, "utf8").trim().split("\n").map((l) => JSON.parse(l)).filter((r) => r.t > t0 + 1500 && r.t <= t1)
  const p99s = rows.map((r) => r.p99).sort((a, b) => a - b); const maxes = rows.map((r) => r.max)
  return { p99med: p99s[Math.floor(p99s.length / 2)], p99max: p99s.at(-1), max: Math.max(...maxes) } }
const L = per[leaderIdx], F = per.filter((_, i) => i !== leaderIdx)
const l = ld(kids[leaderIdx].pid)
const load = os.loadavg()[0].toFixed(1)
console.log(JSON.stringify({ dist: dist.split("/").at(-2), workload, workers, load, machineBusyPct: Math.round(100 * (m1.busy - m0.busy) / (m1.total - m0.total)), dqloadCpuUsPerOp: Math.round(dqCpuUs / res.ok), okps: Math.round(res.ok_per_s), errors: res.errors, p50: res.p50_ms, p99: res.p99_ms,
  leader: { mainOnCpuPct: Math.round(100 * (after[leaderIdx].mainOnCpuNs - before[leaderIdx].mainOnCpuNs) / 1e6 / (t1 - t0)), mainRunqueueWaitPct: Math.round(100 * (after[leaderIdx].mainWaitNs - before[leaderIdx].mainWaitNs) / 1e6 / (t1 - t0)), cpuUsPerOp: Math.round(L.cpu), syscwPerOp: +L.w.toFixed(2), syscrPerOp: +L.r.toFixed(2), loopP99med: l?.p99med?.toFixed(1), loopP99max: l?.p99max?.toFixed(1), loopMax: l?.max?.toFixed(1) },
  followers: F.map((f) => ({ cpuUsPerOp: Math.round(f.cpu), syscwPerOp: +f.w.toFixed(2) })) }))
if (straceOut) console.log(straceOut.split("\n").slice(0, 25).join("\n"))
if (env.NODEARGS) { for (const k of kids) k.kill("SIGTERM"); await Promise.race([Promise.all(kids.map((k) => new Promise((r) => k.exitCode !== null ? r() : k.on("exit", r)))), sleep(20000)]) }
console.log("leaderPid", kids[leaderIdx].pid)
stop(); fs.rmSync(dir, { recursive: true, force: true }); process.exit(0)
