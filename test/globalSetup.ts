// vitest's global set-up: the bundled CLI the process tests start is built from the current
// sources before any test runs (test/bundle.ts). In CI `npm ci` has just built it (the
// `prepare` script), so this costs nothing there.
import { ensureBundle } from "./bundle.ts"

export default function setup(): void {
  ensureBundle((line) => process.stderr.write(`test set-up: ${line}\n`))
}
