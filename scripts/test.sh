#!/usr/bin/env bash
# Runs lop's tests: installs what is missing, starts a throwaway PostgreSQL, builds, runs `swift test`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
dir=$(mktemp -d /tmp/lop-test-pg.XXXXXX)
trap 'bash scripts/pg.sh stop "$dir"' EXIT
export LOP_TEST_DATABASE_URL=$(bash scripts/pg.sh start "$dir")
swift build --build-tests
swift test --skip-build "$@"
