// Temporary directories for one test file, removed after all its tests.
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll } from "vitest"

/** Call at a test file's top level: returns a maker of fresh directories named `prefix…`, all
 * removed once the file's tests are done. */
export function tempDirs(prefix: string): () => string {
  const dirs: Array<string> = []
  afterAll(() => dirs.forEach((dir) => fs.rmSync(dir, { recursive: true, force: true })))
  return () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix))
    dirs.push(dir)
    return dir
  }
}
