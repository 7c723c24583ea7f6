// Package bench holds Sluice's load generators and benchmark harnesses for
// whole clusters; bench/README.md records their numbers with the commands
// and machines that produced them. Package-level benchmarks live beside
// their code (go test -bench).
package bench
