// Files an interrupted run left behind (a snapshot half taken, a transfer half received, a WAL),
// found when a store opens. Unlinking one frees its blocks in the calling thread: ~0.45 s per GiB
// on the dev VM's ext4, and a node killed while it took a 4 GiB snapshot waited for that before
// it served (issue 17: restart < 5 s whatever the size). So the open only renames each out of
// the way (`<name>.trash`, a rename frees nothing), which is all its correctness needs: the old
// name is free for new files at once. The renamed files are unlinked on the thread pool once the
// node serves (`remove`). A crash before that leaves `.trash` files, which the next open picks up.
import * as path from "node:path"
import { Effect } from "effect"
import type { DiskService } from "./Disk.ts"
import { unlinkOffLoop } from "./Disk.ts"
import type { DiskFailure } from "./errors.ts"

export const trashSuffix = ".trash"

export interface Leftovers {
  /** At open: moves `name` (in the directory) out of the way, to be unlinked by `remove`. */
  readonly discard: (name: string) => Effect.Effect<void, DiskFailure>
  /** Files waiting for `remove` (names in the directory). */
  readonly pending: () => ReadonlyArray<string>
  /** Unlinks every discarded file, one at a time on the thread pool (never on the event loop). */
  readonly remove: Effect.Effect<void, DiskFailure>
}

/** The leftovers of `dir`, whose current file names are `names`: every `.trash` file already
 * there (an earlier run's, not yet removed) is pending from the start. */
export function leftoversOf(disk: DiskService, dir: string, names: ReadonlyArray<string>): Leftovers {
  const taken = new Set(names)
  const pending: Array<string> = names.filter((name) => name.endsWith(trashSuffix))
  const discard = (name: string) =>
    Effect.suspend(() => {
      // A name no file has: a rename onto an existing file would free that one's blocks here.
      let target = `${name}${trashSuffix}`
      for (let n = 1; taken.has(target); n++) target = `${name}.${n}${trashSuffix}`
      taken.add(target)
      pending.push(target)
      return disk.rename(path.join(dir, name), path.join(dir, target))
    })
  const remove = Effect.gen(function*() {
    for (let name = pending.shift(); name !== undefined; name = pending.shift()) {
      const file = path.join(dir, name)
      if (yield* disk.exists(file)) yield* unlinkOffLoop(disk, file)
      taken.delete(name)
    }
  })
  return { discard, pending: () => [...pending], remove }
}
