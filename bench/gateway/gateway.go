// Package gateway holds the fixtures of bench/gateway.sh, the gateway
// rate-limit benchmark: the Redis GCRA script that bench/loadgen's
// redis-gcra targets run, embedded here so that the load generator does not
// depend on the directory it runs in.
package gateway

import _ "embed"

// GCRA is gcra.lua: KEYS[1]; ARGV burst, rate (per period), period_ms, cost;
// returns {allowed, remaining, retry_ms, reset_ms}.
//
//go:embed gcra.lua
var GCRA string
