#!/bin/sh
# Every headline ratio of issue 25 in one table: each Sluice figure measured
# beside its anchor in the same run (interleaved, medians), then the ratio
# and the goal. Run it before landing a change to fsm/, scheduler/,
# limiter/ or sim/, and put the table in bench/README.md.
#
#   bench/ratios.sh              # everything (about 8 minutes on two cores)
#   SKIP_CLUSTER=1 bench/ratios.sh   # without the follower/leader row (the slowest)
#
# Knobs: SIM_JOBS=1000000 (or 100000), RUNS=3 (benchmark repetitions; medians).
set -eu
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
SIM_JOBS=${SIM_JOBS:-1000000}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

median() { sort -g | awk '{a[NR] = $1} END {if (NR) print a[int((NR + 1) / 2)]}'; }
# bench PKG REGEXP: run the package's benchmarks RUNS times, interleaved by -count.
bench() { go test -run '^$' -bench "$2" -benchmem -count "$RUNS" -benchtime "${BENCHTIME:-1s}" "$1" >>"$out/bench.txt" 2>&1; }
# ns NAME: the median ns/op of the benchmark lines whose name is NAME (with -2 etc.).
ns() { grep -E "^$1(-[0-9]+)?[[:space:]]" "$out/bench.txt" | awk '{for (i = 1; i < NF; i++) if ($(i+1) == "ns/op") print $i}' | median; }
metric() { grep -E "^$1(-[0-9]+)?[[:space:]]" "$out/bench.txt" | awk -v u="$2" '{for (i = 1; i < NF; i++) if ($(i+1) == u) print $i}' | median; }
rows=""
row() { rows="$rows$(printf '| %s | %s | %s | %s | %s |' "$1" "$2" "$3" "$4" "$5")
"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.2f", a / b; else print "-"}'; }

echo "bench/ratios.sh $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo ?), $(nproc) CPUs $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(go version | cut -d' ' -f3)" >&2

# 1. The simulator against SimPy on M/M/4, rho = 0.9 (three runs each, interleaved).
bench/simpy/run.sh "$SIM_JOBS" >"$out/sim.txt" 2>&1 || { cat "$out/sim.txt" >&2; exit 1; }
sim=$(tail -1 "$out/sim.txt")
go_rate=$(echo "$sim" | sed -n 's/.*sluice sim \([0-9]*\) jobs\/s.*/\1/p')
py_rate=$(echo "$sim" | sed -n 's/.*simpy \([0-9]*\) jobs\/s.*/\1/p')
row "simulator, M/M/4 ρ=0.9, $SIM_JOBS jobs through the FSM" "$go_rate jobs/s" "SimPy $py_rate jobs/s" "$(ratio "$go_rate" "$py_rate")×" "≥ 3×"

# 2. The limiter: one key through the keyed table against x/time/rate's AllowN on one
# limiter; 1M keys on both cores against x/time/rate in a map under an RWMutex, looked up
# with the stored strings (Sluice's table gets copies).
bench ./limiter/ 'BenchmarkState/x-time-rate$|BenchmarkKeyed/one-key/token-bucket/serial|BenchmarkKeyed/1M-keys-in-cache/(x-time-rate-rwmutex-map|token-bucket)/parallel'
one=$(ns BenchmarkKeyed/one-key/token-bucket/serial)
xone=$(ns BenchmarkState/x-time-rate)
row "limiter, one key, keyed table (ns/op)" "$one" "x/time/rate AllowN $xone" "$(ratio "$one" "$xone")×" "≤ 1.0×"
many=$(ns BenchmarkKeyed/1M-keys-in-cache/token-bucket/parallel)
xmany=$(ns BenchmarkKeyed/1M-keys-in-cache/x-time-rate-rwmutex-map/parallel)
row "limiter, 1M keys, both cores (throughput)" "$many ns/op" "x/time/rate + RWMutex map $xmany ns/op" "$(ratio "$xmany" "$many")×" "≥ 2×"

# 3. Memory per queued job on a replica, and dispatch with 100k and 1M jobs queued.
bench ./fsm/ 'BenchmarkQueuedJobMemory$'
mem=$(metric BenchmarkQueuedJobMemory bytes/job)
row "memory per queued job (bytes)" "$mem" "—" "$(ratio "$mem" 512)× the goal" "≤ 512 B"
bench ./scheduler/ 'BenchmarkDispatch/queued=(100000|1000000)/free=1$'
for n in 100000 1000000; do
	d=$(ns "BenchmarkDispatch/queued=$n/free=1")
	row "dispatch, $n queued, one free slot (ns/op)" "$d" "—" "—" "(recorded)"
done

# 4. Submit through a follower against through the leader, 3 nodes, 256 clients.
if [ -z "${SKIP_CLUSTER:-}" ]; then
	CLIENTS=256 bench/cluster.sh paths >"$out/cluster.txt" 2>&1 || { tail -20 "$out/cluster.txt" >&2; exit 1; }
	field() { grep '^RESULT' "$out/cluster.txt" | grep "label=$1 " | sed -n "s/.* $2=\([0-9.]*\).*/\1/p" | median; }
	lw=$(field 3node-leader rate)
	fw=$(field 3node-follower rate)
	lp=$(field 3node-leader p99_ms)
	fp=$(field 3node-follower p99_ms)
	row "Submit via a follower, 3 nodes, 256 clients" "$fw writes/s, p99 $fp ms" "via the leader $lw writes/s, p99 $lp ms" "$(ratio "$fw" "$lw")×, p99 $(ratio "$fp" "$lp")×" "≥ 0.9×, p99 ≤ 1.3×"
fi

echo "| figure | Sluice | anchor, same run | ratio | goal |"
echo "|---|---|---|---|---|"
printf '%s' "$rows"
