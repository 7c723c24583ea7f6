package sim

// The engine's work, by role. Each role is a view of the engine (it embeds
// it) that holds the methods of one concern; the engine itself keeps the
// event loop, the log (apply), the run's bookkeeping and the report. The
// roles call each other through the engine's fields (e.placing, ...);
// wire sets them.
type (
	// clients are the simulated callers: arrivals, the Submit sequence
	// (admission's, as the leader runs it), refusals, challenges answered
	// and retries, and the end of each job.
	clients struct{ *engine }
	// dispatcher is the leader's placement and the executors' runs: the
	// dispatch (admission's), attempts started and finished, what the
	// leader learns from them.
	dispatcher struct{ *engine }
	// faults are crashes, outages and leader failovers: when they happen,
	// what they stop, and what the leader detects and requeues.
	faults struct{ *engine }
	// forecasts are run times by size and ETAs at submission: predicted,
	// calibrated as the leader calibrates them, and measured.
	forecasts struct{ *engine }
)

// wire gives e its roles.
func wire(e *engine) *engine {
	e.clients, e.placing, e.faults, e.forecasts = clients{e}, dispatcher{e}, faults{e}, forecasts{e}
	return e
}
