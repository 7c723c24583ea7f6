package node

import (
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/sluicehq/sluice/metrics"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
	"github.com/sluicehq/sluice/scheduler"
)

// The leader's view of the executors: soft state, never in the log. An
// executor holds a lease stream open to the leader and heartbeats the
// attempts it runs; after a failover the new leader starts empty and
// relearns it all from the executors' new leases, granting them
// Config.LeaseGrace before it requeues attempts nobody claims.

// leased is one executor with a live lease.
type leased struct {
	name string // fixed for the lease's life; info may be replaced (under the lock)
	info *sluicev1.ExecutorInfo
	// out carries assignments and stops to the lease stream.
	out  chan *sluicev1.LeaseResponse
	done chan struct{} // closed when the lease ends
	gen  uint64        // which lease stream: a reconnect replaces the entry

	running  map[uint64]attemptRun // job → attempt running there
	reserved map[uint64][]string   // assignment proposed, not yet committed: its GPUs
	lastSeen time.Time
	progress map[uint64]progressReport
}

type attemptRun struct {
	attempt int32
	gpus    []string
}

type progressReport struct {
	attempt  int32
	fraction float64
	text     string
}

// maxWarm is how many recently run models an executor counts as loaded
// when it does not say.
const maxWarm = 2

// registry holds the leased executors.
type registry struct {
	mu    sync.Mutex
	execs map[string]*leased
	gen   uint64
	freed chan struct{}
}

func newRegistry() *registry {
	return &registry{execs: make(map[string]*leased), freed: make(chan struct{}, 1)}
}

func (r *registry) signal() {
	select {
	case r.freed <- struct{}{}:
	default:
	}
}

// attach registers a new lease for an executor, replacing (and ending) any
// older one of the same name, and adopts the attempts it says it runs.
func (r *registry) attach(info *sluicev1.ExecutorInfo, running map[uint64]int32, now time.Time) *leased {
	r.mu.Lock()
	defer r.mu.Unlock()
	if old, ok := r.execs[info.Name]; ok {
		close(old.done)
	}
	r.gen++
	l := &leased{name: info.Name, info: info, out: make(chan *sluicev1.LeaseResponse, 256), done: make(chan struct{}), gen: r.gen,
		running: make(map[uint64]attemptRun), reserved: make(map[uint64][]string), lastSeen: now,
		progress: make(map[uint64]progressReport)}
	for id, a := range running {
		l.running[id] = attemptRun{attempt: a}
	}
	r.execs[info.Name] = l
	r.signal()
	return l
}

// detach ends a lease if it is still the executor's current one, and
// returns the attempts it held.
func (r *registry) detach(name string, gen uint64) map[uint64]attemptRun {
	r.mu.Lock()
	defer r.mu.Unlock()
	l, ok := r.execs[name]
	if !ok || l.gen != gen {
		return nil
	}
	delete(r.execs, name)
	close(l.done)
	return l.running
}

// clear ends every lease (leadership lost).
func (r *registry) clear() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for name, l := range r.execs {
		close(l.done)
		delete(r.execs, name)
	}
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
	}
	return true
}

func gpuCount(info *sluicev1.ExecutorInfo) int32 { return int32(len(gpuIDs(info))) }

// gpuIDs names an executor's GPUs by UUID; one that declares none has one.
func gpuIDs(info *sluicev1.ExecutorInfo) []string {
	if len(info.Gpus) == 0 {
		return []string{"gpu0"}
	}
	ids := make([]string, len(info.Gpus))
	for i, g := range info.Gpus {
		ids[i] = g.Uuid
		if ids[i] == "" {
			ids[i] = "gpu" + strconv.Itoa(i)
		}
	}
	return ids
}

// usedGPUs is the set of GPU ids held by running and reserved attempts.
func (l *leased) usedGPUs() map[string]bool {
	used := make(map[string]bool)
	for _, a := range l.running {
		for _, g := range a.gpus {
			used[g] = true
		}
	}
	for _, gs := range l.reserved {
		for _, g := range gs {
			used[g] = true
		}
	}
	return used
}

func (l *leased) jobs() int { return len(l.running) + len(l.reserved) }

// freeSlots offers one Slot per executor, in name order: the GPUs free now,
// the executor's total, how many more jobs it may take and the models warm
// on it. Full executors are offered too (no GPUs free) so that the
// scheduler can hold one for a big job.
func (r *registry) freeSlots() []scheduler.Slot {
	r.mu.Lock()
	defer r.mu.Unlock()
	names := make([]string, 0, len(r.execs))
	for n := range r.execs {
		names = append(names, n)
	}
	slices.Sort(names)
	out := make([]scheduler.Slot, 0, len(names))
	for _, n := range names {
		l := r.execs[n]
		total := gpuCount(l.info)
		free := max(0, total-int32(len(l.usedGPUs())))
		jobs := int32(max(0, int(max(1, l.info.Slots))-l.jobs()))
		if jobs == 0 {
			free = 0 // Slot.Jobs 0 means 1: no GPUs free is what says "full"
		}
		var mem int64
		for _, g := range l.info.Gpus {
			if mem == 0 || g.MemoryTotalMb < mem {
				mem = g.MemoryTotalMb
			}
		}
		out = append(out, scheduler.Slot{Executor: n, GPUs: free, TotalGPUs: total, GPUMemoryMB: mem,
			Models: l.info.Models, Warm: l.info.WarmModels, Jobs: jobs})
	}
	return out
}

// reserve picks free GPUs on the executor for a job about to be assigned.
func (r *registry) reserve(executor string, job uint64, gpus int32) ([]string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	l, ok := r.execs[executor]
	if !ok || l.jobs() >= int(max(1, l.info.Slots)) {
		return nil, false
	}
	used := l.usedGPUs()
	var pick []string
	for _, id := range gpuIDs(l.info) {
		if !used[id] && int32(len(pick)) < gpus {
			pick = append(pick, id)
		}
	}
	if int32(len(pick)) < gpus {
		return nil, false
	}
	l.reserved[job] = pick
	return pick, true
}

// unreserve gives back a reservation whose assignment did not commit.
func (r *registry) unreserve(executor string, job uint64) {
	r.mu.Lock()
	if l, ok := r.execs[executor]; ok {
		delete(l.reserved, job)
	}
	r.mu.Unlock()
	r.signal()
}

// started turns a reservation into a running attempt and sends the
// assignment down the lease stream. false when the lease is gone.
func (r *registry) started(executor string, job uint64, attempt int32, msg *sluicev1.LeaseResponse) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	l, ok := r.execs[executor]
	if !ok {
		return false
	}
	gpus := l.reserved[job]
	delete(l.reserved, job)
	select {
	case l.out <- msg:
	default:
		return false // the stream is stuck; the lease will expire
	}
	l.running[job] = attemptRun{attempt: attempt, gpus: gpus}
	l.info.WarmModels = scheduler.WarmAfter(l.info.WarmModels, msg.GetAssignment().GetModel(), maxWarm)
	return true
}

// finished frees an attempt's place.
func (r *registry) finished(executor string, job uint64, attempt int32) {
	r.mu.Lock()
	if l, ok := r.execs[executor]; ok {
		if a, ok := l.running[job]; ok && a.attempt == attempt {
			delete(l.running, job)
			delete(l.progress, job)
		}
	}
	r.mu.Unlock()
	r.signal()
}

// stop tells an executor to stop an attempt and frees its place.
func (r *registry) stop(executor string, job uint64, attempt int32, reason string) {
	r.mu.Lock()
	if l, ok := r.execs[executor]; ok {
		select {
		case l.out <- &sluicev1.LeaseResponse{Msg: &sluicev1.LeaseResponse_Stop{Stop: &sluicev1.StopAttempt{
			JobId: FormatJobID(job), Attempt: attempt, Reason: reason}}}:
		default:
		}
		if a, ok := l.running[job]; ok && a.attempt == attempt {
			delete(l.running, job)
		}
	}
	r.mu.Unlock()
	r.signal()
}

// holds reports whether an executor runs (or is about to run) the attempt.
func (r *registry) holds(executor string, job uint64, attempt int32) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	l, ok := r.execs[executor]
	if !ok {
		return false
	}
	if _, ok := l.reserved[job]; ok {
		return true
	}
	a, ok := l.running[job]
	return ok && a.attempt == attempt
}

// attempts lists every running attempt by executor.
func (r *registry) attempts() map[string]map[uint64]int32 {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]map[uint64]int32, len(r.execs))
	for name, l := range r.execs {
		m := make(map[uint64]int32, len(l.running))
		for id, a := range l.running {
			m[id] = a.attempt
		}
		out[name] = m
	}
	return out
}

// setProgress records an attempt's progress; false if it does not run there.
func (r *registry) setProgress(executor string, job uint64, p progressReport) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	l, ok := r.execs[executor]
	if !ok {
		return false
	}
	if a, ok := l.running[job]; !ok || a.attempt != p.attempt {
		return false
	}
	l.progress[job] = p
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

// slotsFor counts the places that can serve a model, and how many are free.
func (r *registry) slotsFor(model string) (total, free int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, l := range r.execs {
		if len(l.info.Models) == 0 || slices.Contains(l.info.Models, model) {
			slots := int(max(1, l.info.Slots))
			total += slots
			free += max(0, slots-l.jobs())
		}
	}
	return total, free
}

// share is the share of the slots serving other that also serve model.
func (r *registry) share(model, other string) float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	shared, total := 0, 0
	for _, l := range r.execs {
		if len(l.info.Models) > 0 && !slices.Contains(l.info.Models, other) {
			continue
		}
		slots := int(max(1, l.info.Slots))
		total += slots
		if len(l.info.Models) == 0 || slices.Contains(l.info.Models, model) {
			shared += slots
		}
	}
	if total == 0 {
		return 0
	}
	return float64(shared) / float64(total)
}

// status describes the executors for GetClusterStatus, in name order.
func (r *registry) status() []*sluicev1.ExecutorStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*sluicev1.ExecutorStatus, 0, len(r.execs))
	for name, l := range r.execs {
		out = append(out, &sluicev1.ExecutorStatus{Name: name, Slots: max(1, l.info.Slots), BusySlots: int32(l.jobs()), Models: l.info.Models,
			Gpus: l.info.Gpus, WarmModels: l.info.WarmModels})
	}
	slices.SortFunc(out, func(a, b *sluicev1.ExecutorStatus) int {
		switch {
		case a.Name < b.Name:
			return -1
		case a.Name > b.Name:
			return 1
		}
		return 0
	})
	return out
}

// detachByName ends an executor's lease, whichever stream holds it, and
// returns the attempts it held (nil if it held no lease).
func (r *registry) detachByName(name string) map[uint64]attemptRun {
	r.mu.Lock()
	l, ok := r.execs[name]
	r.mu.Unlock()
	if !ok {
		return nil
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
	out := make([]metrics.Executor, 0, len(r.execs))
	for name, l := range r.execs {
		used := l.usedGPUs()
		e := metrics.Executor{Name: name}
		for i, id := range gpuIDs(l.info) {
			g := metrics.GPU{ID: id, Busy: used[id], Utilization: -1, FreeBytes: -1}
			if i < len(l.info.Gpus) {
				if u := l.info.Gpus[i].UtilizationPct; u >= 0 {
					g.Utilization = float64(u) / 100
				}
				if l.info.Gpus[i].MemoryTotalMb > 0 {
					g.FreeBytes = l.info.Gpus[i].MemoryFreeMb << 20
				}
			}
			e.GPUs = append(e.GPUs, g)
		}
		out = append(out, e)
	}
	return out
}

// unplaceable says why no leased executor could ever run a job of model
// needing gpus GPUs of memMB MiB each (whatever runs on them now); "" when
// one could, or when no executor is leased (nothing is known yet).
func (r *registry) unplaceable(model string, gpus int32, memMB int64) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.execs) == 0 {
		return ""
	}
	serving, mostGPUs, mostMem := 0, 0, int64(0)
	for _, l := range r.execs {
		if len(l.info.Models) > 0 && !slices.Contains(l.info.Models, model) {
			continue
		}
		serving++
		ids := gpuIDs(l.info)
		mostGPUs = max(mostGPUs, len(ids))
		big := 0 // GPUs with memMB or more (a GPU that does not say counts)
		for i := range ids {
			if i >= len(l.info.Gpus) || l.info.Gpus[i].MemoryTotalMb == 0 || l.info.Gpus[i].MemoryTotalMb >= memMB {
				big++
			}
			if i < len(l.info.Gpus) {
				mostMem = max(mostMem, l.info.Gpus[i].MemoryTotalMb)
			}
		}
		if big >= int(gpus) {
			return ""
		}
	}
	switch {
	case serving == 0:
		return fmt.Sprintf("no connected executor serves model %s", model)
	case mostGPUs < int(gpus):
		return fmt.Sprintf("needs %d GPUs; the largest executor has %d", gpus, mostGPUs)
	}
	return fmt.Sprintf("needs %d MiB of memory on each of its %d GPU(s); no executor has that many that large (the largest GPU has %d MiB)", memMB, gpus, mostMem)
}
