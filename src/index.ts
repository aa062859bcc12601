// tqlite's public API (package.json "main").
//
// - `Tqlite`: the embedding service (`Tqlite.layer` runs a node in your app, `Tqlite.layerRemote`
//   talks to a cluster) and its typed errors.
// - `TqliteClient`, `TqliteMigrator`: @effect/sql's SqlClient and Migrator on top of it.
// - `Client`: the dqlite wire-protocol client underneath (admin requests, prepared statements,
//   row streaming).
export { ClusterUnavailable, NotLeader, ReplicaStale, SqlError, TqliteStartError, WriteTimeout } from "./embed/errors.ts"
export type { TqliteError } from "./embed/errors.ts"
export type {
  ExecResult,
  LeaderInfo,
  Member,
  NodeInfo,
  NodeRole,
  NodeState,
  ParamValue,
  QueryOptions,
  QueryResult,
  ReadConsistency,
  RoleChange,
  Row,
  RowValue,
  RoutingClientOptions,
  RoutingStats,
  TqliteConfig,
  TqliteRemoteConfig,
  TqliteService
} from "./embed/Tqlite.ts"
export { defaultDatabase, Tqlite, withConsistency } from "./embed/Tqlite.ts"
export * as TqliteClient from "./sql/TqliteClient.ts"
export * as TqliteMigrator from "./sql/TqliteMigrator.ts"
export * as Client from "./net/client/index.ts"
