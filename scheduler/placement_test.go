package scheduler

import (
	"fmt"
	"testing"

	"pgregory.net/rapid"
)

func TestPlacePrefersWarmThenTightestThenSlotOrder(t *testing.T) {
	slots := []Slot{
		{Executor: "big", GPUs: 8, GPUMemoryMB: 80000},
		{Executor: "cold-tight", GPUs: 2, GPUMemoryMB: 80000},
		{Executor: "cold-tight-lessmem", GPUs: 2, GPUMemoryMB: 40000},
		{Executor: "warm-loose", GPUs: 4, GPUMemoryMB: 80000, Warm: []string{"sdxl"}},
		{Executor: "llm-only", GPUs: 1, GPUMemoryMB: 80000, Models: []string{"llama"}},
	}
	for _, tc := range []struct {
		job  Job
		want string
	}{
		{Job{Model: "sdxl", GPUs: 2, GPUMemoryMB: 20000}, "warm-loose"},
		{Job{Model: "flux", GPUs: 2, GPUMemoryMB: 20000}, "cold-tight-lessmem"},
		{Job{Model: "flux", GPUs: 2, GPUMemoryMB: 50000}, "cold-tight"},
		{Job{Model: "flux", GPUs: 1, GPUMemoryMB: 50000}, "cold-tight"}, // llm-only cannot run flux
		{Job{Model: "llama", GPUs: 1}, "llm-only"},
		{Job{Model: "flux", GPUs: 6}, "big"},
	} {
		q := NewFairQueue(Config{})
		tc.job.ID, tc.job.Seq, tc.job.Tenant = 1, 1, "a"
		q.Enqueue(tc.job)
		p := q.Place(0, slots)
		if len(p) != 1 || p[0].Executor != tc.want || slots[p[0].Slot].Executor != tc.want {
			t.Errorf("%+v placed %v, want on %s", tc.job, p, tc.want)
		}
	}
}

func TestPlaceSharesASlotsGPUsAndJobs(t *testing.T) {
	q := NewFairQueue(Config{})
	for i := uint64(1); i <= 6; i++ {
		q.Enqueue(Job{ID: i, Seq: i, Tenant: fmt.Sprint(i), Model: "m", GPUs: 2})
	}
	p := q.Place(0, []Slot{{Executor: "a", GPUs: 5, Jobs: 10}, {Executor: "b", GPUs: 8, Jobs: 1}})
	per := map[string]int{}
	for _, x := range p {
		per[x.Executor]++
	}
	if per["a"] != 2 || per["b"] != 1 {
		t.Fatalf("placed %v: want 2 jobs on a (5 GPUs), 1 on b (Jobs: 1)", p)
	}
	if q.Len() != 6 {
		t.Fatal("Place changed the queue")
	}
}

func TestJobThatFitsNowhereDoesNotBlockOthers(t *testing.T) {
	q := NewFairQueue(Config{})
	q.Enqueue(Job{ID: 1, Seq: 1, Tenant: "a", Model: "m", GPUs: 4, Priority: 9})
	q.Enqueue(Job{ID: 2, Seq: 2, Tenant: "a", Model: "m", GPUs: 1})
	q.Enqueue(Job{ID: 3, Seq: 3, Tenant: "b", Model: "m", GPUs: 1})
	p := q.Place(0, []Slot{{Executor: "e", GPUs: 2, Jobs: 2, TotalGPUs: 8}})
	if len(p) != 2 {
		t.Fatalf("placed %v, want jobs 2 and 3 around the 4-GPU job", p)
	}
}

// gpuCluster simulates executors with whole-GPU jobs of fixed durations,
// for the reservation properties. Time is in whole seconds.
type gpuCluster struct {
	total []int32 // per executor
	free  []int32
	ends  []running
}

type running struct {
	at     int64
	exec   int
	gpus   int32
	tenant string
}

func (c *gpuCluster) slots() []Slot {
	var s []Slot
	for i := range c.total {
		if c.free[i] > 0 {
			s = append(s, Slot{Executor: fmt.Sprintf("e%d", i), GPUs: c.free[i], TotalGPUs: c.total[i], Jobs: c.free[i]})
		}
	}
	return s
}

func (c *gpuCluster) finish(q *FairQueue, now int64) {
	keep := c.ends[:0]
	for _, r := range c.ends {
		if r.at <= now {
			c.free[r.exec] += r.gpus
			q.Stopped(r.tenant)
		} else {
			keep = append(keep, r)
		}
	}
	c.ends = keep
}

// bigAmongSmall runs a cluster of execs executors with gpus GPUs each,
// kept busy by 1-GPU jobs from four tenants; at second 1, once every GPU
// is taken, one of them submits a job needing a whole executor, at a
// higher priority than its small ones (so it heads its tenant's jobs and
// its tenant keeps having others). dur(exec, k) is how long the k-th job
// started on an executor runs. It returns how many seconds the big job
// waited, or -1 if it did not start within horizon.
func bigAmongSmall(q *FairQueue, execs int, gpus int32, dur func(exec, k int) int64, horizon int64) int64 {
	c := &gpuCluster{}
	for range execs {
		c.total, c.free = append(c.total, gpus), append(c.free, gpus)
	}
	started := make([]int, execs)
	sec := int64(1e9)
	id := uint64(0)
	owner := map[uint64]string{}
	queued := map[string]int{}
	tenants := []string{"s1", "s2", "s3", "big"}
	// Every tenant always has a full cluster's worth of small jobs queued,
	// so no executor ever drains for want of work.
	refill := func(now int64) {
		for _, tn := range tenants {
			for queued[tn] < execs*int(gpus) {
				id++
				q.Enqueue(Job{ID: id, Seq: id, Tenant: tn, Model: "m", GPUs: 1, Ready: now * sec, Cost: 1000 * (1 + int64(id%4))})
				owner[id] = tn
				queued[tn]++
			}
		}
	}
	big := uint64(1 << 40)
	for now := int64(0); now <= horizon; now++ {
		if now == 1 {
			q.Enqueue(Job{ID: big, Seq: big, Tenant: "big", Model: "m", GPUs: gpus, Ready: sec, Cost: int64(gpus) * 5000, Priority: 9})
		}
		c.finish(q, now)
		refill(now)
		q.Advance(now * sec)
		for _, p := range q.Place(now*sec, c.slots()) {
			q.Start(p.JobID, now*sec)
			if p.JobID == big {
				return now - 1
			}
			queued[owner[p.JobID]]--
			var e int
			fmt.Sscanf(p.Executor, "e%d", &e)
			c.free[e]--
			c.ends = append(c.ends, running{at: now + dur(e, started[e]), exec: e, gpus: 1, tenant: owner[p.JobID]})
			started[e]++
		}
	}
	return -1
}

func TestReservationIsWhatStartsABigJobAmongStaggeredSmallOnes(t *testing.T) {
	// The first jobs on each executor end 1, 2, 3, 4 s in; every later one
	// runs 4 s: each executor frees exactly one GPU a second, forever.
	staggered := func(_, k int) int64 {
		if k < 4 {
			return int64(k + 1)
		}
		return 4
	}
	if at := bigAmongSmall(NewFairQueue(Config{}), 3, 4, staggered, 2000); at >= 0 {
		t.Fatalf("without reservation the 4-GPU job started after %ds; this control expects it starved, so the reservation test below would not prove anything", at)
	}
	if at := bigAmongSmall(NewFairQueue(Config{ReserveAfter: 5e9}), 3, 4, staggered, 2000); at < 0 || at > 5+1+4 {
		t.Fatalf("with reservation after 5s the 4-GPU job waited %ds, want at most 10s", at)
	}
}

// TestBigJobStartsWithinBoundedTimeAmongSmallJobs: with reservation on, a
// job needing a whole executor starts within ReserveAfter + the time for
// its flow to head its tier + the time for the held executor to drain.
func TestBigJobStartsWithinBoundedTimeAmongSmallJobs(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		execs := rapid.IntRange(1, 4).Draw(t, "executors")
		gpus := rapid.Int32Range(2, 8).Draw(t, "gpus")
		dmax := rapid.Int64Range(1, 8).Draw(t, "maxdur")
		reserveAfter := rapid.Int64Range(1, 10).Draw(t, "reserveafter")
		seed := rapid.IntRange(0, 1<<20).Draw(t, "seed")
		dur := func(e, k int) int64 { return 1 + int64(uint(seed+e*7919+k*104729)%uint(dmax)) }
		q := NewFairQueue(Config{ReserveAfter: reserveAfter * 1e9})
		// Costs are 1000..4000, weights equal: while the big tenant's flow
		// waits at most one job's cost ahead of the tier's virtual time,
		// each of the 3 others passes it at most 4+1 times before it heads
		// the tier, and some job ends (so one dispatches) at least every
		// dmax seconds. Once its head job is overdue and fits nowhere, the
		// flow dispatches nothing else, so it reaches and keeps the head;
		// there it holds an executor, which gains a GPU at least every dmax
		// seconds until the job fits.
		bound := reserveAfter + 1 + 3*5*dmax + int64(gpus)*dmax
		at := bigAmongSmall(q, execs, gpus, dur, bound+50)
		if at < 0 || at > bound {
			t.Fatalf("the %d-GPU job waited %ds, want at most %ds", gpus, at, bound)
		}
	})
}

// TestPlaceBatchEqualsOneAtATime: Place's simulated charging makes one
// call with k free places pick what k rounds of Place-one-then-Start pick.
func TestPlaceBatchEqualsOneAtATime(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		w := drawWorld(t, rapid.IntRange(1, 3).Draw(t, "tiers"), rapid.IntRange(2, 5).Draw(t, "tenants"), 5)
		w.cfg.Tiers[0].Strict = rapid.Bool().Draw(t, "strict")
		for i := range w.cfg.Tenants {
			w.cfg.Tenants[i].MaxRunning = rapid.Int32Range(0, 3).Draw(t, "cap")
		}
		a, b := NewFairQueue(w.cfg), NewFairQueue(w.cfg)
		for i := uint64(1); i <= uint64(rapid.IntRange(1, 40).Draw(t, "jobs")); i++ {
			j := Job{ID: i, Seq: i, Tenant: rapid.SampledFrom(w.tenants).Draw(t, "tenant"),
				Model: rapid.SampledFrom([]string{"m", "n"}).Draw(t, "model"), GPUs: rapid.Int32Range(1, 2).Draw(t, "gpus"),
				Cost: rapid.Int64Range(0, 20).Draw(t, "cost"), Priority: rapid.Int32Range(0, 9).Draw(t, "prio"),
				Ready: rapid.Int64Range(0, 3).Draw(t, "ready")}
			a.Enqueue(j)
			b.Enqueue(j)
		}
		a.Advance(1)
		b.Advance(1)
		k := rapid.IntRange(1, 8).Draw(t, "places")
		batch := a.Place(5, []Slot{{Executor: "e", GPUs: int32(2 * k), Jobs: int32(k)}})
		var one []uint64
		left := int32(2 * k)
		for range k {
			p := b.Place(5, []Slot{{Executor: "e", GPUs: left, Jobs: 1}})
			if len(p) == 0 {
				break
			}
			one = append(one, p[0].JobID)
			left -= b.jobs[b.mustFind(p[0].JobID)].gpus
			b.Start(p[0].JobID, 5)
		}
		var got []uint64
		for _, p := range batch {
			got = append(got, p.JobID)
		}
		if fmt.Sprint(got) != fmt.Sprint(one) {
			t.Fatalf("batch placed %v, one at a time %v", got, one)
		}
	})
}

func TestPlaceIntoAllocatesNothing(t *testing.T) {
	q := NewFairQueue(Config{ReserveAfter: 1})
	for i := uint64(1); i <= 1000; i++ {
		q.Enqueue(Job{ID: i, Seq: i, Tenant: fmt.Sprint(i % 50), Model: "m", GPUs: 1, Cost: 100})
	}
	q.Advance(0)
	slots := make([]Slot, 100)
	for i := range slots {
		slots[i] = Slot{Executor: fmt.Sprint(i), GPUs: 1, GPUMemoryMB: int64(i % 3)}
	}
	dst := make([]Placement, 0, 128)
	q.PlaceInto(dst, 10, slots)
	if n := testing.AllocsPerRun(20, func() { q.PlaceInto(dst[:0], 10, slots) }); n != 0 {
		t.Fatalf("PlaceInto allocates %v times per call", n)
	}
}

// TestReadsMayRunConcurrently: Position, Ascend, Page and CheckAdmission
// may run from many goroutines, and beside one Place (whose scratch is the
// queue's Placer, which no reader reads); run with -race.
func TestReadsMayRunConcurrently(t *testing.T) {
	q := NewFairQueue(Config{ReserveAfter: 1, MaxQueued: 1 << 20})
	for i := uint64(1); i <= 300; i++ {
		q.Enqueue(Job{ID: i, Seq: i, Tenant: fmt.Sprint(i % 7), Model: fmt.Sprint(i % 3), GPUs: int32(1 + i%3), Ready: int64(i % 5)})
	}
	q.Advance(2)
	slots := []Slot{{Executor: "a", GPUs: 2, TotalGPUs: 4, Jobs: 2}, {Executor: "b", GPUs: 1}}
	want := fmt.Sprint(q.Place(10, slots))
	done := make(chan string)
	for g := range 4 {
		go func() {
			var out string
			for range 50 {
				switch g {
				case 0:
					out = fmt.Sprint(q.Place(10, slots))
				case 1, 2:
					for id := uint64(1); id <= 300; id += 7 {
						q.Position(id)
					}
					_ = q.CheckAdmission(Job{Tenant: "1", Model: "1"}, 5)
				case 3:
					q.Ascend(func(Job) bool { return true })
					q.Page(Cursor{}, 10)
				}
			}
			done <- out
		}()
	}
	for range 4 {
		if out := <-done; out != "" && out != want {
			t.Errorf("concurrent Place = %s, want %s", out, want)
		}
	}
}

// TestPlacersShareAQueue: Placers of their own place one queue at once,
// each as the queue's own Place does, and leave the queue as it was (its
// encoding); run with -race.
func TestPlacersShareAQueue(t *testing.T) {
	q := NewFairQueue(Config{ReserveAfter: 1})
	for i := uint64(1); i <= 400; i++ {
		q.Enqueue(Job{ID: i, Seq: i, Tenant: fmt.Sprint(i % 9), Tier: fmt.Sprint(i % 2), Model: fmt.Sprint(i % 4),
			GPUs: int32(1 + i%4), Priority: int32(i % 3), Ready: int64(i % 6)})
	}
	q.Advance(3)
	slots := []Slot{{Executor: "a", GPUs: 3, TotalGPUs: 8, Jobs: 3}, {Executor: "b", GPUs: 1, Warm: []string{"2"}},
		{Executor: "c", GPUs: 4, Jobs: 2, Models: []string{"1", "3"}}}
	before, _ := q.MarshalBinary()
	want := fmt.Sprint(q.Place(10, slots))
	done := make(chan string)
	for range 3 {
		go func() {
			var p Placer
			var out []Placement
			for range 40 {
				out = p.Place(out[:0], q, 10, slots)
			}
			done <- fmt.Sprint(out)
		}()
	}
	for range 3 {
		if got := <-done; got != want {
			t.Errorf("a Placer of its own placed %s, the queue's Place %s", got, want)
		}
	}
	if after, _ := q.MarshalBinary(); string(after) != string(before) {
		t.Error("placing changed the queue's encoding")
	}
}
