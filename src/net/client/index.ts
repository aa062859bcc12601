// The TypeScript client of tqlite (dqlite wire protocol v1): `DqliteClient` / `make` / `layer`.
export * from "./Client.ts"
export * from "./Connection.ts"
export * from "./errors.ts"
export * from "./values.ts"
