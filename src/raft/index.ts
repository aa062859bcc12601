// The Raft core's public face.
export * from "./types.ts"
export * from "./config.ts"
export type * from "./messages.ts"
export * from "./state.ts"
export * from "./membership.ts"
export { step, initialState, bootstrap, emptyRecovered, applyPending, snapshotMetaAt } from "./core.ts"
export type { Recovered } from "./core.ts"
export { lastIndex, lastTerm, termAt } from "./log.ts"
