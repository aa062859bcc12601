// How a node writes its log: Effect's Logger in one of three formats, replacing the default
// logger through a Layer, with a minimum level. Node fibers carry a `node_id` annotation
// (Node.ts, SqlNode.ts), which every format prints: `node_id=…` (pretty, logfmt) or
// `"annotations":{"node_id":"…"}` (json, one object per line).
import type { Layer } from "effect"
import { Layer as LayerOps, Logger, LogLevel } from "effect"

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
      return Logger.pretty
    case "json":
      return Logger.json
    case "logfmt":
      return Logger.logFmt
  }
}
