#!/usr/bin/env node
// Placeholder entry so the bin builds; the agent issue grows this into the full CLI.
const [command] = process.argv.slice(2)
if (command === "version" || command === "--version") {
  process.stdout.write("tqlite 0.1.0\n")
} else {
  process.stderr.write(`tqlite: '${command ?? ""}' is not available yet (the node agent is built in a later issue)\n`)
  process.exitCode = 2
}
