#!/bin/sh
# Starts a child that would run for a minute, writes the child's pid to $1,
# then ignores SIGTERM: only SIGKILL to the whole process group stops both.
trap '' TERM
sleep 60 &
echo $! > "$1"
echo "progress 0.1 child started" >&2
while :; do sleep 1; done
