#!/bin/sh
# An exec runner that pretends to work: it reads the job's input (JSON) on
# stdin, reports progress on stderr in 10 steps over the input's duration_ms
# (default 2000), and prints an output JSON object on stdout.
#
#   sluice executor ... --runner exec:examples/runners/progress.sh
#   echo '{"duration_ms": 500}' | examples/runners/progress.sh
#
# It stops within a moment of SIGTERM, the signal Sluice sends on cancel or
# run timeout. Plain POSIX sh, sed and sleep: no jq, no python.
set -u

input=$(cat)
[ -n "$input" ] || input='{}'

# The first "duration_ms": NUMBER in the input (a whole number of ms).
duration=$(printf '%s' "$input" | sed -n 's/.*"duration_ms"[[:space:]]*:[[:space:]]*\([0-9][0-9]*\).*/\1/p' | head -n 1)
duration=${duration:-2000}
if [ "${#duration}" -gt 7 ] || [ "$duration" -gt 3600000 ]; then
	echo "input.duration_ms: $duration exceeds the 3600000 ms (one hour) limit" >&2
	exit 2 # a bad input: retrying cannot help
fi

steps=10
step_ms=$((duration / steps))
step_s=$((step_ms / 1000)).$(printf '%03d' $((step_ms % 1000)))

# sleep in the background and wait for it: sh runs a trap only between
# commands, and `wait`, unlike a foreground sleep, is cut short by a signal.
sleeper=
on_term() {
	[ -n "$sleeper" ] && kill "$sleeper" 2>/dev/null
	echo "stopped by SIGTERM at step $i/$steps" >&2
	exit 143
}
trap on_term TERM INT

i=0
while [ "$i" -lt "$steps" ]; do
	sleep "$step_s" &
	sleeper=$!
	wait "$sleeper"
	sleeper=
	i=$((i + 1))
	if [ "$i" -eq "$steps" ]; then fraction=1; else fraction=0.$i; fi
	echo "progress $fraction step $i/$steps" >&2
done

# JSON string escaping for the two values that come from outside.
json_string() { printf '"%s"' "$(printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g')"; }

printf '{"ok": true, "steps": %d, "duration_ms": %d, "job_id": %s, "attempt": %d, "model": %s, "input": %s}\n' \
	"$steps" "$duration" "$(json_string "${SLUICE_JOB_ID:-}")" "${SLUICE_ATTEMPT:-0}" \
	"$(json_string "${SLUICE_MODEL:-}")" "$input"
