// Seeds 51–100 of the SQLite simulator in CI (see seeds.ts).
import { describe } from "vitest"
import { sqliteSeedShard } from "./seeds.ts"

describe("SQLite simulator", () => sqliteSeedShard(51, 100))
