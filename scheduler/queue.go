package scheduler

// Job is what the scheduler knows of a queued job.
type Job struct {
	ID       uint64
	Tenant   string
	Tier     string
	Model    string
	Priority int32
	// GPUs and GPUMemoryMB (per GPU) the job needs on one executor.
	GPUs        int32
	GPUMemoryMB int64
	// Cost is the estimated service in milli-GPU-seconds.
	Cost int64
	// Ready is the earliest start, unix nanoseconds.
	Ready int64
	// Seq is the arrival order; unique and increasing.
	Seq uint64
}

// Slot is a free place on an executor that can take one job.
type Slot struct {
	Executor    string
	GPUs        int32
	GPUMemoryMB int64
	// Models the executor can run; empty means any.
	Models []string
}

// Placement puts one job on one slot.
type Placement struct {
	JobID    uint64
	Executor string
}

// Queue holds the jobs waiting to run. Implementations are not safe for
// concurrent use; the state machine serialises access.
type Queue interface {
	// Enqueue adds a job. Its ID must not be queued already.
	Enqueue(j Job)
	// Remove takes a job out (started, canceled or expired); false if absent.
	Remove(id uint64) bool
	// Place proposes placements of ready jobs (Ready <= now) onto the free
	// slots, in dispatch order, without changing the queue. Each slot takes
	// at most one job; a job that fits no slot does not block those behind it.
	Place(now int64, slots []Slot) []Placement
	// Position is the job's 1-based place in dispatch order, counting the
	// queued jobs that would be dispatched before it.
	Position(id uint64) (int, bool)
	// Len is the number of queued jobs.
	Len() int
	// Ascend calls fn for each queued job in dispatch order until fn
	// returns false.
	Ascend(fn func(Job) bool)
}

// Fits reports whether slot s can run job j.
func Fits(j Job, s Slot) bool {
	if j.GPUs > s.GPUs || j.GPUMemoryMB > s.GPUMemoryMB {
		return false
	}
	if len(s.Models) == 0 {
		return true
	}
	for _, m := range s.Models {
		if m == j.Model {
			return true
		}
	}
	return false
}
