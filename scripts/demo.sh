#!/usr/bin/env bash
# The main job end to end on a fresh machine: install, start a throwaway PostgreSQL, build lop, migrate,
# start a worker, submit jobs by SQL INSERT and by the CLI, and follow them to completion.
# Then pruning, search and sweeps, the predictor, and signed webhooks for every finished job.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
dir=$(mktemp -d /tmp/lop-demo-pg.XXXXXX)
worker_pid=
notifier_pid=
receiver_pid=
trap 'for p in $worker_pid $notifier_pid $receiver_pid; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; bash scripts/pg.sh stop "$dir"' EXIT
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
echo "== webhooks: a receiver on 127.0.0.1 (allowed by LOP_WEBHOOKS_ALLOW_HOSTS), an endpoint, and lop-notifier"
export LOP_WEBHOOKS_ALLOW_HOSTS=127.0.0.1
python3 scripts/webhook_receiver.py >"$dir/receiver.port" &
receiver_pid=$!
for _ in $(seq 100); do [ -s "$dir/receiver.port" ] && break; sleep 0.1; done
"$lop" webhooks add "http://127.0.0.1:$(head -n1 "$dir/receiver.port")/ok" --events job.completed,job.failed,job.cancelled
"$(dirname "$lop")/lop-notifier" 2>"$dir/notifier.log" &
notifier_pid=$!
echo "== lop-worker (in the background)"
"$(dirname "$lop")/lop-worker" --concurrency 2 2>"$dir/worker.log" &
worker_pid=$!
echo "== submit by SQL INSERT and by the CLI"
sql_job=$(psql "$LOP_DATABASE_URL" -qtAc "INSERT INTO lop.jobs (kind, args) VALUES ('sleep', '{\"seconds\": 2}') RETURNING id")
cli_job=$("$lop" submit sleep --arg seconds=1 --priority 1)
echo "submitted jobs $sql_job (SQL) and $cli_job (CLI)"
"$lop" watch "$sql_job"
"$lop" watch "$cli_job"
"$lop" list
kill -TERM "$worker_pid"; wait "$worker_pid"; worker_pid=
echo "== worker log"
cat "$dir/worker.log"
echo "== pruning tiny-llama: every baseline at three budgets, one table (and a report)"
"$lop" compare Fixtures/tiny-llama --calibration corpus --data Fixtures/tiny-llama/heldout.bin --budgets 0.3,0.5,0.7 --report "$dir/report"
echo "== a 50 % variant: smaller checkpoint with pruning.json, then evaluated"
"$lop" prune Fixtures/tiny-llama --calibration corpus --budget 0.5 --strategy uniform --out "$dir/tiny-llama-50" --dtype f16
ls -l "$dir/tiny-llama-50"
"$lop" eval "$dir/tiny-llama-50" --data Fixtures/tiny-llama/heldout.bin
echo "== search: a sweep over four budgets, submitted by SQL, fanned out to one search job per budget"
"$(dirname "$lop")/lop-worker" --concurrency 2 2>>"$dir/worker.log" &
worker_pid=$!
sweep=$(psql "$LOP_DATABASE_URL" -qtAc "INSERT INTO lop.jobs (kind, args) VALUES ('sweep', '{\"model\": \"Fixtures/tiny-llama\", \"budgets\": {\"from\": 0.3, \"to\": 0.6, \"step\": 0.1}, \"search\": {\"simulations\": 60}}') RETURNING id")
"$lop" watch "$sweep"
"$lop" status "$sweep" | grep -A5 '^children'
echo "== every evaluated strategy is a sample"
"$lop" samples list --model Fixtures/tiny-llama
kill -TERM "$worker_pid"; wait "$worker_pid"; worker_pid=
echo "== one search in process; its best strategy pruned and evaluated"
"$lop" search Fixtures/tiny-llama --budget 0.5 --set simulations=100 --out "$dir/searched-50.json"
"$lop" prune Fixtures/tiny-llama --calibration corpus --budget 0.5 --strategy "$dir/searched-50.json" --out "$dir/tiny-llama-50-searched" --dtype f16
"$lop" eval "$dir/tiny-llama-50-searched" --data Fixtures/tiny-llama/heldout.bin
echo "== the predictor: trained on the sweep's samples, then a strategy for a budget no search ran"
"$lop" predictor train --model Fixtures/tiny-llama --steps 300 --ensemble 2 --out "$dir/predictor.safetensors"
"$lop" predict --predictor "$dir/predictor.safetensors" --budget 0.45 --model Fixtures/tiny-llama
echo "== webhooks: one signed delivery per finished job"
sleep 1
"$lop" webhooks deliveries
python3 -c 'import sys, urllib.request; print("receiver:", urllib.request.urlopen(sys.argv[1]).read().decode())' "http://127.0.0.1:$(head -n1 "$dir/receiver.port")/_stats"
