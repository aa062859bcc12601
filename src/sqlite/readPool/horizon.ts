// Which reads of a leading database may still hold a snapshot, told without clocks: every read
// gets a number when it takes a reader (a worker thread, or an in-thread connection), in order,
// and gives it back when the reader is free again (or its thread is gone). The writer's core
// uses it for checkpoints (writerCore.ts "checkpoint back-off"): a checkpoint that readers held
// back is not asked again until every read numbered before it has ended (`doneBefore` reached
// the number `started` had then). Numbers, not times: the simulator's runs stay the same from
// one seed, and a read that is slow to start counts from when it could pin.

export interface ReadHorizon {
  /** Reads that have taken a reader so far: the number the next one gets. */
  readonly started: number
  /** Every read numbered below this has ended (its reader holds no snapshot of it). */
  readonly doneBefore: number
}

/** A horizon whose reads never end: what a database without pool readers reports (none). */
export const noReads: ReadHorizon = { started: 0, doneBefore: 0 }

/** The reads in progress, by the reader (slot or connection) that serves each. */
export class ReadsInProgress {
  private next = 0
  /** Reader → its read's number. Insertion order is number order (a reader taken again is
   * deleted first), so the first entry is the oldest read. */
  private readonly reading = new Map<object, number>()

  /** `reader` started a read (it may pin a snapshot from now on). */
  begin(reader: object): void {
    this.reading.delete(reader)
    this.reading.set(reader, this.next++)
  }

  /** `reader` holds no snapshot any more (idempotent). */
  end(reader: object): void {
    this.reading.delete(reader)
  }

  horizon(): ReadHorizon {
    for (const oldest of this.reading.values()) return { started: this.next, doneBefore: oldest }
    return { started: this.next, doneBefore: this.next }
  }
}
