package scheduler

// Job is what the scheduler knows of a queued job.
type Job struct {
	ID       uint64
	Tenant   string
	Tier     string
	Model    string
	Priority int32 // 0–9, higher first within the tenant; others are clamped
	// GPUs and GPUMemoryMB (per GPU) the job needs on one executor.
	GPUs        int32
	GPUMemoryMB int64
	// Cost is the estimated service in milli-GPU-seconds (GPUs × expected
	// duration), what the fair queue charges; 0 counts as 1.
	Cost int64
	// Ready is the earliest start, unix nanoseconds.
	Ready int64
	// Seq is the arrival order; unique and increasing.
	Seq uint64
}

// Slot is free capacity on one executor, offered to Place.
//
// The simplest caller sends one Slot per free place, as before. A caller
// that knows more sends one Slot per executor: GPUs is what is free now,
// TotalGPUs what the executor has when idle, and Jobs how many more jobs it
// may run at once; the jobs Place puts on one slot share its free GPUs.
// TotalGPUs is what lets Place hold an executor for a big job that will
// fit once running jobs end (see Placer.Place). Slots with the same
// Executor are held together.
type Slot struct {
	Executor string
	// GPUs free now, and memory per GPU.
	GPUs        int32
	GPUMemoryMB int64
	// Models the executor can run; empty means any.
	Models []string
	// Warm lists the models loaded on the executor now; a job prefers a
	// slot where its model is warm.
	Warm []string
	// TotalGPUs is the executor's GPU count when idle; 0 (or less than GPUs)
	// means GPUs.
	TotalGPUs int32
	// Jobs is how many jobs the slot can take; 0 means 1.
	Jobs int32
}

// Placement puts one job on one slot.
type Placement struct {
	JobID    uint64
	Executor string
	// Slot is the index of the slot in the slice given to Place.
	Slot int
}

// Queue holds the jobs waiting to run. Implementations are not safe for
// concurrent use; the state machine serialises access.
type Queue interface {
	// Enqueue adds a job. Its ID must not be queued already.
	Enqueue(j Job)
	// Remove takes a job out (canceled or expired) without charging anyone;
	// false if absent. A job that starts running goes through Start.
	Remove(id uint64) bool
	// Start takes a job out because it starts running at now, charges its
	// tenant's and tier's fair share and counts it as running for its
	// tenant until Stopped; false if absent.
	Start(id uint64, now int64) bool
	// Stopped records that a running job of the tenant ended, however.
	Stopped(tenant string)
	// Advance gives the queue the state machine's time (it never goes
	// back): delayed jobs whose Ready time has come join the order.
	Advance(now int64)
	// Place proposes placements of ready jobs (Ready <= now) onto the free
	// slots, in dispatch order, without changing the queue. A slot takes at
	// most max(1, Jobs) jobs, sharing its free GPUs; a job that fits no slot
	// does not block those behind it (FairQueue's reservation aside).
	Place(now int64, slots []Slot) []Placement
	// PlaceInto is Place appending to dst.
	PlaceInto(dst []Placement, now int64, slots []Slot) []Placement
	// Position is the job's 1-based place in dispatch order, counting the
	// queued jobs that would be dispatched before it.
	Position(id uint64) (int, bool)
	// Len is the number of queued jobs.
	Len() int
	// Ascend calls fn for each queued job in dispatch order until fn
	// returns false.
	Ascend(fn func(Job) bool)
	// AppendBinary appends a deterministic encoding of the queue's state;
	// UnmarshalBinary replaces the state with a decoded one, after which
	// the queue encodes to the same bytes and decides the same.
	AppendBinary(b []byte) ([]byte, error)
	UnmarshalBinary(data []byte) error
}

// Fits reports whether slot s can run job j now.
func Fits(j Job, s Slot) bool {
	if j.GPUs > s.GPUs || j.GPUMemoryMB > s.GPUMemoryMB {
		return false
	}
	return canRun(s.Models, j.Model)
}
