#!/usr/bin/env bash
# Gateway rate-limit benchmark: checks per second and check latency of
# Sluice's gateway checks (the Envoy rate limit service, ShouldRateLimit, and
# LimitService Check and CheckBatch) on a 3-node cluster, beside a GCRA Lua
# script on one Redis (bench/gateway/gcra.lua, EVALSHA, one per call and
# pipelined) and envoyproxy/ratelimit in front of that Redis, in one run on
# one machine.
#
#   bench/gateway.sh    # the matrix, closed loop, then open-loop rates, then the table
#
# Every check names a key drawn uniformly from KEYS distinct keys ("user=<id>";
# envoyproxy/ratelimit and Sluice's ShouldRateLimit get the descriptor
# [(user, <id>)]). The limits are generous (a GCRA of a million a second,
# bursts of a million; ratelimit: a million a second per key), so every check
# is allowed and charged; one more set of Sluice rows ("all refused", 1 key)
# runs against a limit of 1 an hour, where a refusal is answered from the
# leader's memory without the raft log.
#
# Knobs (environment): SYSTEMS="redis-gcra redis-gcra-pipelined envoy-ratelimit
# envoy-ratelimit-pipelined sluice-rls sluice-check sluice-checkbatch
# sluice-refused", CLIENTS="1 64 256", KEYS="1 1000000", WARMUP=2s,
# DURATION=5s, RATES="5000 20000 50000" (open loop, checks/s offered in all by
# 64 clients over 1M keys, for redis-gcra, sluice-rls and sluice-checkbatch;
# RATES="" skips them), BATCH=32 (CheckBatch), PIPELINE=32 (Redis pipelines),
# REFUSED_CLIENTS="64" (the all-refused rows), PROTO=connect (LimitService's
# wire protocol: connect, Connect over HTTP/1.1 as connect-go's clients use by
# default; or grpc, gRPC over h2c), RLS_CONNS=1 (gRPC connections the rls
# clients share), BASE_PORT=17800, REDIS_PORT=6390, SLUICE_FLAGS (extra
# flags for every Sluice server), SLUICE_BIN=bin/sluice, LOADGEN_FLAGS,
# KEEP=1 keeps the temp dir.
#
# Fairness: everything runs on the same machine and shares its CPUs (on the
# 2-CPU machine the numbers in bench/README.md come from, the load generator
# takes a good part of them): the systems are loaded one after the other,
# only the servers of the system measured running. The systems do not promise
# the same thing: a Sluice check is answered once its charge is committed
# (fsynced) on 2 of the 3 raft nodes (the leader decides; a refusal is answered
# from its memory); Redis here is one in-memory process, no persistence
# (--save '' --appendonly no), no replica: a crash loses every counter, and
# envoyproxy/ratelimit inherits that.
set -euo pipefail
cd "$(dirname "$0")/.."

SYSTEMS=${SYSTEMS:-"redis-gcra redis-gcra-pipelined envoy-ratelimit envoy-ratelimit-pipelined sluice-rls sluice-check sluice-checkbatch sluice-refused"}
CLIENTS=${CLIENTS:-"1 64 256"}
KEYS=${KEYS:-"1 1000000"}
WARMUP=${WARMUP:-2s}
DURATION=${DURATION:-5s}
RATES=${RATES-"5000 20000 50000"}
BATCH=${BATCH:-32}
PIPELINE=${PIPELINE:-32}
REFUSED_CLIENTS=${REFUSED_CLIENTS:-64}
PROTO=${PROTO:-connect}
RLS_CONNS=${RLS_CONNS:-1}
BASE_PORT=${BASE_PORT:-17800}
REDIS_PORT=${REDIS_PORT:-6390}
SLUICE_FLAGS=${SLUICE_FLAGS:-}
SLUICE_BIN=${SLUICE_BIN:-bin/sluice}
LOADGEN_FLAGS=${LOADGEN_FLAGS:-}
# envoyproxy/ratelimit's main at a commit of 2026-01-22 (it tags no releases).
RATELIMIT_VERSION=${RATELIMIT_VERSION:-v1.4.1-0.20260122083618-3fb702589d36}
ADMIN=bench-admin
TOKEN=bench-gateway

TMP=$(mktemp -d /tmp/sluice-gateway.XXXXXX)
PIDS=()  # every server started here
GROUP=() # the servers of the system being measured (their CPU is counted)
RESULTS=$TMP/results
RATELIMIT=""

cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	PIDS=()
	if [[ -z ${KEEP:-} ]]; then rm -rf "$TMP"; else echo "kept $TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# stop PID...: stop those servers and forget them.
stop() {
	local p q keep=()
	for p in "$@"; do kill "$p" 2>/dev/null || true; done
	for p in "$@"; do wait "$p" 2>/dev/null || true; done
	for q in "${PIDS[@]}"; do
		[[ " $* " == *" $q "* ]] || keep+=("$q")
	done
	PIDS=("${keep[@]}")
}

# wait_http URL: until it answers 200, for up to 30 s.
wait_http() {
	for _ in $(seq 300); do
		if curl -fsS -o /dev/null "$1" 2>/dev/null; then return 0; fi
		sleep 0.1
	done
	echo "gateway.sh: $1 never answered 200" >&2
	return 1
}

# wait_port PORT: until something listens on 127.0.0.1:PORT, for up to 30 s.
wait_port() {
	for _ in $(seq 300); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
		sleep 0.1
	done
	echo "gateway.sh: nothing listens on port $1" >&2
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

has() { [[ " $SYSTEMS " == *" $1 "* ]]; }

setup() {
	local sudo=""
	[[ $(id -u) -ne 0 ]] && sudo=sudo
	make -s build
	go build -o "$TMP/loadgen" ./bench/loadgen
	if ! command -v redis-server >/dev/null; then
		$sudo apt-get update -qq
		DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-server >/dev/null
	fi
	if has envoy-ratelimit || has envoy-ratelimit-pipelined; then
		if [[ -x .bin/service_cmd ]] || GOBIN=$PWD/.bin go install "github.com/envoyproxy/ratelimit/src/service_cmd@$RATELIMIT_VERSION"; then
			RATELIMIT=$PWD/.bin/service_cmd
		else
			echo "gateway.sh: envoyproxy/ratelimit@$RATELIMIT_VERSION did not build: its rows are skipped" >&2
		fi
	fi
	echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(go version | cut -d' ' -f3-), redis $(redis-server --version | sed -n 's/.* v=\([^ ]*\).*/\1/p')"
}

# start_redis: one redis-server on REDIS_PORT, in memory only.
start_redis() {
	redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
		--dir "$TMP" --logfile "$TMP/redis.log" &
	REDIS_PID=$!
	PIDS+=("$REDIS_PID")
	wait_port "$REDIS_PORT"
}

# start_ratelimit NAME [ENV...]: envoyproxy/ratelimit on BASE_PORT+41 (gRPC),
# +42 (HTTP), +43 (debug), with its counters in the Redis above and one
# descriptor rule: a million a second per user. Its statistics are off
# (DISABLE_STATS): with USE_STATSD=false alone they go to stdout, a JSON line
# for every request's response time, which would weigh on it here.
start_ratelimit() {
	local name=$1
	shift
	mkdir -p "$TMP/rt/ratelimit/config"
	cat >"$TMP/rt/ratelimit/config/config.yaml" <<-EOF
		domain: bench
		descriptors:
		  - key: user
		    rate_limit: {unit: second, requests_per_unit: 1000000}
	EOF
	env USE_STATSD=false DISABLE_STATS=true REDIS_SOCKET_TYPE=tcp REDIS_URL="127.0.0.1:$REDIS_PORT" \
		RUNTIME_ROOT="$TMP/rt" RUNTIME_SUBDIRECTORY=ratelimit RUNTIME_APPDIRECTORY=config RUNTIME_WATCH_ROOT=false \
		GRPC_HOST=127.0.0.1 GRPC_PORT=$((BASE_PORT + 41)) HOST=127.0.0.1 PORT=$((BASE_PORT + 42)) \
		DEBUG_HOST=127.0.0.1 DEBUG_PORT=$((BASE_PORT + 43)) LOG_LEVEL=warn "$@" \
		"$RATELIMIT" >"$TMP/$name.log" 2>&1 &
	RL_PID=$!
	PIDS+=("$RL_PID")
	wait_port $((BASE_PORT + 41)) || { tail -n 5 "$TMP/$name.log" >&2; return 1; }
}

# write_policy FILE COUNT PER BURST: the gateway token and one GCRA rule,
# a state per key (RULE_SCOPE_KEY: the check's key, or the descriptor's
# entries that Sluice does not map onto its own fields, "user=<id>").
write_policy() {
	cat >"$1" <<-EOF
		admin_token_sha256: "$(printf '%s' "$ADMIN" | sha256sum | cut -d' ' -f1)"
		gateway_token_sha256: "$(printf '%s' "$TOKEN" | sha256sum | cut -d' ' -f1)"
		rules:
		  - name: per-user
		    scope: RULE_SCOPE_KEY
		    max_keys: 2000000
		    gcra: {count: $2, per: $3, burst: $4}
	EOF
}

# start_sluice NAME N POLICY: an N-node cluster, n1 bootstraps and leads; its
# API is http://127.0.0.1:$((BASE_PORT+1)).
start_sluice() {
	local name=$1 n=$2 policy=$3 i
	local dir=$TMP/$name
	mkdir -p "$dir"
	SLUICE_PIDS=()
	for i in $(seq "$n"); do
		local extra=()
		[[ $i -eq 1 ]] && extra=(--bootstrap --policy "$policy")
		# shellcheck disable=SC2086
		"$SLUICE_BIN" server --id "n$i" --data "$dir/n$i" --http "127.0.0.1:$((BASE_PORT + i))" \
			--raft "127.0.0.1:$((BASE_PORT + 10 + i))" --executors 0 "${extra[@]}" $SLUICE_FLAGS \
			>"$dir/n$i.log" 2>&1 &
		PIDS+=($!)
		SLUICE_PIDS+=($!)
	done
	wait_http "http://127.0.0.1:$((BASE_PORT + 1))/readyz" || { tail -n 3 "$dir"/*.log >&2; return 1; }
	for i in $(seq 2 "$n"); do
		wait_http "http://127.0.0.1:$((BASE_PORT + i))/healthz"
		"$SLUICE_BIN" --addr "http://127.0.0.1:$((BASE_PORT + 1))" --key "$ADMIN" admin join --id "n$i" \
			--raft "127.0.0.1:$((BASE_PORT + 10 + i))" --http "127.0.0.1:$((BASE_PORT + i))" >/dev/null
	done
	for i in $(seq "$n"); do wait_http "http://127.0.0.1:$((BASE_PORT + i))/readyz"; done
	# The load goes to n1: it must lead, or every check would be forwarded.
	local leader
	leader=$("$SLUICE_BIN" --addr "http://127.0.0.1:$((BASE_PORT + 1))" --key "$ADMIN" admin members | awk '$2 == "leader" { print $1 }')
	echo "$name: $n nodes, leader $leader"
	[[ $leader == n1 ]] || { echo "gateway.sh: n1 does not lead" >&2; return 1; }
}

# snapshots NAME: the raft snapshots n1 of cluster NAME took (index, when
# taken, size of the state): taking one stops n1 applying the log meanwhile,
# which a check waits on, so a latency's tail may come from one.
snapshots() {
	local d term idx ms
	echo "$1: n1's raft snapshots (the last ones raft keeps):"
	for d in "$TMP/$1"/n1/snapshots/*/; do
		[[ -d $d && $d != *.tmp/ ]] || continue
		IFS=- read -r term idx ms <<<"$(basename "$d")"
		echo "  term $term, index $idx: taken at $(date -u -d "@$((ms / 1000))" +%T), state $(stat -c %s "$d/state.bin" 2>/dev/null || echo '?') bytes"
	done
}

# cpu_ticks: CPU time (user + system, in clock ticks) used so far by GROUP.
cpu_ticks() {
	local t=0 p f
	for p in "${GROUP[@]}"; do
		read -ra f <"/proc/$p/stat" || continue
		t=$((t + f[13] + f[14]))
	done
	echo "$t"
}

# measure SYSTEM CLIENTS KEYS LOADGEN-FLAGS...: one loadgen run against the
# servers in GROUP; its RESULT line, with the label SYSTEM and the servers' CPU
# µs per check (over the whole run, warm-up included), goes to $RESULTS.
measure() {
	local system=$1 clients=$2 keys=$3 out c0 c1 hz total
	shift 3
	hz=$(getconf CLK_TCK)
	echo "$(date -u +%T) $system, $clients clients, $keys keys: $(load)"
	c0=$(cpu_ticks)
	# shellcheck disable=SC2086
	out=$("$TMP/loadgen" -label "$system" -clients "$clients" -keys "$keys" -warmup "$WARMUP" -duration "$DURATION" \
		-token "$TOKEN" -batch "$BATCH" -pipeline "$PIPELINE" -conns "$RLS_CONNS" "$@" $LOADGEN_FLAGS) || true
	c1=$(cpu_ticks)
	total=$(sed -n 's/^RESULT.* total=\([0-9]*\).*/\1/p' <<<"$out")
	local us=$(((c1 - c0) * 1000000 / hz / (${total:-0} > 0 ? total : 1)))
	echo "$out" | grep -v '^RESULT' || true
	echo "  servers' CPU: $us µs per check"
	if grep -q '^RESULT' <<<"$out"; then
		echo "$(grep '^RESULT' <<<"$out") cpu_us=$us" >>"$RESULTS"
	else
		echo "RESULT label=$system target=none clients=$clients keys=$keys offered=0 rate=0 p50_ms=- p99_ms=- errors=failed over_limit=- cpu_us=-" >>"$RESULTS"
	fi
}

# matrix SYSTEM LOADGEN-FLAGS...: SYSTEM at every CLIENTS × KEYS, closed loop.
matrix() {
	local system=$1 c k
	shift
	for k in $KEYS; do
		for c in $CLIENTS; do measure "$system" "$c" "$k" "$@"; done
	done
}

# open_loop SYSTEM LOADGEN-FLAGS...: SYSTEM at each of RATES, 64 clients, 1M keys.
open_loop() {
	local system=$1 r
	shift
	for r in $RATES; do measure "$system" 64 1000000 -rate "$r" "$@"; done
}

redis_rows() {
	local redis=127.0.0.1:$REDIS_PORT
	GROUP=("$REDIS_PID")
	if has redis-gcra; then
		matrix redis-gcra -target redis-gcra -addr "$redis"
		open_loop redis-gcra -target redis-gcra -addr "$redis"
	fi
	if has redis-gcra-pipelined; then matrix redis-gcra-pipelined -target redis-gcra-pipelined -addr "$redis"; fi
	[[ -n $RATELIMIT ]] || return 0
	local rls=127.0.0.1:$((BASE_PORT + 41))
	if has envoy-ratelimit; then
		start_ratelimit ratelimit
		GROUP=("$REDIS_PID" "$RL_PID")
		matrix envoy-ratelimit -target rls -addr "$rls"
		stop "$RL_PID"
	fi
	if has envoy-ratelimit-pipelined; then
		# Its implicit pipelining: the Redis commands of concurrent requests are
		# written together, flushed every 150 µs (REDIS_PIPELINE_WINDOW, radix v4's
		# WriteFlushInterval). Its README calls REDIS_PIPELINE_LIMIT deprecated, of
		# no effect since radix v4, so it is not set.
		start_ratelimit ratelimit-pipelined REDIS_PIPELINE_WINDOW=150us
		GROUP=("$REDIS_PID" "$RL_PID")
		matrix envoy-ratelimit-pipelined -target rls -addr "$rls"
		stop "$RL_PID"
	fi
}

sluice_rows() {
	local api=http://127.0.0.1:$((BASE_PORT + 1))
	if has sluice-rls || has sluice-check || has sluice-checkbatch; then
		write_policy "$TMP/policy.yaml" 1000000 1s 1000000
		start_sluice sluice "${NODES:-3}" "$TMP/policy.yaml"
		GROUP=("${SLUICE_PIDS[@]}")
		if has sluice-rls; then
			matrix sluice-rls -target rls -addr "$api"
			open_loop sluice-rls -target rls -addr "$api"
		fi
		if has sluice-check; then matrix sluice-check -target sluice-check -addr "$api" -proto "$PROTO"; fi
		if has sluice-checkbatch; then
			matrix sluice-checkbatch -target sluice-checkbatch -addr "$api" -proto "$PROTO"
			open_loop sluice-checkbatch -target sluice-checkbatch -addr "$api" -proto "$PROTO"
		fi
		stop "${SLUICE_PIDS[@]}"
		snapshots sluice
	fi
	if has sluice-refused; then
		# One key over a limit of 1 an hour: the first check is charged, every
		# later one refused by the leader without the raft log.
		write_policy "$TMP/refused.yaml" 1 1h 1
		start_sluice sluice-refused "${NODES:-3}" "$TMP/refused.yaml"
		GROUP=("${SLUICE_PIDS[@]}")
		local c
		for c in $REFUSED_CLIENTS; do
			measure "sluice-rls (all refused)" "$c" 1 -target rls -addr "$api"
			measure "sluice-check (all refused)" "$c" 1 -target sluice-check -addr "$api" -proto "$PROTO"
			measure "sluice-checkbatch (all refused)" "$c" 1 -target sluice-checkbatch -addr "$api" -proto "$PROTO"
		done
		stop "${SLUICE_PIDS[@]}"
		snapshots sluice-refused
	fi
}

table() {
	echo
	echo "checks/s and call latency (ms; a pipeline's or a CheckBatch's round trip is its checks' latency), ${DURATION} measured after ${WARMUP} warm-up;"
	echo "Sluice: ${NODES:-3} nodes, loaded at the leader, LimitService via $PROTO, ShouldRateLimit via gRPC (h2c, $RLS_CONNS connection(s));"
	echo "batches and pipelines of $BATCH/$PIPELINE checks; servers' CPU µs per check (warm-up included); vs redis-gcra: checks/s ÷ redis-gcra's at the same load, clients and keys"
	awk '
		{ delete v
		  for (i = 2; i <= NF; i++) { j = index($i, "="); if (j) v[substr($i, 1, j - 1)] = substr($i, j + 1) }
		  # A label may hold spaces ("sluice-rls (all refused)"): it runs up to " target=".
		  l = $0; sub(/^RESULT label=/, "", l); sub(/ target=.*/, "", l)
		  load = (v["offered"] + 0 > 0) ? v["offered"] "/s offered" : "closed"
		  n++; lab[n] = l; ld[n] = load; cl[n] = v["clients"]; ks[n] = v["keys"]; rate[n] = v["rate"]
		  p50[n] = v["p50_ms"]; p99[n] = v["p99_ms"]; err[n] = v["errors"]; over[n] = v["over_limit"]; cpu[n] = v["cpu_us"]
		  if (l == "redis-gcra") base[load SUBSEP v["clients"] SUBSEP v["keys"]] = v["rate"] }
		END {
			print "| system | load | clients | keys | checks/s | p50 ms | p99 ms | errors | over limit | servers CPU µs/check | vs redis-gcra |"
			print "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
			for (i = 1; i <= n; i++) {
				b = base[ld[i] SUBSEP cl[i] SUBSEP ks[i]]
				ratio = (b + 0 > 0 && lab[i] != "redis-gcra") ? sprintf("%.2f×", rate[i] / b) : "-"
				printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", lab[i], ld[i], cl[i], ks[i], rate[i], p50[i], p99[i], err[i], over[i], cpu[i], ratio
			}
		}' "$RESULTS"
}

setup
load
: >"$RESULTS"
start_redis
redis_rows
stop "$REDIS_PID"
sluice_rows
load
table
echo
echo "RESULT lines:"
cat "$RESULTS"
