// The Raft core's entry cache, swarmed per seed by both simulators (each seed draws it from a
// generator of its own, so the seed's other knobs stay as they were before the cache existed).
import type { Prng } from "./Prng.ts"

/** Tiny (a few KV commands' data, or less than one) in three seeds of four, so replication and the
 * applier read entries back from storage all the time; the production default in the fourth. */
export function cacheKnobs(prng: Prng): { entryCacheBytesMax: number; entryLoadBytesMax: number; applyInflightBytesMax: number } {
  return {
    entryCacheBytesMax: prng.pick([1, 64, 512, 64 * 1024 * 1024]),
    entryLoadBytesMax: prng.pick([1, 200, 4096]),
    // Entries handed to the applier before it reports progress: one at a time in some seeds.
    applyInflightBytesMax: prng.pick([1, 300, 64 * 1024 * 1024])
  }
}
