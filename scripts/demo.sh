#!/usr/bin/env bash
# The main job end to end on a fresh machine: install, start a throwaway PostgreSQL, build lop,
# migrate the database and check it. Later stages (queue, pruning, search, predictor) extend this script.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
dir=$(mktemp -d /tmp/lop-demo-pg.XXXXXX)
trap 'bash scripts/pg.sh stop "$dir"' EXIT
server=$(bash scripts/pg.sh start "$dir")
psql "$server" -qc "CREATE DATABASE lop" >/dev/null
export LOP_DATABASE_URL="${server/dbname=postgres/dbname=lop}"
swift build
lop=$(swift build --show-bin-path)/lop
echo "== lop migrate"
"$lop" migrate
echo "== lop migrate (again: a no-op)"
"$lop" migrate
echo "== lop db check"
"$lop" db check
