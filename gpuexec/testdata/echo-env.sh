#!/bin/sh
# Echoes its stdin and the environment an exec runner must set, with two
# progress lines and one ordinary stderr line in between.
input=$(cat)
echo "progress 0.5 read the input" >&2
echo "an ordinary log line" >&2
echo "progress 1 done" >&2
printf '{"input": %s, "cuda": "%s", "job": "%s", "attempt": "%s", "model": "%s"}\n' \
	"$input" "$CUDA_VISIBLE_DEVICES" "$SLUICE_JOB_ID" "$SLUICE_ATTEMPT" "$SLUICE_MODEL"
