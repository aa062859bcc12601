// How a node writes its log: Effect's Logger in one of three formats, replacing the default
// logger through a Layer, with a minimum level. Node fibers carry a `node_id` annotation
// (Node.ts, SqlNode.ts), which every format prints: `node_id=…` (pretty, logfmt) or
// `"annotations":{"node_id":"…"}` (json, one object per line).
import type { Layer } from "effect"
import { Cause, HashMap, Layer as LayerOps, List, Logger, LogLevel } from "effect"

export const logFormats = ["pretty", "json", "logfmt"] as const
export type LogFormat = (typeof logFormats)[number]

export const logLevelNames = ["all", "trace", "debug", "info", "warning", "error", "fatal", "none"] as const
export type LogLevelName = (typeof logLevelNames)[number]

export function parseLogFormat(text: string): LogFormat | null {
  const lower = text.toLowerCase()
  return (logFormats as ReadonlyArray<string>).includes(lower) ? (lower as LogFormat) : null
}

/** A level name as operators write it (case-insensitive; "warn" for "warning"). */
export function parseLogLevel(text: string): LogLevel.LogLevel | null {
  const lower = text.toLowerCase()
  const name = lower === "warn" ? "warning" : lower
  switch (name as LogLevelName) {
    case "all":
      return LogLevel.All
    case "trace":
      return LogLevel.Trace
    case "debug":
      return LogLevel.Debug
    case "info":
      return LogLevel.Info
    case "warning":
      return LogLevel.Warning
    case "error":
      return LogLevel.Error
    case "fatal":
      return LogLevel.Fatal
    case "none":
      return LogLevel.None
    default:
      return null
  }
}

/** The logger of a node process: `format` instead of Effect's default logger, and nothing
 * below `level`. */
export const loggerLayer = (format: LogFormat, level: LogLevel.LogLevel): Layer.Layer<never> =>
  LayerOps.merge(formatLayer(format), Logger.minimumLogLevel(level))

function formatLayer(format: LogFormat): Layer.Layer<never> {
  switch (format) {
    case "pretty":
      return Logger.replace(Logger.defaultLogger, prettyLineLogger)
    case "json":
      return Logger.json
    case "logfmt":
      return Logger.logFmt
  }
}

/** ANSI colours per level, used only when stdout is a terminal. */
const levelColours: Record<string, string> = { FATAL: "\x1b[35m", ERROR: "\x1b[31m", WARN: "\x1b[33m", INFO: "\x1b[32m", DEBUG: "\x1b[36m", TRACE: "\x1b[90m" }

/** A value as it reads in `key=value`: bare when it has no space, quote or `=`. */
const fieldValue = (value: unknown): string => {
  const text = typeof value === "string" ? value : JSON.stringify(value) ?? String(value)
  return /^[^\s"=]+$/.test(text) ? text : JSON.stringify(text)
}

/** One event, one line: `HH:MM:SS.mmm LEVEL message key=value …`. Effect's pretty logger puts
 * each annotation (and a cause) on lines of their own; an operator's terminal wants one line per
 * event. A cause is shortened to its first line; the whole of it is for json/logfmt. */
export const formatPrettyLine = (options: Logger.Logger.Options<unknown>, colours: boolean): string => {
  const time = options.date.toISOString().slice(11, 23)
  const level = options.logLevel.label
  const messages = Array.isArray(options.message) ? options.message : [options.message]
  const text = messages.map((m) => (typeof m === "string" ? m : JSON.stringify(m) ?? String(m))).join(" ")
  const fields: Array<string> = []
  // Sorted: HashMap order is arbitrary, and lines of one kind should read alike.
  const annotations = HashMap.toEntries(options.annotations).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
  for (const [key, value] of annotations) fields.push(`${key}=${fieldValue(value)}`)
  for (const span of List.toArray(options.spans)) fields.push(`${span.label}=${options.date.getTime() - span.startTime}ms`)
  if (!Cause.isEmpty(options.cause)) {
    const first = Cause.pretty(options.cause).split("\n").find((line) => line.trim().length > 0) ?? ""
    fields.push(`cause=${fieldValue(first.trim())}`)
  }
  const shownLevel = colours ? `${levelColours[level] ?? ""}${level.padEnd(5)}\x1b[0m` : level.padEnd(5)
  return [time, shownLevel, text, ...fields].join(" ")
}

const prettyLineLogger = Logger.make((options) => {
  globalThis.console.log(formatPrettyLine(options, process.stdout.isTTY === true))
})
