#!/usr/bin/env bash
# Packs tqlite, installs the tarball into a scratch project the way docs/embedding.md tells an
# embedder to (with Effect v3 and its @effect packages as peers), and runs program.mjs against a
# one-node cluster. Catches a package that installs two Effects, lacks a file, or needs Effect 4.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
scratch="$(mktemp -d /tmp/tqlite-package-check-XXXXXX)"
trap 'rm -rf "$scratch"' EXIT
cd "$root"
tarball="$scratch/$(npm pack --silent --pack-destination "$scratch" | tail -n 1)"
cd "$scratch"
npm init -y >/dev/null
# The install line of docs/embedding.md (keep the two the same).
npm install --no-audit --no-fund --prefer-offline "$tarball" \
  "effect@~3.22.4" "@effect/platform@^0.97.2" "@effect/platform-node@^0.108.2" "@effect/sql@^0.52.1" "@effect/experimental@^0.61.1" \
  >install.log 2>&1 || { cat install.log; exit 1; }
# Exactly one copy of effect: two would make the app's tags and tqlite's differ.
copies="$(find node_modules -path '*/effect/package.json' -not -path '*/effect/*/effect/package.json' | grep -c '/effect/package.json$' || true)"
[ "$copies" = "1" ] || { echo "package check: $copies copies of effect installed"; find node_modules -path '*/effect/package.json'; exit 1; }
cp "$root/test/package/program.mjs" .
port="$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')"
timeout 120 node program.mjs "$port"
