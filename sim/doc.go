// Package sim is Sluice's discrete-event simulator. It runs the real state
// machine (fsm.ApplyCommand: Apply's handlers, without the bytes) and the
// leader's real placement (fsm.PlaceQueued, under fsm.Dispatch) on a
// virtual clock, feeding them the entries the leader would commit, while
// workloads (arrivals, service times), executors, crashes and leader
// failovers are events; it reports waits, rejections, fairness and
// utilisation, and searches capacity plans. It holds no second scheduler
// or limiter: every admission, delay, degrade, rejection, queue order,
// placement, retry and timeout is the state machine's decision. A run is
// a pure function of its workload and seed (same seed, same report, byte
// for byte): randomness comes from seeded PCG streams, time is int64
// nanoseconds, and nothing depends on map order.
package sim
