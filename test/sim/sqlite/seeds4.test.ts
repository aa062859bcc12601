// Seeds 151–200 of the SQLite simulator in CI (see seeds.ts).
import { describe } from "vitest"
import { sqliteSeedShard } from "./seeds.ts"

describe("SQLite simulator", () => sqliteSeedShard(151, 200))
