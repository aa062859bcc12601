// Moved: SQL text analysis lives in src/sqlite/statements.ts, the one module that reads SQL
// without SQLite. Only these names are re-exported, for code written against this path; new code
// imports src/sqlite/statements.ts.
export { firstStatement, isBlankSql, parameterSlots, splitStatements, utf8OffsetBytes } from "../../sqlite/statements.ts"
export type { ParameterSlots, StatementSpan as SqlStatementSpan } from "../../sqlite/statements.ts"
