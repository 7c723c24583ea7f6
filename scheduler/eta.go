package scheduler

import "time"

// ETA estimates how long a queued job at 1-based position waits before it
// starts, when slots serve its kind of job and each takes about service:
// jobs leave the queue in waves of `slots`, so the job starts after
// ceil(position/slots) - 1 full waves plus, on average, half of one.
// With no slots the wait is unknown and ETA returns -1.
func ETA(position, slots int, service time.Duration) time.Duration {
	if slots <= 0 {
		return -1
	}
	if position <= 0 {
		return 0
	}
	waves := (position + slots - 1) / slots
	return time.Duration(waves-1)*service + service/2
}

// WaitBehind estimates the wait of a job at 1-based position among the
// queued jobs of its kind, when slots serve that kind and free of them are
// idle now: the jobs idle slots take at once wait for nothing, the rest
// wait out ETA behind them. -1 when no slot serves the kind.
func WaitBehind(position, slots, free int, service time.Duration) time.Duration {
	switch {
	case slots <= 0:
		return -1
	case position <= free:
		return 0
	}
	return ETA(position-free, slots, service)
}

// WarmAfter is an executor's list of loaded models after it runs model:
// model moves to the end and the oldest falls off past capacity. It
// returns a new slice, since offered slots may share the old one.
func WarmAfter(warm []string, model string, capacity int) []string {
	out := make([]string, 0, capacity)
	for _, m := range warm {
		if m != model {
			out = append(out, m)
		}
	}
	out = append(out, model)
	if len(out) > capacity {
		out = out[len(out)-capacity:]
	}
	return out
}
