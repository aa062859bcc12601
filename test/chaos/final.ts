// The end of a chaos run: wait until every node has applied everything committed, stop the
// nodes, and compare their databases — a hash per table through each node's own copy (opened
// from a scratch copy of its files, never in place) and `PRAGMA integrity_check` on each.
import Database from "better-sqlite3"
import * as crypto from "node:crypto"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import type { ChaosNode } from "./cluster.ts"
import { sleep } from "./cluster.ts"
import type { Violation } from "./checkers.ts"

/** Polls every node's /metrics until all applied indexes are equal to the highest commit index,
 * twice in a row. Returns that index, or the last readings when `timeoutMs` passes. */
export async function waitConvergence(nodes: ReadonlyArray<ChaosNode>, timeoutMs: number): Promise<{ converged: boolean; readings: string }> {
  const deadline = Date.now() + timeoutMs
  let stableSince: number | null = null
  let readings = ""
  for (;;) {
    const indexes = await Promise.all(nodes.map((node) => node.indexes()))
    readings = nodes.map((node, i) => `node ${node.index}: ${indexes[i] === null ? "no answer" : `applied ${indexes[i]!.applied}, commit ${indexes[i]!.commit}`}`).join("; ")
    const commit = Math.max(...indexes.map((x) => x?.commit ?? 0))
    const same = indexes.every((x) => x !== null && x.applied === commit)
    if (same && stableSince === commit) return { converged: true, readings }
    stableSince = same ? commit : null
    if (Date.now() > deadline) return { converged: false, readings }
    await sleep(same ? 1_000 : 500)
  }
}

export interface NodeContent {
  readonly node: number
  readonly integrity: string
  /** Table name → hash of its rows in rowid order (the schema counts as table "sqlite_schema"). */
  readonly tables: ReadonlyMap<string, string>
  readonly rowCounts: ReadonlyMap<string, number>
}

/** Opens a scratch copy of the node's database (its WAL too: a leader's committed frames may
 * still be there) and hashes every table. The node must be stopped. */
export function readContent(node: ChaosNode, database: string): NodeContent {
  const source = path.join(node.dataDir, "sqlite", "databases")
  const scratch = fs.mkdtempSync(path.join(os.tmpdir(), `tqlite-chaos-n${node.index}-`))
  try {
    const main = `${database}.db`
    if (!fs.existsSync(path.join(source, main))) return { node: node.index, integrity: `no file ${path.join(source, main)}`, tables: new Map(), rowCounts: new Map() }
    for (const file of [main, `${main}-wal`]) {
      if (fs.existsSync(path.join(source, file))) fs.copyFileSync(path.join(source, file), path.join(scratch, file))
    }
    const db = new Database(path.join(scratch, main))
    try {
      const integrity = (db.pragma("integrity_check") as Array<{ integrity_check: string }>).map((row) => row.integrity_check).join("; ")
      const tables = new Map<string, string>()
      const rowCounts = new Map<string, number>()
      const names = (db.prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name").all() as Array<{ name: string }>).map((row) => row.name)
      tables.set("sqlite_schema", hash(db.prepare("SELECT type, name, tbl_name, sql FROM sqlite_schema ORDER BY name").raw().all()))
      for (const name of names) {
        const rows = db.prepare(`SELECT * FROM "${name.replaceAll("\"", "\"\"")}" ORDER BY rowid`).raw().all()
        tables.set(name, hash(rows))
        rowCounts.set(name, rows.length)
      }
      return { node: node.index, integrity, tables, rowCounts }
    } finally {
      db.close()
    }
  } finally {
    fs.rmSync(scratch, { recursive: true, force: true })
  }
}

function hash(rows: ReadonlyArray<unknown>): string {
  return crypto.createHash("sha256").update(JSON.stringify(rows, (_, value) => (typeof value === "bigint" ? value.toString() : value instanceof Uint8Array ? Buffer.from(value).toString("hex") : value))).digest("hex").slice(0, 16)
}

/** Violations: a node whose integrity check fails, and any table whose hash differs between nodes. */
export function compareContents(contents: ReadonlyArray<NodeContent>): ReadonlyArray<Violation> {
  const out: Array<Violation> = []
  for (const content of contents) {
    if (content.integrity !== "ok") out.push({ workload: "convergence", kind: "integrity", message: `node ${content.node}: integrity_check says ${content.integrity}` })
  }
  const first = contents[0]
  if (first === undefined) return out
  const names = new Set(contents.flatMap((c) => [...c.tables.keys()]))
  for (const name of names) {
    const hashes = contents.map((c) => `node ${c.node}: ${c.tables.get(name) ?? "missing"} (${c.rowCounts.get(name) ?? 0} rows)`)
    if (new Set(contents.map((c) => c.tables.get(name) ?? "missing")).size > 1) {
      out.push({ workload: "convergence", kind: "divergence", message: `table ${name} differs: ${hashes.join(", ")}` })
    }
  }
  return out
}
