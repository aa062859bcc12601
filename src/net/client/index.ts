// The TypeScript client of tqlite (dqlite wire protocol v1): `DqliteClient` / `make` / `layer`.
export * from "./Client.ts"
export * from "./Connection.ts"
export * from "./errors.ts"
export * from "./values.ts"
// Codec values, to force a wire type for a parameter (`Values.float(2)` sends a REAL).
export { Values } from "../protocol/values.ts"
