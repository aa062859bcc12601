// The CLI's output pieces without a cluster: value rendering in the three formats and the
// progress display on a terminal and in a log.
import { describe, expect, it } from "vitest"
import { formatBytes } from "../../src/cli/common.ts"
import { csvField, formatCsv, formatJson, formatTable } from "../../src/cli/format.ts"
import { Progress } from "../../src/cli/progress.ts"
import { captureIo } from "./harness.ts"

describe("CLI output", () => {
  it("quotes CSV fields as RFC 4180 says, and only those that need it", () => {
    expect(csvField("plain")).toBe("plain")
    expect(csvField("a,b")).toBe("\"a,b\"")
    expect(csvField("say \"hi\"")).toBe("\"say \"\"hi\"\"\"")
    expect(csvField("two\r\nlines")).toBe("\"two\r\nlines\"")
    expect(formatCsv(["a", "b,c"], [[null, ""], [Uint8Array.of(1, 171), 2.5]])).toBe("a,\"b,c\"\r\n,\r\nX'01AB',2.5\r\n")
  })

  it("writes JSON with exact 64-bit integers, hex blobs and non-finite floats as strings", () => {
    const text = formatJson(["i", "f", "b", "d", "t"], [[-(2n ** 63n), -Infinity, new Uint8Array(0), new Date(0), true]])
    expect(text).toBe("[\n{\"i\":-9223372036854775808,\"f\":\"-Inf\",\"b\":\"X''\",\"d\":\"1970-01-01T00:00:00.000Z\",\"t\":true}\n]\n")
  })

  it("aligns table columns by display width and escapes control characters", () => {
    const table = formatTable(["name", "n"], [["日本", 1], ["tab\there", 22], ["x", null]])
    expect(table).toBe(
      "name      |    n\n" +
        "----------+-----\n" +
        "日本      |    1\n" +
        "tab\\there |   22\n" +
        "x         | NULL\n"
    )
  })

  it("prints byte counts for people", () => {
    expect([formatBytes(0), formatBytes(1023), formatBytes(1536), formatBytes(3 * 1024 ** 3)]).toEqual(["0 B", "1023 B", "1.5 KiB", "3.0 GiB"])
  })

  it("shows progress as a redrawn bar on a terminal and as periodic lines otherwise", () => {
    const tty = captureIo(true)
    const bar = new Progress(tty.io, "restore db", 200)
    bar.advance(50, 2048, 0)
    bar.advance(50, 2048, 10) // within the redraw interval: not shown
    bar.advance(50, 2048, 200)
    expect(bar.finish()).toEqual({ rows: 150, bytes: 6144 })
    expect(tty.err()).toBe(
      "\rrestore db [########......................] 25% 50/200 rows, 2.0 KiB\x1b[K" +
        "\rrestore db [#######################.......] 75% 150/200 rows, 6.0 KiB\x1b[K" +
        "\rrestore db [#######################.......] 75% 150/200 rows, 6.0 KiB\x1b[K\n"
    )
    const log = captureIo(false)
    const lines = new Progress(log.io, "restore db", 0)
    lines.advance(0, 0, 0)
    lines.advance(0, 0, 1_000)
    lines.finish()
    expect(log.err()).toBe("restore db: 100% 0/0 rows, 0 B\n".repeat(2))
  })

})
