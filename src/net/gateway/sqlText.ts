// Where one SQL statement ends and the next begins, without SQLite: the gateway decides from the
// text alone whether a request is empty (EXEC_SQL answers RESULT(0, 0), QUERY_SQL and PREPARE
// FAILURE 0 "empty statement"), and which part of a PREPARE text is its first statement and which
// the tail. better-sqlite3 exposes neither sqlite3_complete nor a prepare tail, so this follows
// the rules SQLite's own completeness check documents:
// - a statement ends at a `;` outside string literals, quoted identifiers and comments;
// - inside `CREATE [TEMP|TEMPORARY] TRIGGER … BEGIN … END` (optionally after EXPLAIN), the `;`s
//   of the body do not end it: only a `;` that follows `END` after a `;` does;
// - whitespace, `-- …` and `/* … */` comments and lone `;`s are not statements.
// Pure functions; offsets are indices in the JS string (UTF-16 code units) unless named `Bytes`.

/** One statement of a SQL text: `text` is `sql.slice(start, end)`, from its first token through
 * its terminating `;` when it has one. */
export interface SqlStatementSpan {
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

/** The non-empty statements of `sql`, in order. A last statement without `;` is included. */
export function splitStatements(sql: string): Array<SqlStatementSpan> {
  const spans: Array<SqlStatementSpan> = []
  let state: State = "start"
  let start = -1
  let at = 0
  while (at < sql.length) {
    const { end, token } = scanToken(sql, at)
    const nextState = transition(state, token)
    if (state === "start" && nextState !== "start") start = at
    if (nextState === "complete") {
      spans.push({ start, end, text: sql.slice(start, end) })
      state = "start"
    } else {
      state = nextState
    }
    at = end
  }
  if (state !== "start") spans.push({ start, end: sql.length, text: sql.slice(start) })
  return spans
}

/** The first statement of `sql` and where the tail after it starts, or `null` when the text has
 * no statement at all (only whitespace, comments and `;`). */
export function firstStatement(sql: string): { readonly statement: SqlStatementSpan; readonly tail: string } | null {
  let state: State = "start"
  let start = -1
  let at = 0
  while (at < sql.length) {
    const { end, token } = scanToken(sql, at)
    const nextState = transition(state, token)
    if (state === "start" && nextState !== "start") start = at
    if (nextState === "complete") {
      return { statement: { start, end, text: sql.slice(start, end) }, tail: sql.slice(end) }
    }
    state = nextState
    at = end
  }
  if (state === "start") return null
  return { statement: { start, end: sql.length, text: sql.slice(start) }, tail: "" }
}

/** Whether `sql` holds no statement: only whitespace, comments and `;`. */
export function isBlankSql(sql: string): boolean {
  return firstStatement(sql) === null
}

/** UTF-8 length of `sql.slice(0, index)`: the tail offset a STMT response carries is in bytes. */
export function utf8OffsetBytes(sql: string, index: number): number {
  return Buffer.byteLength(sql.slice(0, index), "utf8")
}

/** The bind parameters of one statement as SQLite numbers them: `count` is the highest index
 * (what STMT reports, `?1, ?2, ?1` → 2), `names[i]` the name of index i + 1 (`"?3"`, `":a"`,
 * `"@b"`, `"$c"`), or null for a plain `?` and for indexes no parameter uses. A plain `?` takes
 * the index after the highest so far; a repeated name reuses its index. (TCL-style `$a::b(c)`
 * suffixes are not recognised.) */
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
