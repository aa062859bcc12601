// Progress of a long copy on stderr: on a terminal one line redrawn in place (a bar, the
// percentage, rows and bytes), at most every `redrawMs`; otherwise (a log, a pipe) a plain line
// every `lineEveryMs`. Callers pass the time (from Effect's Clock) so this stays a plain object.
// The total is counted in rows (restore) or in bytes (dump: the FILES answer's announced size).
import type { CliIo } from "./common.ts"
import { formatBytes } from "./common.ts"

const redrawMs = 100
const lineEveryMs = 2_000
const barCells = 30

export class Progress {
  private lastShownMs = -Infinity
  private rows = 0
  private bytes = 0

  constructor(
    private readonly io: CliIo,
    private readonly label: string,
    private total: number,
    private readonly unit: "rows" | "bytes" = "rows"
  ) {}

  /** The total once it is known (a dump learns it from the answer's header). */
  setTotal(total: number): void {
    this.total = total
  }

  /** Adds what one step copied; shows it if enough time passed. */
  advance(rows: number, bytes: number, nowMs: number): void {
    this.rows += rows
    this.bytes += bytes
    if (nowMs - this.lastShownMs < (this.io.errIsTty ? redrawMs : lineEveryMs)) return
    this.lastShownMs = nowMs
    this.show()
  }

  /** The final state, always shown, ending the redrawn line. */
  finish(): { readonly rows: number; readonly bytes: number } {
    this.show()
    if (this.io.errIsTty) this.io.err("\n")
    return { rows: this.rows, bytes: this.bytes }
  }

  /** Ends a redrawn line that is on screen, showing nothing more (before an error message). */
  abandon(): void {
    if (this.io.errIsTty && this.lastShownMs !== -Infinity) this.io.err("\n")
    this.lastShownMs = -Infinity
  }

  /** 0..100, 100 when there is nothing to copy. */
  get percent(): number {
    const done = this.unit === "rows" ? this.rows : this.bytes
    return this.total === 0 ? 100 : Math.min(100, Math.floor((done * 100) / this.total))
  }

  private show(): void {
    const figures = this.unit === "rows"
      ? `${this.percent}% ${this.rows}/${this.total} rows, ${formatBytes(this.bytes)}`
      : `${this.percent}% ${formatBytes(this.bytes)} of ${formatBytes(this.total)}`
    if (this.io.errIsTty) {
      const filled = Math.round((this.percent / 100) * barCells)
      this.io.err(`\r${this.label} [${"#".repeat(filled)}${".".repeat(barCells - filled)}] ${figures}\x1b[K`)
    } else {
      this.io.err(`${this.label}: ${figures}\n`)
    }
  }
}
