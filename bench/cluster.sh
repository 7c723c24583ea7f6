#!/usr/bin/env bash
# Cluster benchmark: Submit throughput and latency of a 1-node and a 3-node
# Sluice cluster on loopback, and the same write load against a 3-node etcd
# cluster (Debian's etcd-server, installed if missing), in one run on one
# machine. Results are recorded in bench/README.md ("## cluster").
#
#   bench/cluster.sh            # all three clusters at 1, 16 and 256 clients, then the table
#   bench/cluster.sh tune       # 3-node Sluice, 256 clients, over raft settings (RAFT_SETTINGS)
#   bench/cluster.sh snapshot   # data-dir size over time under load, with frequent snapshots
#   bench/cluster.sh paths      # 3-node Sluice through its leader and through a follower (bench/ratios.sh)
#
# Knobs (environment): CLIENTS="1 16 256", WARMUP=2s, DURATION=8s, NODES=3
# (tune: the cluster's size),
# PROTO=connect (Sluice's wire protocol: connect, Connect over HTTP/1.1 as the
# sluice CLI and connect-go clients use; connect-raw, the same calls written
# on plain keep-alive connections without net/http's client, a load
# generator light enough to leave the CPUs to the servers; or grpc, gRPC
# over h2c; etcd is always loaded over gRPC, as its own client does),
# BASE_PORT=17700,
# SLUICE_FLAGS (extra flags for every Sluice server), SLUICE_BIN=bin/sluice
# (another build to compare), LOADGEN_FLAGS (extra flags for bench/loadgen;
# -rate=N offers N writes/s in all instead of a closed loop),
# QUIET_WAIT=0 (seconds to wait, before each measurement, for the CPUs to be
# 80% idle: for a machine shared with other work), KEEP=1 keeps the temp dir.
#
# Every acknowledged write is on disk on a majority in both systems: Sluice's
# raft log store fsyncs each batch of log entries on the leader and on each
# follower before they acknowledge (raft-wal by default, one fsync;
# SLUICE_FLAGS=--raft-log-store=bolt for raft-boltdb, a bolt commit of two),
# and etcd fsyncs its WAL before it acknowledges (its default;
# --unsafe-no-fsync is not given).
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=${1:-all}
CLIENTS=${CLIENTS:-"1 16 256"}
WARMUP=${WARMUP:-2s}
DURATION=${DURATION:-8s}
PROTO=${PROTO:-connect}
BASE_PORT=${BASE_PORT:-17700}
SLUICE_FLAGS=${SLUICE_FLAGS:-}
SLUICE_BIN=${SLUICE_BIN:-bin/sluice}
LOADGEN_FLAGS=${LOADGEN_FLAGS:-}
RAFT_SETTINGS=${RAFT_SETTINGS:-"--raft-max-append-entries=64 --raft-max-append-entries=256 --raft-max-append-entries=512 --raft-max-append-entries=1024 --raft-heartbeat-timeout=300ms,--raft-election-timeout=300ms --raft-heartbeat-timeout=1s,--raft-election-timeout=1s"}
ADMIN=bench-admin
TENANTS=64

TMP=$(mktemp -d /tmp/sluice-bench.XXXXXX)
PIDS=()
RESULTS=$TMP/results

cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	PIDS=()
	if [[ -z ${KEEP:-} ]]; then rm -rf "$TMP"; else echo "kept $TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

stop_all() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	PIDS=()
}

# wait_http URL: until it answers 200, for up to 30 s.
wait_http() {
	for _ in $(seq 300); do
		if curl -fsS -o /dev/null "$1" 2>/dev/null; then return 0; fi
		sleep 0.1
	done
	echo "cluster.sh: $1 never answered 200" >&2
	return 1
}

# idle: percent of CPU time idle over the next second.
idle() {
	local a b total=0 i
	read -ra a < <(head -1 /proc/stat)
	sleep 1
	read -ra b < <(head -1 /proc/stat)
	for i in 1 2 3 4 5 6 7 8; do total=$((total + b[i] - a[i])); done
	echo $((100 * (b[4] - a[4]) / (total > 0 ? total : 1)))
}

# load: the load average, and how idle the CPUs were over the last second
# (other work on the machine skews every number below).
load() { echo "load average: $(cut -d' ' -f1-3 /proc/loadavg); CPU idle over 1 s: $(idle)%"; }

# quiet: on a shared machine, wait up to QUIET_WAIT seconds for the CPUs to
# be at least 80% idle before a measurement.
quiet() {
	local end=$((SECONDS + ${QUIET_WAIT:-0}))
	while ((SECONDS < end)) && (($(idle) < 80)); do :; done
}

setup() {
	make -s build
	go build -o "$TMP/loadgen" ./bench/loadgen
	if ! command -v etcd >/dev/null; then
		local sudo=""
		[[ $(id -u) -ne 0 ]] && sudo=sudo
		$sudo apt-get update -qq
		DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq etcd-server >/dev/null
	fi
	echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(go version | cut -d' ' -f3-), etcd $(etcd --version | sed -n 's/etcd Version: //p')"
}

# write_policy FILE [QUEUE_TIMEOUT RETENTION]: 64 tenants (keys bench-key-0..63),
# no rate rules, no queue bounds; no executors are started, so jobs stay
# queued (until QUEUE_TIMEOUT, if given, then are forgotten after RETENTION).
write_policy() {
	local f=$1 qt=${2:-168h} ret=${3:-168h}
	{
		echo "tiers: [{name: pro, weight: 1}]"
		echo "tenants:"
		for i in $(seq 0 $((TENANTS - 1))); do
			echo "  - {name: t$i, tier: pro, api_key_sha256: [\"$(printf '%s' "bench-key-$i" | sha256sum | cut -d' ' -f1)\"]}"
		done
		echo "models: [{name: llama-8b, default_duration: 500ms, gpu_memory_mb: 20480}]"
		echo "admin_token_sha256: \"$(printf '%s' "$ADMIN" | sha256sum | cut -d' ' -f1)\""
		echo "defaults: {queue_timeout: $qt, max_attempts: 3, retry_backoff: 1s, max_backoff: 1m, job_retention: $ret}"
		echo "scheduling: {max_queued: 0, max_queued_per_tenant: 0, max_queued_per_model: 0}"
	} >"$f"
}

# start_sluice NAME N [FLAGS...]: an N-node cluster, n1 bootstraps and leads;
# its API is http://127.0.0.1:$((BASE_PORT+1)).
start_sluice() {
	local name=$1 n=$2
	shift 2
	local dir=$TMP/$name
	mkdir -p "$dir"
	[[ -f $TMP/policy.yaml ]] || write_policy "$TMP/policy.yaml"
	for i in $(seq "$n"); do
		local extra=()
		[[ $i -eq 1 ]] && extra=(--bootstrap --policy "$TMP/policy.yaml")
		# shellcheck disable=SC2086
		"$SLUICE_BIN" server --id "n$i" --data "$dir/n$i" --http "127.0.0.1:$((BASE_PORT + i))" \
			--raft "127.0.0.1:$((BASE_PORT + 10 + i))" --executors 0 "${extra[@]}" $SLUICE_FLAGS "$@" \
			>"$dir/n$i.log" 2>&1 &
		PIDS+=($!)
	done
	wait_http "http://127.0.0.1:$((BASE_PORT + 1))/readyz" || { tail -n 3 "$dir"/*.log >&2; return 1; }
	for i in $(seq 2 "$n"); do
		wait_http "http://127.0.0.1:$((BASE_PORT + i))/healthz"
		bin/sluice --addr "http://127.0.0.1:$((BASE_PORT + 1))" --key "$ADMIN" admin join --id "n$i" \
			--raft "127.0.0.1:$((BASE_PORT + 10 + i))" --http "127.0.0.1:$((BASE_PORT + i))" >/dev/null
	done
	for i in $(seq "$n"); do wait_http "http://127.0.0.1:$((BASE_PORT + i))/readyz"; done
}

# start_etcd NAME: three members; clients on BASE_PORT+21..23, peers on +31..33.
start_etcd() {
	local dir=$TMP/$1 cluster=""
	mkdir -p "$dir"
	for i in 1 2 3; do cluster+="${cluster:+,}e$i=http://127.0.0.1:$((BASE_PORT + 30 + i))"; done
	for i in 1 2 3; do
		etcd --name "e$i" --data-dir "$dir/e$i" \
			--listen-client-urls "http://127.0.0.1:$((BASE_PORT + 20 + i))" \
			--advertise-client-urls "http://127.0.0.1:$((BASE_PORT + 20 + i))" \
			--listen-peer-urls "http://127.0.0.1:$((BASE_PORT + 30 + i))" \
			--initial-advertise-peer-urls "http://127.0.0.1:$((BASE_PORT + 30 + i))" \
			--initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token sluice-bench \
			--logger zap --log-level warn >"$dir/e$i.log" 2>&1 &
		PIDS+=($!)
	done
	for i in 1 2 3; do wait_http "http://127.0.0.1:$((BASE_PORT + 20 + i))/health"; done
}

etcd_addrs() { echo "http://127.0.0.1:$((BASE_PORT + 21)),http://127.0.0.1:$((BASE_PORT + 22)),http://127.0.0.1:$((BASE_PORT + 23))"; }

# cpu_ticks: CPU time (user + system, in clock ticks) used so far by the
# servers started here.
cpu_ticks() {
	local t=0 p f
	for p in "${PIDS[@]}"; do
		read -ra f <"/proc/$p/stat" || continue
		t=$((t + f[13] + f[14]))
	done
	echo "$t"
}

# measure LABEL TARGET ADDRS PROTO CLIENTS: one loadgen run; its RESULT line,
# with the servers' CPU µs per write (over the whole run, warm-up included:
# less sensitive than writes/s to other load on the machine), goes to $RESULTS.
measure() {
	local out c0 c1 hz total
	hz=$(getconf CLK_TCK)
	quiet
	echo "$1, $5 clients: $(load)"
	c0=$(cpu_ticks)
	out=$("$TMP/loadgen" -label "$1" -target "$2" -addr "$3" -proto "$4" -clients "$5" -warmup "$WARMUP" -duration "$DURATION" $LOADGEN_FLAGS) || true
	c1=$(cpu_ticks)
	total=$(sed -n 's/^RESULT.* total=\([0-9]*\).*/\1/p' <<<"$out")
	local us=$(((c1 - c0) * 1000000 / hz / (${total:-0} > 0 ? total : 1)))
	echo "$out" | grep -v '^RESULT' || true
	echo "  servers' CPU: $us µs per write"
	echo "$(grep '^RESULT' <<<"$out") cpu_us=$us" >>"$RESULTS"
}

compare() {
	load
	start_sluice sluice1 1
	for c in $CLIENTS; do measure sluice1 sluice "http://127.0.0.1:$((BASE_PORT + 1))" "$PROTO" "$c"; done
	stop_all
	load
	start_sluice sluice3 3
	for c in $CLIENTS; do measure sluice3 sluice "http://127.0.0.1:$((BASE_PORT + 1))" "$PROTO" "$c"; done
	# The same through a follower, which forwards each Submit to the leader.
	for c in $CLIENTS; do measure sluice3f sluice "http://127.0.0.1:$((BASE_PORT + 2))" "$PROTO" "$c"; done
	stop_all
	load
	start_etcd etcd3
	for c in $CLIENTS; do measure etcd3 etcd "$(etcd_addrs)" grpc "$c"; done
	stop_all
	load
	echo
	echo "writes/s, latency (ms) and the servers' CPU µs per write; Sluice via $PROTO, etcd via grpc; ${DURATION} measured after ${WARMUP} warm-up"
	awk '
		{ for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
		  k = v["label"] SUBSEP v["clients"]; rate[k] = v["rate"]; p50[k] = v["p50_ms"]; p99[k] = v["p99_ms"]; cpu[k] = v["cpu_us"]
		  if (!(v["clients"] in seen)) { seen[v["clients"]] = 1; order[++n] = v["clients"] } }
		END {
			print "| clients | sluice 1-node /s | p50 | p99 | CPU µs | sluice 3-node /s | p50 | p99 | CPU µs | etcd 3-node /s | p50 | p99 | CPU µs | 3-node sluice/etcd /s |"
			print "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
			for (i = 1; i <= n; i++) {
				c = order[i]; a = "sluice1" SUBSEP c; b = "sluice3" SUBSEP c; e = "etcd3" SUBSEP c
				ratio = (rate[e] > 0) ? sprintf("%.2f", rate[b] / rate[e]) : "-"
				printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", c, rate[a], p50[a], p99[a], cpu[a], rate[b], p50[b], p99[b], cpu[b], rate[e], p50[e], p99[e], cpu[e], ratio
			}
		}' "$RESULTS"
	echo
	echo "3-node Sluice through a follower (n2 forwards to the leader n1):"
	echo "| clients | writes/s | p50 | p99 | CPU µs |"
	echo "|---:|---:|---:|---:|---:|"
	awk '{ for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
		if (v["label"] == "sluice3f") printf "| %s | %s | %s | %s | %s |\n", v["clients"], v["rate"], v["p50_ms"], v["p99_ms"], v["cpu_us"] }' "$RESULTS"
}

# tune: the 3-node, 256-client case once per entry of RAFT_SETTINGS (each a
# flag=value, or several joined with commas; "default" for none), on a fresh
# cluster each time, REPEAT rounds with the settings interleaved so that
# other load on the machine falls on all of them alike.
tune() {
	local c=${CLIENTS##* }
	for r in $(seq "${REPEAT:-2}"); do
		for s in $RAFT_SETTINGS; do
			load
			local flags=${s//,/ }
			[[ $s == default ]] && flags=""
			# shellcheck disable=SC2086
			start_sluice "tune" "${NODES:-3}" $flags
			measure "$s#$r" sluice "http://127.0.0.1:$((BASE_PORT + 1))" "$PROTO" "$c"
			stop_all
			rm -rf "$TMP/tune"
		done
	done
	echo
	echo "${NODES:-3}-node Sluice, $c clients via $PROTO, ${DURATION} measured after ${WARMUP} warm-up; #n is the round"
	echo "| raft setting | writes/s | p50 ms | p99 ms | max ms | servers' CPU µs/write | load generator's CPU µs/write |"
	echo "|---|---:|---:|---:|---:|---:|---:|"
	sort -t= -k2,2 -s "$RESULTS" | awk '{ for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = substr($i, length(kv[1]) + 2) }
		printf "| %s | %s | %s | %s | %s | %s | %s |\n", v["label"], v["rate"], v["p50_ms"], v["p99_ms"], v["max_ms"], v["cpu_us"], v["client_cpu_us"] }'
}

# snapshot: a 3-node cluster snapshotting every 1000 entries (checked every
# 1-2 s, 500 kept), under 16 clients for SNAP_SECONDS (30); du of the
# leader's data dir every 3 s. Jobs time out of the queue after
# SNAP_QUEUE_TIMEOUT (5s) and are forgotten 5 s later, so the state itself
# stays bounded too; SNAP_QUEUE_TIMEOUT=168h keeps every job, and the
# snapshots grow with the queue.
snapshot() {
	local secs=${SNAP_SECONDS:-30}
	write_policy "$TMP/policy.yaml" "${SNAP_QUEUE_TIMEOUT:-5s}" 5s
	start_sluice snap 3 --raft-snapshot-threshold 1000 --raft-trailing-logs 500 --raft-snapshot-interval 1s --raft-wal-segment-mib 1
	"$TMP/loadgen" -label snapshot -target sluice -addr "http://127.0.0.1:$((BASE_PORT + 1))" -proto "$PROTO" \
		-clients 16 -warmup 0s -duration "${secs}s" >"$TMP/snap.out" &
	local lg=$!
	PIDS+=($lg)
	echo "| t (s) | n1 total | wal/ | raft.db | snapshots/ (count) | n3 total |"
	echo "|---:|---:|---:|---:|---:|---:|"
	for t in $(seq 0 3 $((secs + 6))); do
		local d=$TMP/snap/n1
		printf '| %s | %s | %s | %s | %s (%s) | %s |\n' "$t" "$(du -sh "$d" | cut -f1)" "$(du -sh "$d/wal" 2>/dev/null | cut -f1)" "$(du -sh "$d/raft.db" | cut -f1)" \
			"$(du -sh "$d/snapshots" 2>/dev/null | cut -f1)" "$(find "$d/snapshots" -mindepth 1 -maxdepth 1 -type d 2>/dev/null | wc -l)" \
			"$(du -sh "$TMP/snap/n3" | cut -f1)"
		sleep 3
	done
	wait "$lg" || true
	cat "$TMP/snap.out"
}

# paths: a 3-node Sluice, Submits through the leader and through a follower,
# interleaved REPEAT times (default 2) at the last of CLIENTS, the two in turn
# first (the state, and the collector's work, grow as the run goes on); prints
# the RESULT lines (labels 3node-leader and 3node-follower) for bench/ratios.sh.
paths() {
	local c=${CLIENTS##* }
	start_sluice paths 3
	for r in $(seq "${REPEAT:-2}"); do
		if ((r % 2)); then
			measure 3node-leader sluice "http://127.0.0.1:$((BASE_PORT + 1))" "$PROTO" "$c"
			measure 3node-follower sluice "http://127.0.0.1:$((BASE_PORT + 2))" "$PROTO" "$c"
		else
			measure 3node-follower sluice "http://127.0.0.1:$((BASE_PORT + 2))" "$PROTO" "$c"
			measure 3node-leader sluice "http://127.0.0.1:$((BASE_PORT + 1))" "$PROTO" "$c"
		fi
	done
	stop_all
	cat "$RESULTS"
}

setup
load
: >"$RESULTS"
case $MODE in
all) compare ;;
tune) tune ;;
snapshot) snapshot ;;
paths) paths ;;
*)
	echo "usage: bench/cluster.sh [all|tune|snapshot|paths]" >&2
	exit 2
	;;
esac
