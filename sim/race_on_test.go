//go:build race

package sim

// raceBuild: under the race detector the simulator runs about 12 times
// slower, so the M/M/c validation sends fewer jobs through it and extends
// its sample path with its own generators (see TestMMcMeanWaitWithinFivePercentOfErlangC).
const raceBuild = true
