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
