// SQL text as the SQL surface needs it before any connection sees it: split into statements
// (dqlite's EXEC_SQL runs them one by one and PREPARE reports the tail offset), the number of
// parameters a statement takes, and what kind of statement it is, so a session can route it:
// transaction control to the writer's lease, reads to the pinned read view, writes to the writer
// queue, and statements that would break replication refused.
//
// Pure functions, no SQLite: a follower must answer "not leader" without opening a database.

export interface StatementText {
  /** The statement without its terminating semicolon, trimmed. */
  readonly sql: string
  /** Offset (in UTF-16 units of the input) just after the statement's semicolon, or the end. */
  readonly endOffset: number
}

type Token =
  | { readonly kind: "word"; readonly text: string; readonly start: number }
  | { readonly kind: "semicolon"; readonly start: number }
  | { readonly kind: "parameter"; readonly text: string; readonly start: number }
  | { readonly kind: "other"; readonly start: number }

/** Tokens of `sql` that matter here; strings, quoted identifiers and comments are skipped. */
function* tokens(sql: string): Generator<Token> {
  let at = 0
  const n = sql.length
  while (at < n) {
    const c = sql[at]!
    if (c === " " || c === "\t" || c === "\n" || c === "\r" || c === "\f") {
      at++
    } else if (c === "-" && sql[at + 1] === "-") {
      const end = sql.indexOf("\n", at + 2)
      at = end < 0 ? n : end + 1
    } else if (c === "/" && sql[at + 1] === "*") {
      const end = sql.indexOf("*/", at + 2)
      at = end < 0 ? n : end + 2
    } else if (c === "'" || c === '"' || c === "`") {
      const start = at
      at++
      while (at < n) {
        if (sql[at] === c) {
          if (sql[at + 1] === c) at += 2
          else break
        } else at++
      }
      at++
      yield { kind: "other", start }
    } else if (c === "[") {
      const start = at
      const end = sql.indexOf("]", at + 1)
      at = end < 0 ? n : end + 1
      yield { kind: "other", start }
    } else if (c === ";") {
      yield { kind: "semicolon", start: at }
      at++
    } else if (c === "?" || ((c === ":" || c === "@" || c === "$") && isWordChar(sql[at + 1]))) {
      const start = at
      at++
      while (at < n && (c === "?" ? /[0-9]/.test(sql[at]!) : isWordChar(sql[at]))) at++
      yield { kind: "parameter", text: sql.slice(start, at), start }
    } else if (isWordStart(c)) {
      const start = at
      while (at < n && isWordChar(sql[at])) at++
      yield { kind: "word", text: sql.slice(start, at).toUpperCase(), start }
    } else {
      yield { kind: "other", start: at }
      at++
    }
  }
}

function isWordStart(c: string | undefined): boolean {
  return c !== undefined && (/[A-Za-z_]/.test(c) || c.charCodeAt(0) > 127)
}

function isWordChar(c: string | undefined): boolean {
  return c !== undefined && (/[A-Za-z0-9_$]/.test(c) || c.charCodeAt(0) > 127)
}

/** The statements of `sql`, in order; empty ones (only whitespace, comments or semicolons) are
 * left out. A `;` inside CREATE TRIGGER … BEGIN … END ends the statement only after END, as
 * sqlite3_complete() decides. */
export function splitStatements(sql: string): Array<StatementText> {
  const out: Array<StatementText> = []
  let start = 0
  let words: Array<string> = []
  let previousWord = ""
  let inTrigger = false
  let meaningful = false
  const flush = (end: number, endOffset: number) => {
    const text = sql.slice(start, end).trim()
    if (meaningful && text.length > 0) out.push({ sql: text, endOffset })
    start = endOffset
    words = []
    previousWord = ""
    inTrigger = false
    meaningful = false
  }
  for (const token of tokens(sql)) {
    if (token.kind === "semicolon") {
      if (inTrigger && previousWord !== "END") {
        previousWord = ";"
        continue
      }
      flush(token.start, token.start + 1)
      continue
    }
    meaningful = true
    if (token.kind === "word") {
      if (words.length < 4) {
        words.push(token.text)
        if (isCreateTrigger(words)) inTrigger = true
      }
      previousWord = token.text
    } else {
      previousWord = ""
    }
  }
  flush(sql.length, sql.length)
  return out
}

function isCreateTrigger(words: ReadonlyArray<string>): boolean {
  if (words[0] !== "CREATE") return false
  if (words[1] === "TRIGGER") return true
  return (words[1] === "TEMP" || words[1] === "TEMPORARY") && words[2] === "TRIGGER"
}

/** sqlite3_bind_parameter_count: the largest parameter index used (`?` takes the next index,
 * `?NNN` sets it, each distinct `:name`, `@name`, `$name` takes the next index once). */
export function parameterCount(sql: string): number {
  let largest = 0
  const named = new Map<string, number>()
  for (const token of tokens(sql)) {
    if (token.kind !== "parameter") continue
    if (token.text === "?") {
      largest++
    } else if (token.text.startsWith("?")) {
      const index = Number(token.text.slice(1))
      if (Number.isSafeInteger(index) && index > 0) largest = Math.max(largest, index)
    } else if (!named.has(token.text)) {
      largest++
      named.set(token.text, largest)
    }
  }
  return largest
}

/** How the SQL surface treats a statement. */
export type StatementKind =
  /** BEGIN [DEFERRED | IMMEDIATE | EXCLUSIVE] [TRANSACTION]: starts an interactive transaction. */
  | { readonly _tag: "Begin" }
  /** COMMIT / END [TRANSACTION]. */
  | { readonly _tag: "Commit" }
  /** ROLLBACK [TRANSACTION] (not ROLLBACK TO, which is an ordinary statement inside one). */
  | { readonly _tag: "Rollback" }
  /** SAVEPOINT name: outside a transaction it starts one, like BEGIN. */
  | { readonly _tag: "Savepoint" }
  /** A statement that cannot run inside a transaction (VACUUM): the writer runs it alone. */
  | { readonly _tag: "Solo" }
  /** Refused: it would change how the database is stored or reach other files. */
  | { readonly _tag: "Forbidden"; readonly reason: string }
  /** Anything else: a read or a write, as SQLite's own sqlite3_stmt_readonly says. */
  | { readonly _tag: "Other" }

/** Connection settings tqlite owns (WAL mode, no automatic checkpoint, page size, cache size for
 * the transaction bound) or that would make the writer connection behave differently for
 * everybody sharing it. */
const forbiddenPragmas = new Set([
  "JOURNAL_MODE",
  "WAL_AUTOCHECKPOINT",
  "WAL_CHECKPOINT",
  "SYNCHRONOUS",
  "LOCKING_MODE",
  "PAGE_SIZE",
  "CACHE_SIZE",
  "CACHE_SPILL",
  "QUERY_ONLY",
  "MMAP_SIZE",
  "JOURNAL_SIZE_LIMIT",
  "TEMP_STORE_DIRECTORY",
  "DATA_STORE_DIRECTORY"
])

export function classifyStatement(sql: string): StatementKind {
  const words: Array<string> = []
  for (const token of tokens(sql)) {
    if (token.kind !== "word") {
      if (words.length === 0) continue
      break
    }
    words.push(token.text)
    if (words.length >= 3) break
  }
  const first = words[0]
  switch (first) {
    case "BEGIN":
      return { _tag: "Begin" }
    case "COMMIT":
    case "END":
      return { _tag: "Commit" }
    case "ROLLBACK":
      return words[1] === "TO" || (words[1] === "TRANSACTION" && words[2] === "TO") ? { _tag: "Other" } : { _tag: "Rollback" }
    case "SAVEPOINT":
      return { _tag: "Savepoint" }
    case "VACUUM":
      return /\bINTO\b/i.test(sql) ? { _tag: "Forbidden", reason: "VACUUM INTO writes a file outside the replicated database" } : { _tag: "Solo" }
    case "ATTACH":
    case "DETACH":
      return { _tag: "Forbidden", reason: `${first} reaches databases that are not replicated` }
    case "PRAGMA": {
      const name = pragmaName(sql)
      if (name !== null && forbiddenPragmas.has(name)) {
        return { _tag: "Forbidden", reason: `PRAGMA ${name.toLowerCase()} is managed by tqlite` }
      }
      return { _tag: "Other" }
    }
    default:
      return { _tag: "Other" }
  }
}

/** The pragma's name (upper case) in `PRAGMA [schema.]name …`, or null. */
function pragmaName(sql: string): string | null {
  const match = /^\s*PRAGMA\s+(?:["`[]?\w+["`\]]?\s*\.\s*)?["`[]?(\w+)/i.exec(stripLeadingComments(sql))
  return match?.[1]?.toUpperCase() ?? null
}

function stripLeadingComments(sql: string): string {
  let rest = sql
  for (;;) {
    const trimmed = rest.trimStart()
    if (trimmed.startsWith("--")) {
      const end = trimmed.indexOf("\n")
      rest = end < 0 ? "" : trimmed.slice(end + 1)
    } else if (trimmed.startsWith("/*")) {
      const end = trimmed.indexOf("*/")
      rest = end < 0 ? "" : trimmed.slice(end + 2)
    } else {
      return trimmed
    }
  }
}
