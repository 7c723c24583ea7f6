package scheduler

import (
	"fmt"
	"runtime"
	"sync"
	"testing"
)

// Benchmarks at 10k, 100k and 1M queued jobs over 1,000 tenants in three
// weighted tiers, ten models, random priorities and costs.

const benchTenants = 1000

var benchCfg = func() Config {
	cfg := Config{Tiers: []TierConfig{{Name: "pro", Weight: 4}, {Name: "team", Weight: 2}, {Name: "free", Weight: 1}}}
	for i := range benchTenants {
		cfg.Tenants = append(cfg.Tenants, TenantConfig{
			Name: fmt.Sprintf("tenant-%04d", i), Tier: cfg.Tiers[i%3].Name, Weight: int32(1 + i%4),
		})
	}
	return cfg
}()

// benchRand is splitmix64: reproducible, no math/rand.
type benchRand uint64

func (r *benchRand) next() uint64 {
	*r += 0x9E3779B97F4A7C15
	x := uint64(*r)
	x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9
	x = (x ^ (x >> 27)) * 0x94D049BB133111EB
	return x ^ (x >> 31)
}

var models = [10]string{"sdxl", "flux", "llama-8b", "llama-70b", "wan", "whisper", "qwen", "sd3", "mochi", "bge"}

type benchQueue struct {
	q        *FairQueue
	rnd      benchRand
	next     uint64
	now      int64
	bytesJob float64
}

// A job's ID carries its tenant in its low bits, so that the harness knows
// a placed job's tenant without a lookup of its own inside the timed loop.
const benchIDShift = 10 // 1 << 10 > benchTenants

func benchTenantOf(id uint64) int32 { return int32(id & (1<<benchIDShift - 1)) }

func (bq *benchQueue) job(tenant int) Job {
	bq.next++
	r := bq.rnd.next()
	return Job{
		ID: bq.next<<benchIDShift | uint64(tenant), Seq: bq.next, Tenant: benchCfg.Tenants[tenant].Name, Tier: benchCfg.Tenants[tenant].Tier,
		Model: models[r%10], Priority: int32(r >> 8 % 10), GPUs: 1, GPUMemoryMB: 16000,
		Cost: int64(1000 + r>>16%60000), Ready: bq.now,
	}
}

var (
	benchMu     sync.Mutex
	benchQueues = map[int]*benchQueue{}
)

// queueOf builds (once per size) a queue of n jobs and measures the heap
// it takes per job.
func queueOf(n int) *benchQueue {
	benchMu.Lock()
	defer benchMu.Unlock()
	if bq, ok := benchQueues[n]; ok {
		return bq
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	bq := &benchQueue{q: NewFairQueue(benchCfg), rnd: benchRand(n)}
	bq.q.Advance(0)
	for i := range n {
		bq.q.Enqueue(bq.job(int(bq.rnd.next()%benchTenants) ^ i&0))
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	bq.bytesJob = float64(after.HeapAlloc-before.HeapAlloc) / float64(n)
	benchQueues[n] = bq
	return bq
}

var benchSizes = []int{10_000, 100_000, 1_000_000}

// BenchmarkEnqueue times one Enqueue into a queue of about n jobs (the
// queue is trimmed back, untimed, when it has grown by half).
func BenchmarkEnqueue(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("queued=%d", n), func(b *testing.B) {
			bq := queueOf(n)
			added := make([]uint64, 0, n/2)
			b.ReportAllocs()
			for b.Loop() {
				j := bq.job(int(bq.rnd.next() % benchTenants))
				bq.q.Enqueue(j)
				if added = append(added, j.ID); len(added) == n/2 {
					b.StopTimer()
					for _, id := range added {
						bq.q.Remove(id)
					}
					added = added[:0]
					b.StartTimer()
				}
			}
			b.StopTimer()
			for _, id := range added {
				bq.q.Remove(id)
			}
			b.ReportMetric(bq.bytesJob, "heap-bytes/job")
		})
	}
}

// BenchmarkDispatch times Place over `free` free slots (one per executor,
// 1 GPU, any model, one warm) plus Start of every job placed, reported per
// job dispatched. Started jobs are replaced, untimed, by new jobs of the
// same tenants whenever the queue has shrunk by 5%, so that it stays near
// n and the timer is stopped rarely (stopping it reads the heap's stats).
func BenchmarkDispatch(b *testing.B) {
	for _, n := range benchSizes {
		for _, free := range []int{1, 100, 1000} {
			b.Run(fmt.Sprintf("queued=%d/free=%d", n, free), func(b *testing.B) {
				bq := queueOf(n)
				slots := make([]Slot, free)
				for i := range slots {
					slots[i] = Slot{Executor: fmt.Sprintf("gpu-%04d", i), GPUs: 1, GPUMemoryMB: 80000, Warm: models[i%10 : i%10+1]}
				}
				dst := make([]Placement, 0, free)
				started := make([]int32, 0, n/20+free) // tenants of started jobs
				jobs := 0
				b.ReportAllocs()
				for b.Loop() {
					bq.now++
					bq.q.Advance(bq.now)
					dst = bq.q.PlaceInto(dst[:0], bq.now, slots)
					for _, p := range dst {
						started = append(started, benchTenantOf(p.JobID))
						bq.q.Start(p.JobID, bq.now)
					}
					jobs += len(dst)
					if len(started) >= n/20 {
						b.StopTimer()
						bq.refill(started)
						started = started[:0]
						b.StartTimer()
					}
				}
				b.StopTimer()
				bq.refill(started)
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(max(jobs, 1)), "ns/job")
				b.ReportMetric(bq.q.meanTreeDepth(), "tree-depth")
			})
		}
	}
}

// refill enqueues one new job for each tenant (an index into
// benchCfg.Tenants) in started and marks their old jobs stopped.
func (bq *benchQueue) refill(started []int32) {
	for _, t := range started {
		bq.q.Stopped(benchCfg.Tenants[t].Name)
		bq.q.Enqueue(bq.job(int(t)))
	}
}

// BenchmarkPosition times Position of a random queued job.
func BenchmarkPosition(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("queued=%d", n), func(b *testing.B) {
			bq := queueOf(n)
			ids := make([]uint64, 0, 1024)
			bq.q.byID.each(func(x int32) {
				if len(ids) < cap(ids) {
					ids = append(ids, bq.q.jobs[x].id)
				}
			})
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				bq.q.Position(ids[i%len(ids)])
			}
		})
	}
}

// meanTreeDepth is the mean depth of the queued jobs in their queue-order
// trees: the nodes from the root to the job's leaf, which Start walks up
// to remove a job and Enqueue walks down to add one. It is the part of a
// dispatch's work that grows with the queue.
func (q *FairQueue) meanTreeDepth() float64 {
	var sum, n int
	for mi := range q.models {
		for _, tt := range q.models[mi].trees {
			if tt.root == 0 {
				continue
			}
			d := 1
			for x := tt.root; !q.bt.bn[x].leaf; x = q.bt.bn[x].child[0] {
				d++
			}
			k := q.bt.size(tt.root)
			sum += d * k
			n += k
		}
	}
	return float64(sum) / float64(max(n, 1))
}

// BenchmarkMemoryLatency is a control for the machine, not the queue: one
// dependent load at a random place in a buffer the size of the queue's
// heap at each benchmark size (pointer chasing over a random cycle), so
// that the growth of Dispatch's time can be set against the growth of
// the cost of touching memory of that footprint.
func BenchmarkMemoryLatency(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("footprint-of=%d", n), func(b *testing.B) {
			bytes := int(queueOf(n).bytesJob * float64(n))
			const line = 64 / 8 // one uint64 per cache line is used
			lines := bytes / 64
			buf := make([]uint64, lines*line)
			perm := make([]int, lines)
			rnd := benchRand(n)
			for i := range perm {
				perm[i] = i
			}
			for i := len(perm) - 1; i > 0; i-- {
				j := int(rnd.next() % uint64(i+1))
				perm[i], perm[j] = perm[j], perm[i]
			}
			for i := range perm {
				buf[perm[i]*line] = uint64(perm[(i+1)%len(perm)] * line)
			}
			p := uint64(0)
			for b.Loop() {
				p = buf[p]
			}
			b.ReportMetric(float64(bytes)/(1<<20), "MiB")
			if p == 1 {
				b.Log(p)
			}
		})
	}
}
