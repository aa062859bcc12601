// The writer core's bounds in its tests: small, so queues fill and batches close in a few steps.
import type { WriterLimits } from "../../src/sqlite/writerCore.ts"

export const scriptLimits: WriterLimits = {
  writeQueueMax: 4,
  writeTimeoutMs: 1000,
  commitTimeoutMs: 3000,
  transactionTimeoutMs: 500,
  batchStatementsMax: 3,
  batchBytesMax: 1000,
  batchOpenMsMax: 100,
  batchGatherMsMax: 5,
  transactionBytesMax: 8192,
  walCheckpointBytes: 100_000,
  checkpointLongReadMs: 1000,
  overloadRetryMs: 20
}
