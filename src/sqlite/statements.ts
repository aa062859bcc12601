// SQL text without SQLite: the one place tqlite reads SQL itself (the gateway, the SQL surface,
// the embedded API, the shell and the client all use it). What it decides:
// - where each statement of a text ends (dqlite's EXEC_SQL and QUERY_SQL run them one by one,
//   PREPARE reports the tail offset, the shell knows when a statement is complete);
// - how SQLite numbers a statement's parameters, so values bind by position as dqlite binds them;
// - what kind of statement it is, so a session can route it: transaction control to the writer's
//   lease, reads to the pinned read view, writes to the writer queue, and statements that would
//   break replication refused.
// The statement text handed to SQLite is always the client's own, from its first token through
// its `;` (`SELECT 1 +;` must fail as SQLite says: `near ";": syntax error`).
//
// better-sqlite3 exposes neither sqlite3_complete nor a prepare tail, so splitting follows the
// rules SQLite's completeness check documents:
// - a statement ends at a `;` outside string literals, quoted identifiers and comments;
// - inside `CREATE [TEMP|TEMPORARY] TRIGGER … BEGIN … END` (optionally after EXPLAIN), the `;`s
//   of the body do not end it: only a `;` that follows `END` after a `;` does;
// - whitespace, `-- …` and `/* … */` comments and lone `;`s are not statements.
// Pure functions: a follower must answer "not leader" without opening a database. Offsets are
// indices in the JS string (UTF-16 code units) unless named `Bytes`.

/** One statement of a SQL text: `text` is `sql.slice(start, end)`, from its first token through
 * its terminating `;` when it has one. */
export interface StatementSpan {
  readonly start: number
  readonly end: number
  readonly text: string
}

type Token =
  | { readonly kind: "space" }
  | { readonly kind: "semicolon" }
  | { readonly kind: "word"; readonly upper: string }
  | { readonly kind: "other" }

type State = "start" | "normal" | "explain" | "create" | "trigger" | "triggerSemicolon" | "triggerEnd"

const identifierChar = /[A-Za-z0-9_$\u0080-\uffff]/
const whitespace = /[\s]/

/** The end index (exclusive) of the token starting at `at`, and what it is. */
function scanToken(sql: string, at: number): { readonly end: number; readonly token: Token } {
  const char = sql[at] ?? ""
  const next = sql[at + 1] ?? ""
  if (whitespace.test(char)) {
    let end = at + 1
    while (end < sql.length && whitespace.test(sql[end] ?? "")) end++
    return { end, token: { kind: "space" } }
  }
  if (char === "-" && next === "-") {
    const newline = sql.indexOf("\n", at + 2)
    return { end: newline === -1 ? sql.length : newline + 1, token: { kind: "space" } }
  }
  if (char === "/" && next === "*") {
    const close = sql.indexOf("*/", at + 2)
    return { end: close === -1 ? sql.length : close + 2, token: { kind: "space" } }
  }
  if (char === ";") return { end: at + 1, token: { kind: "semicolon" } }
  if (char === "'" || char === "\"" || char === "`") return { end: quotedEnd(sql, at, char), token: { kind: "other" } }
  if (char === "[") {
    const close = sql.indexOf("]", at + 1)
    return { end: close === -1 ? sql.length : close + 1, token: { kind: "other" } }
  }
  if (identifierChar.test(char)) {
    let end = at + 1
    while (end < sql.length && identifierChar.test(sql[end] ?? "")) end++
    return { end, token: { kind: "word", upper: sql.slice(at, end).toUpperCase() } }
  }
  return { end: at + 1, token: { kind: "other" } }
}

/** End of a literal opened by `quote` at `at`; a doubled quote is an escaped one. */
function quotedEnd(sql: string, at: number, quote: string): number {
  let index = at + 1
  while (index < sql.length) {
    if (sql[index] === quote) {
      if (sql[index + 1] === quote) {
        index += 2
        continue
      }
      return index + 1
    }
    index++
  }
  return sql.length
}

/** The words of `sql` (upper case) outside literals and comments, in order. */
function* words(sql: string): Generator<string> {
  let at = 0
  while (at < sql.length) {
    const { end, token } = scanToken(sql, at)
    if (token.kind === "word") yield token.upper
    at = end
  }
}

function transition(state: State, token: Token): State | "complete" {
  const word = token.kind === "word" ? token.upper : null
  switch (state) {
    case "start":
      if (token.kind === "space" || token.kind === "semicolon") return "start"
      if (word === "EXPLAIN") return "explain"
      if (word === "CREATE") return "create"
      return "normal"
    case "normal":
      return token.kind === "semicolon" ? "complete" : "normal"
    case "explain":
      if (token.kind === "semicolon") return "complete"
      if (token.kind === "space") return "explain"
      return word === "CREATE" ? "create" : "normal"
    case "create":
      if (token.kind === "semicolon") return "complete"
      if (token.kind === "space" || word === "TEMP" || word === "TEMPORARY") return "create"
      return word === "TRIGGER" ? "trigger" : "normal"
    case "trigger":
      return token.kind === "semicolon" ? "triggerSemicolon" : "trigger"
    case "triggerSemicolon":
      if (token.kind === "space" || token.kind === "semicolon") return "triggerSemicolon"
      return word === "END" ? "triggerEnd" : "trigger"
    case "triggerEnd":
      if (token.kind === "semicolon") return "complete"
      return token.kind === "space" ? "triggerEnd" : "trigger"
  }
}

/** The non-empty statements of `sql`, in order, found as they are scanned. A last statement
 * without `;` is included. */
function* statementSpans(sql: string): Generator<StatementSpan> {
  let state: State = "start"
  let start = -1
  let at = 0
  while (at < sql.length) {
    const { end, token } = scanToken(sql, at)
    const nextState = transition(state, token)
    if (state === "start" && nextState !== "start") start = at
    if (nextState === "complete") {
      yield { start, end, text: sql.slice(start, end) }
      state = "start"
    } else {
      state = nextState
    }
    at = end
  }
  if (state !== "start") yield { start, end: sql.length, text: sql.slice(start) }
}

/** The non-empty statements of `sql`, in order. A last statement without `;` is included. */
export function splitStatements(sql: string): Array<StatementSpan> {
  return [...statementSpans(sql)]
}

/** The first statement of `sql` and where the tail after it starts, or `null` when the text has
 * no statement at all (only whitespace, comments and `;`). Scans no further than that statement. */
export function firstStatement(sql: string): { readonly statement: StatementSpan; readonly tail: string } | null {
  const first = statementSpans(sql).next()
  if (first.done === true) return null
  return { statement: first.value, tail: sql.slice(first.value.end) }
}

/** Whether `sql` holds no statement: only whitespace, comments and `;`. */
export function isBlankSql(sql: string): boolean {
  return firstStatement(sql) === null
}

/** Whether `text` ends with a complete statement: one more line would start a new statement,
 * not continue a string, comment or trigger body (sqlite3_complete, for the shell). */
export function isComplete(text: string): boolean {
  if (isBlankSql(text)) return false
  return splitStatements(`${text}\nx`).length === splitStatements(text).length + 1
}

/** UTF-8 length of `sql.slice(0, index)`: the tail offset a STMT response carries is in bytes. */
export function utf8OffsetBytes(sql: string, index: number): number {
  return Buffer.byteLength(sql.slice(0, index), "utf8")
}

/** The bind parameters of one statement as SQLite numbers them: `count` is the highest index
 * (sqlite3_bind_parameter_count, what STMT reports: `?1, ?2, ?1` → 2), `names[i]` the name of
 * index i + 1 (`"?3"`, `":a"`, `"@b"`, `"$c"`), or null for a plain `?` and for indexes no
 * parameter uses (sqlite3_bind_parameter_name). A plain `?` takes the index after the highest so
 * far; a repeated name reuses its index. (TCL-style `$a::b(c)` suffixes are not recognised.) */
export interface ParameterSlots {
  readonly count: number
  readonly names: ReadonlyArray<string | null>
}

const parameterNameChar = /[A-Za-z0-9_$\u0080-\uffff]/

export function parameterSlots(statementSql: string): ParameterSlots {
  const named = new Map<string, number>()
  const names: Array<string | null> = []
  let highest = 0
  const assign = (index: number, name: string | null) => {
    while (names.length < index) names.push(null)
    if (name !== null) names[index - 1] = name
    highest = Math.max(highest, index)
  }
  let at = 0
  while (at < statementSql.length) {
    const char = statementSql[at] ?? ""
    if (char === "?") {
      let end = at + 1
      while (end < statementSql.length && /[0-9]/.test(statementSql[end] ?? "")) end++
      if (end === at + 1) {
        assign(highest + 1, null)
      } else {
        const name = statementSql.slice(at, end)
        const index = named.get(name) ?? Number(name.slice(1))
        named.set(name, index)
        assign(index, name)
      }
      at = end
      continue
    }
    if (char === ":" || char === "@" || char === "$") {
      let end = at + 1
      while (end < statementSql.length && parameterNameChar.test(statementSql[end] ?? "")) end++
      if (end > at + 1) {
        const name = statementSql.slice(at, end)
        const index = named.get(name) ?? highest + 1
        named.set(name, index)
        assign(index, name)
        at = end
        continue
      }
    }
    at = scanToken(statementSql, at).end
  }
  return { count: highest, names }
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

/** The first `n` words of `sql`. */
function leadingWords(sql: string, n: number): Array<string> {
  const out: Array<string> = []
  let at = 0
  while (at < sql.length && out.length < n) {
    const { end, token } = scanToken(sql, at)
    if (token.kind === "word") out.push(token.upper)
    else if (token.kind !== "space" && out.length > 0) break
    at = end
  }
  return out
}

export function classifyStatement(sql: string): StatementKind {
  const leading = leadingWords(sql, 3)
  const first = leading[0]
  switch (first) {
    case "BEGIN":
      return { _tag: "Begin" }
    case "COMMIT":
    case "END":
      return { _tag: "Commit" }
    case "ROLLBACK":
      return leading[1] === "TO" || (leading[1] === "TRANSACTION" && leading[2] === "TO") ? { _tag: "Other" } : { _tag: "Rollback" }
    case "SAVEPOINT":
      return { _tag: "Savepoint" }
    case "VACUUM":
      return [...words(sql)].includes("INTO") ? { _tag: "Forbidden", reason: "VACUUM INTO writes a file outside the replicated database" } : { _tag: "Solo" }
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

/** Whether the statement is RELEASE [SAVEPOINT] name (it may end an interactive transaction). */
export function isRelease(sql: string): boolean {
  return leadingWords(sql, 1)[0] === "RELEASE"
}

/** The statement's main verb: for `WITH … INSERT …` the INSERT. INSERT, REPLACE, UPDATE and
 * DELETE are the statements that set SQLite's changes() (and, for inserts, last_insert_rowid());
 * every other statement leaves both as they were. */
export function mainVerb(sql: string): string | null {
  let depth = 0
  let inWith = false
  let at = 0
  while (at < sql.length) {
    const { end, token } = scanToken(sql, at)
    if (token.kind === "other") {
      const char = sql[at]
      if (char === "(") depth++
      else if (char === ")") depth = Math.max(0, depth - 1)
    } else if (token.kind === "word" && depth === 0) {
      if (!inWith && token.upper !== "WITH" && token.upper !== "EXPLAIN") return token.upper
      if (token.upper === "WITH") inWith = true
      else if (inWith && (token.upper === "SELECT" || token.upper === "VALUES" || token.upper === "INSERT" || token.upper === "REPLACE" || token.upper === "UPDATE" || token.upper === "DELETE")) return token.upper
    }
    at = end
  }
  return null
}

/** Whether the statement sets changes(): an INSERT, REPLACE, UPDATE or DELETE (not EXPLAIN'd). */
export function changesRows(sql: string): boolean {
  if (leadingWords(sql, 1)[0] === "EXPLAIN") return false
  const verb = mainVerb(sql)
  return verb === "INSERT" || verb === "REPLACE" || verb === "UPDATE" || verb === "DELETE"
}

/** Whether running every statement of `sql` again can only read: each is a SELECT, VALUES,
 * EXPLAIN or a WITH whose main verb is SELECT, with no RETURNING. Conservative (the client's
 * retry rule): false only makes a request non-retryable after an unknown outcome. */
export function looksReadOnly(sql: string): boolean {
  const statements = splitStatements(sql)
  if (statements.length === 0) return false
  return statements.every(({ text }) => {
    const first = leadingWords(text, 1)[0]
    if (first !== "SELECT" && first !== "VALUES" && first !== "EXPLAIN" && first !== "WITH") return false
    for (const word of words(text)) if (word === "INSERT" || word === "UPDATE" || word === "DELETE" || word === "REPLACE" || word === "RETURNING") return false
    return true
  })
}

/** Whether a statement answers with rows (a shell runs it as a query) or with a change count. */
export function returnsRows(sql: string): boolean {
  const all = [...words(sql)]
  if (all.includes("RETURNING")) return true
  const first = all[0]
  if (first === "PRAGMA" || first === "EXPLAIN") return true
  const verb = mainVerb(sql)
  return verb === "SELECT" || verb === "VALUES"
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
