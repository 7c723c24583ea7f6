package node

import (
	"slices"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/sluicehq/sluice/admission"
	"github.com/sluicehq/sluice/metrics"
	raftv1 "github.com/sluicehq/sluice/proto/gen/sluice/raft/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// The leader's view of the executors: soft state, never in the log. An
// executor holds a lease stream open to the leader and heartbeats the
// attempts it runs; after a failover the new leader starts empty and
// relearns it all from the executors' new leases, granting them
// Config.LeaseGrace before it requeues attempts nobody claims.

// leased is one executor with a live lease: what the lease stream needs.
// What it offers and runs is the registry's admission.Fleet.
type leased struct {
	name string
	info *sluicev1.ExecutorInfo // replaced, never changed (under the lock)
	// out carries assignments and stops to the lease stream.
	out      chan *sluicev1.LeaseResponse
	done     chan struct{} // closed when the lease ends
	gen      uint64        // which lease stream: a reconnect replaces the entry
	lastSeen time.Time
	progress map[uint64]progressReport
}

type progressReport struct {
	attempt  int32
	fraction float64
	text     string
	at       int64 // when the leader heard it (unix ns)
}

// maxWarm is how many recently run models an executor counts as loaded
// when it does not say.
const maxWarm = 2

// registry holds the leased executors: their lease streams, and the
// leader's book of what they offer and run (admission.Fleet, the book the
// simulator keeps too).
type registry struct {
	mu    sync.Mutex
	execs map[string]*leased
	fleet *admission.Fleet
	disp  admission.Dispatcher // the leader's dispatch scratch (under mu)
	gen   uint64
	freed chan struct{}
}

func newRegistry() *registry {
	return &registry{execs: make(map[string]*leased), fleet: admission.NewFleet(), freed: make(chan struct{}, 1)}
}

func (r *registry) signal() {
	select {
	case r.freed <- struct{}{}:
	default:
	}
}

// descOf is what an executor's description offers.
func descOf(info *sluicev1.ExecutorInfo) admission.Desc {
	d := admission.Desc{Name: info.Name, Slots: info.Slots, Models: info.Models, Warm: info.WarmModels, WarmCap: max(maxWarm, len(info.WarmModels))}
	uuids := make([]string, len(info.Gpus))
	for i, g := range info.Gpus {
		uuids[i] = g.Uuid
		d.GPUMemoryMB = append(d.GPUMemoryMB, g.MemoryTotalMb)
	}
	d.GPUs = admission.GPUIDs(uuids)
	return d
}

// adopted is an attempt an executor says it runs, which the log has
// running there on gpus.
type adopted struct {
	attempt int32
	gpus    []string
}

// attach registers a new lease for an executor, replacing (and ending) any
// older one of the same name, and adopts the attempts it says it runs.
func (r *registry) attach(info *sluicev1.ExecutorInfo, running map[uint64]adopted, now time.Time) *leased {
	r.mu.Lock()
	defer r.mu.Unlock()
	if old, ok := r.execs[info.Name]; ok {
		close(old.done)
	}
	r.gen++
	l := &leased{name: info.Name, info: info, out: make(chan *sluicev1.LeaseResponse, 256), done: make(chan struct{}), gen: r.gen,
		lastSeen: now, progress: make(map[uint64]progressReport)}
	d := descOf(info)
	runs := make([]admission.Run, 0, len(running))
	for id, a := range running {
		runs = append(runs, admission.Run{Job: id, Attempt: a.attempt, GPUs: admission.GPUMask(d.GPUs, a.gpus)})
	}
	r.fleet.Attach(d, runs)
	r.execs[info.Name] = l
	r.signal()
	return l
}

// detach ends a lease if it is still the executor's current one, and
// returns the attempts it ran; false when it was not (then it did nothing).
func (r *registry) detach(name string, gen uint64) ([]admission.Run, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	l, ok := r.execs[name]
	if !ok || l.gen != gen {
		return nil, false
	}
	delete(r.execs, name)
	close(l.done)
	i, _ := r.fleet.Index(name)
	return slices.DeleteFunc(r.fleet.Remove(i), func(run admission.Run) bool { return run.Reserved }), true
}

// clear ends every lease (leadership lost).
func (r *registry) clear() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for name, l := range r.execs {
		close(l.done)
		delete(r.execs, name)
	}
	r.fleet.Clear()
}

// expired lists executors whose last heartbeat is older than ttl.
func (r *registry) expired(now time.Time, ttl time.Duration) []*leased {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*leased
	for _, l := range r.execs {
		if now.Sub(l.lastSeen) > ttl {
			out = append(out, l)
		}
	}
	return out
}

// heartbeat renews a lease and updates what the executor runs and offers.
// It returns false when the executor holds no lease here.
func (r *registry) heartbeat(name string, info *sluicev1.ExecutorInfo, now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	l, ok := r.execs[name]
	if !ok {
		return false
	}
	l.lastSeen = now
	if info != nil && info.Name == name {
		l.info = info
		i, _ := r.fleet.Index(name)
		r.fleet.Update(i, descOf(info))
	}
	return true
}

// index is the fleet's number of a leased executor (under the lock).
func (r *registry) index(name string) (int32, bool) {
	if _, ok := r.execs[name]; !ok {
		return 0, false
	}
	return r.fleet.Index(name)
}

// place is the leader's dispatch on the leased executors
// (admission.Dispatcher, the simulator's too): the state machine's
// placements at now, full executors offered so that a big job can hold
// one, each Assign naming the GPUs reserved for it until it is started or
// unreserve gives them back.
func (r *registry) place(st admission.Placer, now int64) []*raftv1.Assign {
	r.mu.Lock()
	defer r.mu.Unlock()
	ps := r.disp.Dispatch(st, r.fleet, now, true, nil)
	out := make([]*raftv1.Assign, len(ps))
	for i, p := range ps {
		out[i] = &raftv1.Assign{JobId: p.JobID, Executor: p.Executor, Attempt: p.Attempt, Gpus: r.fleet.IDs(p.Exec, p.Mask)}
	}
	return out
}

// unreserve gives back a reservation whose assignment did not commit.
func (r *registry) unreserve(executor string, job uint64) {
	r.mu.Lock()
	if i, ok := r.index(executor); ok {
		r.fleet.Unreserve(i, job)
	}
	r.mu.Unlock()
	r.signal()
}

// started turns a reservation into a running attempt and sends the
// assignment down the lease stream. false when the lease is gone.
func (r *registry) started(executor string, job uint64, attempt int32, msg *sluicev1.LeaseResponse) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	i, ok := r.index(executor)
	if !ok {
		return false
	}
	// Start first: a lease taken again since the reservation (Attach) has
	// dropped it, and then nothing must be sent.
	if _, ok := r.fleet.Start(i, job, attempt, msg.GetAssignment().GetModel()); !ok {
		return false
	}
	select {
	case r.execs[executor].out <- msg:
		return true
	default:
		r.fleet.Finish(i, job, attempt)
		return false // the stream is stuck; the lease will expire
	}
}

// finished frees an attempt's place.
func (r *registry) finished(executor string, job uint64, attempt int32) {
	r.mu.Lock()
	if i, ok := r.index(executor); ok {
		if _, ok := r.fleet.Finish(i, job, attempt); ok {
			delete(r.execs[executor].progress, job)
		}
	}
	r.mu.Unlock()
	r.signal()
}

// stop tells an executor to stop an attempt and frees its place.
func (r *registry) stop(executor string, job uint64, attempt int32, reason string) {
	r.mu.Lock()
	if i, ok := r.index(executor); ok {
		select {
		case r.execs[executor].out <- &sluicev1.LeaseResponse{Msg: &sluicev1.LeaseResponse_Stop{Stop: &sluicev1.StopAttempt{
			JobId: FormatJobID(job), Attempt: attempt, Reason: reason}}}:
		default:
		}
		r.fleet.Finish(i, job, attempt)
	}
	r.mu.Unlock()
	r.signal()
}

// holds reports whether an executor runs (or is about to run) the attempt.
func (r *registry) holds(executor string, job uint64, attempt int32) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	i, ok := r.index(executor)
	return ok && r.fleet.Holds(i, job, attempt)
}

// attempts lists every running attempt by executor.
func (r *registry) attempts() map[string]map[uint64]int32 {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]map[uint64]int32, len(r.execs))
	for i := range int32(r.fleet.Len()) {
		m := make(map[uint64]int32)
		for _, run := range r.fleet.Runs(i) {
			if !run.Reserved {
				m[run.Job] = run.Attempt
			}
		}
		out[r.fleet.Name(i)] = m
	}
	return out
}

// setProgress records an attempt's progress; false if it does not run there.
func (r *registry) setProgress(executor string, job uint64, p progressReport) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	i, ok := r.index(executor)
	if !ok || !r.fleet.Running(i, job, p.attempt) {
		return false
	}
	r.execs[executor].progress[job] = p
	return true
}

// progressOf returns the last progress reported for a running attempt.
func (r *registry) progressOf(executor string, job uint64, attempt int32) (progressReport, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	l, ok := r.execs[executor]
	if !ok {
		return progressReport{}, false
	}
	p, ok := l.progress[job]
	return p, ok && p.attempt == attempt
}

// executorLanes is one executor's slots and the jobs it runs or is about to.
type executorLanes struct {
	slots int
	jobs  []uint64
}

// lanesOf lists the leased executors that serve model, for ETAs.
func (r *registry) lanesOf(model string) []executorLanes {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []executorLanes
	for i := range int32(r.fleet.Len()) {
		if !r.fleet.IsUp(i) || !r.fleet.Serves(i, model) {
			continue
		}
		ex := executorLanes{slots: int(r.fleet.SlotsOf(i))}
		for _, run := range r.fleet.Runs(i) {
			ex.jobs = append(ex.jobs, run.Job)
		}
		out = append(out, ex)
	}
	return out
}

// gpuKind is the kind of a leased executor's GPUs (their NVML name: an
// executor's GPUs are alike), "" when it is not leased or does not say.
func (r *registry) gpuKind(executor string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if l, ok := r.execs[executor]; ok && len(l.info.Gpus) > 0 {
		return l.info.Gpus[0].Name
	}
	return ""
}

// serves reports whether a leased executor serves model.
func (r *registry) serves(executor, model string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	i, ok := r.index(executor)
	return ok && r.fleet.IsUp(i) && r.fleet.Serves(i, model)
}

// slotsFor counts the places that can serve a model, and how many are free.
func (r *registry) slotsFor(model string) (total, free int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.fleet.Slots(model)
}

// share is the share of the slots serving other that also serve model.
func (r *registry) share(model, other string) float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.fleet.Share(model, other)
}

// unplaceable says why no leased executor could ever run a job of model
// needing gpus GPUs of memMB MiB each (admission.Fleet.Unplaceable).
func (r *registry) unplaceable(model string, gpus int32, memMB int64) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.fleet.Unplaceable(model, gpus, memMB)
}

// connected is how many executors hold a lease.
func (r *registry) connected() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.fleet.Len()
}

// placed reports whether queued job id, whose last attempt was attempt,
// holds a slot for its next: placed, its Assign proposed, or started since
// the caller read it queued (an attempt it was requeued from, not yet let go
// of, does not count).
func (r *registry) placed(id uint64, attempt int32) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range int32(r.fleet.Len()) {
		for _, run := range r.fleet.Runs(i) {
			if run.Job == id && (run.Reserved || run.Attempt > attempt) {
				return true
			}
		}
	}
	return false
}

// status describes the executors for GetClusterStatus, in name order.
func (r *registry) status() []*sluicev1.ExecutorStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*sluicev1.ExecutorStatus, 0, r.fleet.Len())
	for i := range int32(r.fleet.Len()) {
		name := r.fleet.Name(i)
		info := r.execs[name].info
		out = append(out, &sluicev1.ExecutorStatus{Name: name, Slots: max(1, info.Slots), BusySlots: int32(len(r.fleet.Runs(i))), Models: info.Models,
			Gpus: info.Gpus, WarmModels: r.fleet.Warm(i)})
	}
	return out
}

// detachByName ends an executor's lease, whichever stream holds it, and
// returns the attempts it held; false if it held no lease.
func (r *registry) detachByName(name string) ([]admission.Run, bool) {
	r.mu.Lock()
	l, ok := r.execs[name]
	r.mu.Unlock()
	if !ok {
		return nil, false
	}
	return r.detach(name, l.gen)
}

// gossiped merges what an executor gossips (warm models, free GPU memory,
// utilisation) into its leased description.
func (r *registry) gossiped(name string, m *sluicev1.GossipMeta) {
	r.mu.Lock()
	defer r.mu.Unlock()
	l, ok := r.execs[name]
	if !ok {
		return
	}
	info := proto.Clone(l.info).(*sluicev1.ExecutorInfo)
	if len(m.WarmModels) > 0 {
		info.WarmModels = m.WarmModels
		i, _ := r.fleet.Index(name)
		r.fleet.SetWarm(i, m.WarmModels)
	}
	for i, g := range m.Gpus {
		if i < len(info.Gpus) {
			info.Gpus[i].MemoryFreeMb, info.Gpus[i].UtilizationPct = g.MemoryFreeMb, g.UtilizationPct
		}
	}
	l.info = info
}

// metricsView lists the leased executors and their GPUs for the metrics.
func (r *registry) metricsView() []metrics.Executor {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]metrics.Executor, 0, r.fleet.Len())
	for i := range int32(r.fleet.Len()) {
		name, used := r.fleet.Name(i), r.fleet.Used(i)
		info := r.execs[name].info
		e := metrics.Executor{Name: name}
		for k, id := range r.fleet.AllGPUs(i) {
			g := metrics.GPU{ID: id, Busy: used&(1<<k) != 0, Utilization: -1, FreeBytes: -1}
			if k < len(info.Gpus) {
				if u := info.Gpus[k].UtilizationPct; u >= 0 {
					g.Utilization = float64(u) / 100
				}
				if info.Gpus[k].MemoryTotalMb > 0 {
					g.FreeBytes = info.Gpus[k].MemoryFreeMb << 20
				}
			}
			e.GPUs = append(e.GPUs, g)
		}
		out = append(out, e)
	}
	return out
}
