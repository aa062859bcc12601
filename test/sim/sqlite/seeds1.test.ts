// Seeds 1–50 of the SQLite simulator in CI (see seeds.ts).
import { describe } from "vitest"
import { sqliteSeedShard } from "./seeds.ts"

describe("SQLite simulator", () => sqliteSeedShard(1, 50))
