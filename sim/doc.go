// Package sim will hold Sluice's discrete-event simulator: it drives the real
// fsm and the leader's dispatch and placement code on a virtual clock, with
// workloads (arrivals, service times), executor failures and leader
// failovers, and reports waits, rejections, fairness and utilisation, and
// capacity plans. It must never contain a second implementation of the
// scheduler or the limiter.
package sim
