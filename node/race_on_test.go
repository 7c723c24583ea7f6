//go:build race

package node

// raceBuild: under the race detector thousands of goroutines run many times
// slower, so the tests that compare latencies skip; make test runs them
// again without it.
const raceBuild = true
