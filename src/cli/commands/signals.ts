// How long-lived commands (start, demo) run: until SIGTERM or SIGINT, then a graceful shutdown
// (the program's scope closes: a leader hands leadership over, requests finish or fail, files
// are synced and closed) bounded in time. A second signal during the shutdown exits at once, with
// the shell's code for death by that signal (130 for SIGINT, 143 for SIGTERM).
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import type { Effect } from "effect"

export const shutdownBoundMsDefault = 10_000

const exitCodeOf = (signal: NodeJS.Signals): number => (signal === "SIGINT" ? 130 : 143)

export function runUntilSignal(
  program: Effect.Effect<void, unknown>,
  runMainOptions: { readonly disableErrorReporting?: boolean; readonly disablePrettyLogger?: boolean } = {},
  shutdownBoundMs = shutdownBoundMsDefault
): void {
  let received: NodeJS.Signals | null = null
  const onSignal = (signal: NodeJS.Signals) => {
    if (received !== null) {
      process.stderr.write(`tqlite: ${signal} again: exiting without finishing the shutdown\n`)
      process.exit(exitCodeOf(signal))
    }
    received = signal
    process.stderr.write(`tqlite: ${signal}: shutting down (at most ${shutdownBoundMs / 1000} s; send it again to exit at once)\n`)
    // The bound: whatever still runs after it is abandoned. unref: a clean shutdown exits sooner.
    setTimeout(() => {
      process.stderr.write(`tqlite: shutdown did not finish within ${shutdownBoundMs / 1000} s; exiting\n`)
      process.exit(1)
    }, shutdownBoundMs).unref()
  }
  // Registered before runMain's own handler, which interrupts the program on the first signal
  // and then stops listening: from then on only this one is left to hear a second signal.
  process.on("SIGINT", onSignal)
  process.on("SIGTERM", onSignal)
  NodeRuntime.runMain(program, runMainOptions)
}
