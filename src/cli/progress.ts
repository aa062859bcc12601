// Progress of a long copy on stderr: on a terminal one line redrawn in place (a bar, the
// percentage, rows and bytes), at most every `redrawMs`; otherwise (a log, a pipe) a plain line
// every `lineEveryMs`. Callers pass the time (from Effect's Clock) so this stays a plain object.
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
    private readonly rowsTotal: number
  ) {}

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

  /** 0..100, 100 when there is nothing to copy. */
  get percent(): number {
    return this.rowsTotal === 0 ? 100 : Math.min(100, Math.floor((this.rows * 100) / this.rowsTotal))
  }

  private show(): void {
    const figures = `${this.percent}% ${this.rows}/${this.rowsTotal} rows, ${formatBytes(this.bytes)}`
    if (this.io.errIsTty) {
      const filled = Math.round((this.percent / 100) * barCells)
      this.io.err(`\r${this.label} [${"#".repeat(filled)}${".".repeat(barCells - filled)}] ${figures}\x1b[K`)
    } else {
      this.io.err(`${this.label}: ${figures}\n`)
    }
  }
}
