// Expected failures of the page machinery, one class per thing a caller does differently.
// Each carries a literal `_tag` so the Effect layer above can `catchTag` them unchanged, and
// keeps its `cause` when it wraps a foreign error. Broken invariants are not here: those are
// `AssertionError`s (src/assert.ts) and take the node down.

/** A page-set payload (a Raft entry) is not a well-formed encoding. The log's own checksum
 * passed, so this is a bug or a version skew, never something to skip silently. */
export class PageSetDecodeError extends Error {
  readonly _tag = "PageSetDecodeError" as const
  override readonly name = "PageSetDecodeError"
  readonly reason: string
  readonly offset: number

  constructor(options: { readonly reason: string; readonly offset: number }) {
    super(`malformed page-set payload at byte ${options.offset}: ${options.reason}`)
    this.reason = options.reason
    this.offset = options.offset
  }
}

/** The database (or the WAL, or a page set) does not use the page size this node expects.
 * Page sizes cannot change in WAL mode, so this means a wrong file or a wrong configuration. */
export class PageSizeMismatch extends Error {
  readonly _tag = "PageSizeMismatch" as const
  override readonly name = "PageSizeMismatch"
  readonly path: string
  readonly expectedBytes: number
  readonly actualBytes: number

  constructor(options: { readonly path: string; readonly expectedBytes: number; readonly actualBytes: number }) {
    super(`${options.path}: page size is ${options.actualBytes} bytes, expected ${options.expectedBytes}`)
    this.path = options.path
    this.expectedBytes = options.expectedBytes
    this.actualBytes = options.actualBytes
  }
}

/** Opening or configuring a database failed (better-sqlite3 threw, or a pragma did not take). */
export class DatabaseOpenError extends Error {
  readonly _tag = "DatabaseOpenError" as const
  override readonly name = "DatabaseOpenError"
  readonly path: string

  constructor(options: { readonly path: string; readonly message: string; readonly cause?: unknown }) {
    super(`${options.path}: ${options.message}`, options.cause === undefined ? undefined : { cause: options.cause })
    this.path = options.path
  }
}

/** Why a WAL cut was refused. The WAL was left untouched in every case. */
export type WalCutRefusal =
  /** The WAL's header is from the same generation but there is no commit frame ending exactly at
   * the requested offset (or its checksum differs): the position does not belong to this WAL. */
  | "NotACommitBoundary"
  /** The WAL is shorter than the requested offset: frames the cluster committed are missing. */
  | "WalTooShort"
  /** The connections could not be closed so that the WAL survives (it was checkpointed or
   * deleted by SQLite), so the uncommitted frames may already be in the main file. */
  | "WalNotPreserved"

/** The step-down / crash-recovery cut could not be done safely. */
export class WalCutError extends Error {
  readonly _tag = "WalCutError" as const
  override readonly name = "WalCutError"
  readonly reason: WalCutRefusal
  readonly path: string

  constructor(options: { readonly reason: WalCutRefusal; readonly path: string; readonly detail: string }) {
    super(`cannot cut ${options.path} (${options.reason}): ${options.detail}`)
    this.reason = options.reason
    this.path = options.path
  }
}

/** A file operation of the page machinery failed (EIO, ENOSPC, EACCES…). */
export class PageFileError extends Error {
  readonly _tag = "PageFileError" as const
  override readonly name = "PageFileError"
  readonly path: string
  readonly operation: string

  constructor(options: { readonly path: string; readonly operation: string; readonly cause: unknown }) {
    super(`${options.operation} ${options.path} failed: ${describe(options.cause)}`, { cause: options.cause })
    this.path = options.path
    this.operation = options.operation
  }
}

function describe(cause: unknown): string {
  return cause instanceof Error ? cause.message : String(cause)
}
