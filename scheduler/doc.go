// Package scheduler decides which queued job runs next and where: queueing
// order, readiness (not_before and retry backoff), place in line, and placing
// jobs on executor slots. It is pure: time is an argument (unix nanoseconds),
// it starts no goroutines and does no I/O, so the replicated state machine
// and the simulator run exactly the same code. Every Queue implementation
// orders jobs deterministically from the calls it was given.
package scheduler
