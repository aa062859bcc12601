// dqlite wire protocol v1 codec: framing, values, requests, responses. Pure: no sockets.
export * from "./codes.ts"
export * from "./errors.ts"
export * from "./values.ts"
export * from "./wire.ts"
export * from "./framing.ts"
export * from "./requests.ts"
export * from "./responses.ts"
