// Package sim is Sluice's discrete-event simulator: the real state machine,
// admission sequence and placement (fsm.ApplyCommand, admission, the
// leader's fsm.PlaceQueued) on a virtual clock, with arrivals, service times,
// crashes and failovers as events. A run is a pure function of its workload
// and seed. docs/simulator.md is its manual; docs/architecture.md its place.
package sim
