#!/usr/bin/env bash
# The main job end to end on a fresh machine: install, start a throwaway PostgreSQL, build lop, migrate,
# start a worker, submit jobs by SQL INSERT and by the CLI, and follow them to completion.
# Then pruning; the registry; a sweep by two workers, the predictor trained and promoted by a train job, compress jobs
# by SQL and by the CLI; and signed webhooks for every event.
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
echo "== lop doctor (database, migrations, BLAS kernel, libcurl, artifact root, memory)"
"$lop" doctor
echo "== webhooks: a receiver on 127.0.0.1 (allowed by LOP_WEBHOOKS_ALLOW_HOSTS), an endpoint, and lop-notifier"
export LOP_WEBHOOKS_ALLOW_HOSTS=127.0.0.1
python3 scripts/webhook_receiver.py >"$dir/receiver.port" &
receiver_pid=$!
for _ in $(seq 100); do [ -s "$dir/receiver.port" ] && break; sleep 0.1; done
"$lop" webhooks add "http://127.0.0.1:$(head -n1 "$dir/receiver.port")/ok"
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
echo "== the registry: tiny-llama registered as a base model (validated, evaluated, copied under the artifact root, hashed)"
export LOP_ARTIFACTS_ROOT="$dir/artifacts"
"$lop" models register Fixtures/tiny-llama --name tiny-llama
echo "== search: a sweep over five budgets, submitted by SQL, fanned out to one search job per budget, run by two workers"
"$(dirname "$lop")/lop-worker" --name demo-1 --concurrency 1 2>>"$dir/worker.log" &
worker_pid=$!
"$(dirname "$lop")/lop-worker" --name demo-2 --concurrency 2 2>>"$dir/worker.log" &
worker_pid="$worker_pid $!"
sweep=$(psql "$LOP_DATABASE_URL" -qtAc "INSERT INTO lop.jobs (kind, args) VALUES ('sweep', '{\"model\": \"tiny-llama\", \"budgets\": {\"from\": 0.3, \"to\": 0.7, \"step\": 0.1}, \"search\": {\"simulations\": 60}}') RETURNING id")
"$lop" watch "$sweep"
"$lop" status "$sweep" | grep -A6 '^children'
echo "== every evaluated strategy is a sample"
"$lop" samples list --model "$(psql "$LOP_DATABASE_URL" -qtAc "SELECT content_hash FROM lop.models WHERE name = 'tiny-llama'")" | tail -n 4
echo "== the predictor: a train job (as the nightly schedule runs it) registers it and makes it champion"
train=$("$lop" submit train --model tiny-llama --arg steps=400 --arg ensemble=2)
"$lop" watch "$train"
"$lop" models show tiny-llama.predictor@champion | sed -n '1,3p;/^lineage/,$p'
echo "== compress at budgets no search ran: by SQL INSERT (auto), by the CLI (predict), and one outside the trained range (auto searches)"
c1=$(psql "$LOP_DATABASE_URL" -qtAc "INSERT INTO lop.jobs (kind, args) VALUES ('compress', '{\"model\": \"tiny-llama\", \"budget\": 0.45, \"method\": \"auto\"}') RETURNING id")
c2=$("$lop" submit compress --model tiny-llama --budget 0.55 --method predict)
c3=$("$lop" submit compress --model tiny-llama --budget 0.2 --method auto --arg 'search={"simulations": 40}')
for c in $c1 $c2 $c3; do "$lop" watch "$c" >/dev/null; "$lop" status "$c" | sed -n '/^stages/,$p'; done
echo "== the same request again reuses the registered model"
c4=$("$lop" submit compress --model tiny-llama --budget 0.55 --method predict)
"$lop" watch "$c4" >/dev/null
"$lop" status "$c4" | grep '^model'
echo "== the registry"
"$lop" models list
for p in $worker_pid; do kill -TERM "$p"; wait "$p"; done; worker_pid=
echo "== HTML report of tiny-llama-pruned:1: $LOP_ARTIFACTS_ROOT/$(psql "$LOP_DATABASE_URL" -qtAc "SELECT artifact_path FROM lop.models WHERE name = 'tiny-llama-pruned' AND version = 1")/report.html"
echo "== one search in process; its best strategy pruned and evaluated"
"$lop" search Fixtures/tiny-llama --budget 0.5 --set simulations=100 --out "$dir/searched-50.json"
"$lop" prune Fixtures/tiny-llama --calibration corpus --budget 0.5 --strategy "$dir/searched-50.json" --out "$dir/tiny-llama-50-searched" --dtype f16
"$lop" eval "$dir/tiny-llama-50-searched" --data Fixtures/tiny-llama/heldout.bin
echo "== webhooks: one signed delivery per finished job"
sleep 1
"$lop" webhooks deliveries
python3 -c 'import sys, urllib.request; print("receiver:", urllib.request.urlopen(sys.argv[1]).read().decode())' "http://127.0.0.1:$(head -n1 "$dir/receiver.port")/_stats"
