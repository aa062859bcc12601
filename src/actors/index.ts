export * as Actor from "./Actor.ts"
export * as Ask from "./Ask.ts"
export * from "./errors.ts"
export * as Ticker from "./Ticker.ts"
