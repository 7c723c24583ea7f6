#!/usr/bin/env bash
# ETA honesty on a live server, beside the simulator's on the same workload: starts `sluice
# dev` (one node, four synthetic executors) with bench/eta-live/policy.yaml, offers it
# Poisson Submits from six tenants for DURATION seconds (bench/eta-live/load.py: 400 ms ±
# 150 ms jobs at RATE a second, about 85 % of the executors), then prints what the leader's
# /metrics counted of the ETAs it told (sluice_eta_starts_total, sluice_eta_error_ratio: one
# admitted job in 16) next to `sluice sim run` of bench/eta-live/live.yaml, the same load
# simulated (at RATE for DURATION too). Recorded in bench/README.md ("ETA honesty, live").
#
#   bench/eta-live.sh            # 10 minutes at 8.5 jobs/s
#   RATE=8.5 DURATION=600 PORT=17790 bench/eta-live.sh
set -euo pipefail
cd "$(dirname "$0")/.."

RATE=${RATE:-8.5}
DURATION=${DURATION:-600}
PORT=${PORT:-17790}
go build -o bin/sluice ./cmd/sluice
tmp=$(mktemp -d)
pid=""
trap '[ -n "$pid" ] && { kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true; }; rm -rf "$tmp"' EXIT
bin/sluice dev --data "$tmp/data" --http "127.0.0.1:$PORT" --gossip "" \
  --policy bench/eta-live/policy.yaml > "$tmp/dev.log" 2>&1 &
pid=$!
ready=""
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$PORT/readyz" > /dev/null && { ready=1; break; }
  sleep 0.1
done
[ -n "$ready" ] || { echo "eta-live: sluice dev not ready on port $PORT after 10 s:" >&2; cat "$tmp/dev.log" >&2; exit 1; }
sleep 1 # the executors lease
python3 bench/eta-live/load.py "http://127.0.0.1:$PORT" "$RATE" "$DURATION"
sleep 5 # the last queued jobs start
curl -sf "http://127.0.0.1:$PORT/metrics" > "$tmp/metrics.txt"
# The same load simulated, at RATE for DURATION.
cp bench/eta-live/policy.yaml "$tmp/policy.yaml"
python3 bench/eta-live/workload.py bench/eta-live/live.yaml "$RATE" "$DURATION" > "$tmp/live.yaml"
bin/sluice sim run --workload "$tmp/live.yaml" -o json > "$tmp/sim.json" 2> "$tmp/sim.err" || { cat "$tmp/sim.err" >&2; exit 1; }
python3 bench/eta-live/summary.py "$tmp/metrics.txt" "$tmp/sim.json"
