// Package scheduler decides which queued job runs next and where: the
// hierarchical weighted-fair queue (FairQueue) with its containers, placement
// on executor slots with capacity held for big jobs, place in line, ETAs and
// backpressure. It is pure: time is an argument; no clock, goroutines, I/O or
// floats. Its order and bounds: docs/scheduling.md; its layout: docs/architecture.md.
package scheduler
