// Which reads of a leading database may still hold a snapshot, told without clocks: every read
// gets a number when it takes a reader (a worker thread, or an in-thread connection), in order,
// and gives it back when the reader is free again (or its thread is gone). The writer's core
// uses it for checkpoints (writerCore.ts "checkpoint back-off"): a checkpoint that readers held
// back is not asked again until every read numbered before it has ended (`doneBefore` reached
// the number `started` had then). Numbers, not times: the simulator's runs stay the same from
// one seed, and a read that is slow to start counts from when it could pin. The oldest read's age
// (`oldestReadMs`, this thread's clock) only decides whether a checkpoint waits for readers,
// which the simulator's checkpoint never does (the writer's connection: busy timeout 0).

export interface ReadHorizon {
  /** Reads that have taken a reader so far: the number the next one gets. */
  readonly started: number
  /** Every read numbered below this has ended (its reader holds no snapshot of it). */
  readonly doneBefore: number
  /** How long the oldest read in progress has been going (ms; 0: none). A hint for the
   * checkpoint's wait, never for what a read may see. */
  readonly oldestReadMs: number
}

/** The reads in progress, by the reader (slot or connection) that serves each. */
export class ReadsInProgress {
  private next = 0
  /** Reader → its read's number. Insertion order is number order (a reader taken again is
   * deleted first), so the first entry is the oldest read. */
  private readonly reading = new Map<object, { readonly number: number; readonly sinceMs: number }>()

  /** `reader` started a read (it may pin a snapshot from now on). */
  begin(reader: object): void {
    this.reading.delete(reader)
    this.reading.set(reader, { number: this.next++, sinceMs: performance.now() })
  }

  /** `reader` holds no snapshot any more (idempotent). */
  end(reader: object): void {
    this.reading.delete(reader)
  }

  horizon(): ReadHorizon {
    for (const oldest of this.reading.values()) return { started: this.next, doneBefore: oldest.number, oldestReadMs: Math.max(0, performance.now() - oldest.sinceMs) }
    return { started: this.next, doneBefore: this.next, oldestReadMs: 0 }
  }
}
