package admission

import (
	"fmt"
	"math/bits"
	"slices"
	"testing"

	"pgregory.net/rapid"
)

// TestFleetReservesLowestFreeGPUs: a reservation takes the lowest numbered
// free GPUs, holds them until it starts and finishes (or is given back),
// and a full executor is offered only when asked for full ones.
func TestFleetReservesLowestFreeGPUs(t *testing.T) {
	f := NewFleet()
	f.Attach(Desc{Name: "b", GPUs: []string{"b0", "b1", "b2", "b3"}, Slots: 3, GPUMemoryMB: []int64{81920, 40960, 0, 81920}}, nil)
	a := f.Attach(Desc{Name: "a", Slots: 1, Models: []string{"sdxl"}, GPUMemoryMB: []int64{81920}}, nil)
	if a != 0 || f.Name(1) != "b" {
		t.Fatalf("numbered %d, %q: want name order", a, f.Name(1))
	}
	b, _ := f.Index("b")
	m1, ok := f.Reserve(b, 10, 2, 0)
	if !ok || !slices.Equal(f.IDs(b, m1), []string{"b0", "b1"}) {
		t.Fatalf("first reservation: %v %v", f.IDs(b, m1), ok)
	}
	m2, ok := f.Reserve(b, 11, 1, 0)
	if !ok || !slices.Equal(f.IDs(b, m2), []string{"b2"}) {
		t.Fatalf("second reservation: %v %v", f.IDs(b, m2), ok)
	}
	if _, ok := f.Reserve(b, 12, 2, 0); ok {
		t.Fatal("reserved 2 GPUs where 1 is free")
	}
	if warm, ok := f.Start(b, 10, 1, "sdxl"); !ok || warm {
		t.Fatalf("start: warm %v ok %v, want a cold start", warm, ok)
	}
	if !f.Holds(b, 11, 99) || f.Running(b, 11, 1) || !f.Running(b, 10, 1) || f.Holds(b, 10, 2) {
		t.Fatal("Holds/Running disagree with the reservations")
	}
	slots := f.Offer(nil, false)
	if len(slots) != 2 || slots[1].GPUs != 1 || slots[1].Jobs != 1 || slots[1].GPUMemoryMB != 40960 || slots[1].TotalGPUs != 4 {
		t.Fatalf("offer: %+v", slots)
	}
	f.Unreserve(b, 11)
	if _, ok := f.Finish(b, 10, 2); ok {
		t.Fatal("finished another attempt")
	}
	if r, ok := f.Finish(b, 10, 1); !ok || r.GPUs != m1 {
		t.Fatalf("finish: %+v %v", r, ok)
	}
	if f.Used(b) != 0 || len(f.Runs(b)) != 0 {
		t.Fatalf("left %b held by %v", f.Used(b), f.Runs(b))
	}
	// Full: only a full executor is offered with full set.
	f.Reserve(a, 20, 1, 0)
	if got := f.Offer(nil, false); len(got) != 1 || got[0].Executor != "b" {
		t.Fatalf("offer without full ones: %+v", got)
	}
	if got := f.Offer(nil, true); len(got) != 2 || got[0].GPUs != 0 || got[0].Jobs != 0 {
		t.Fatalf("offer with full ones: %+v", got)
	}
	// Down loses its runs and its warm models; it is offered nothing.
	f.Start(a, 20, 1, "sdxl")
	if lost := f.Down(a); len(lost) != 1 || lost[0].Job != 20 || f.IsUp(a) || f.Warm(a) != nil {
		t.Fatalf("down: lost %v, up %v, warm %v", lost, f.IsUp(a), f.Warm(a))
	}
	if total, _ := f.Slots("sdxl"); total != 3 {
		t.Fatalf("sdxl slots up: %d, want b's 3", total)
	}
	if why := f.Unplaceable("sdxl", 1, 81920); why != "" {
		t.Fatalf("a down executor that comes back is a place: %q", why)
	}
}

// TestFleetUnplaceableAsPlacementOffers: an executor is a place for a job
// only as placement is offered it, each GPU with its smallest memory.
func TestFleetUnplaceableAsPlacementOffers(t *testing.T) {
	f := NewFleet()
	if why := f.Unplaceable("sdxl", 8, 1); why != "" {
		t.Fatalf("empty fleet: %q, want no claim", why)
	}
	f.Attach(Desc{Name: "mixed", GPUs: []string{"m0", "m1"}, GPUMemoryMB: []int64{81920, 24576}}, nil)
	for _, c := range []struct {
		gpus int32
		mem  int64
		want string
	}{
		{2, 24576, ""},
		{1, 40000, "needs 40000 MiB of memory on each of its 1 GPU(s); no executor has that many that large (the largest GPU has 24576 MiB)"},
		{3, 1, "needs 3 GPUs; the largest executor has 2"},
	} {
		if got := f.Unplaceable("sdxl", c.gpus, c.mem); got != c.want {
			t.Errorf("%d × %d MiB: %q, want %q", c.gpus, c.mem, got, c.want)
		}
		if slot := f.Offer(nil, false)[0]; (c.want == "") != (c.gpus <= slot.TotalGPUs && c.mem <= slot.GPUMemoryMB) {
			t.Errorf("%d × %d MiB: Unplaceable %q disagrees with the offer %+v", c.gpus, c.mem, c.want, slot)
		}
	}
}

// TestFleetProperties: under any sequence of leases, reservations, starts,
// finishes, crashes and removals, the GPUs held are exactly those of the
// runs, no two runs share a GPU, a reservation succeeds exactly when a slot
// and the GPUs are free and takes GPUs the executor has, the offer says
// what is free, and the numbering is name order.
func TestFleetProperties(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		f := NewFleet()
		names := []string{"a", "b", "c", "d", "e"}
		next := uint64(1)
		for step := range rapid.IntRange(1, 80).Draw(t, "steps") {
			name := rapid.SampledFrom(names).Draw(t, fmt.Sprint("name", step))
			i, known := f.Index(name)
			switch op := rapid.IntRange(0, 9).Draw(t, fmt.Sprint("op", step)); {
			case op == 0 || !known:
				gpus := rapid.SampledFrom([]int{0, 1, 2, 4, 63, 64}).Draw(t, fmt.Sprint("gpus", step))
				// Attempts it already runs (a lease taken again), each on
				// GPUs of its own, as the log assigned them.
				var adopt []Run
				used := uint64(0)
				for k := range rapid.IntRange(0, 2).Draw(t, fmt.Sprint("adopt", step)) {
					if bit := uint64(1) << (2 * k); k < max(gpus, 1)/2 && used&bit == 0 {
						adopt = append(adopt, Run{Job: next, Attempt: 3, GPUs: bit})
						used |= bit
						next++
					}
				}
				f.Attach(Desc{Name: name, GPUs: GPUIDs(make([]string, gpus)), Slots: int32(rapid.IntRange(0, 3).Draw(t, fmt.Sprint("slots", step)))}, adopt)
			case op == 1:
				want := int32(rapid.IntRange(1, 64).Draw(t, fmt.Sprint("want", step)))
				m := &f.execs[i]
				full := !m.up || int32(len(m.runs)) >= m.Slots || int(m.gpus)-bits.OnesCount64(m.used&(1<<m.gpus-1)) < int(want)
				mask, ok := f.Reserve(i, next, want, 0)
				if ok == full {
					t.Fatalf("%s: reserve %d GPUs: %v, with %d runs on %d slots and %b of %d GPUs held", name, want, ok, len(m.runs), m.Slots, m.used, m.gpus)
				}
				if ok && (bits.OnesCount64(mask) != int(want) || bits.Len64(mask) > int(m.gpus)) {
					t.Fatalf("%s: reserved %b for %d GPUs of %d", name, mask, want, m.gpus)
				}
				next++
			case op == 8:
				// The same job again (its attempt timed out, not yet stopped).
				if runs := f.Runs(i); len(runs) > 0 && !runs[0].Reserved {
					if _, ok := f.Reserve(i, runs[0].Job, 1, 0); ok {
						if _, ok := f.Start(i, runs[0].Job, runs[0].Attempt+1, "m"); !ok {
							t.Fatalf("could not start the new attempt of job %d beside its stale one", runs[0].Job)
						}
					}
				}
			case op == 9:
				f.Update(i, Desc{Name: name, GPUs: GPUIDs(make([]string, rapid.IntRange(0, 64).Draw(t, fmt.Sprint("regpus", step)))), Slots: 2})
			case op == 2 || op == 3:
				if runs := f.Runs(i); len(runs) > 0 {
					r := runs[rapid.IntRange(0, len(runs)-1).Draw(t, fmt.Sprint("run", step))]
					if r.Reserved {
						if _, ok := f.Start(i, r.Job, 1, "m"); !ok {
							t.Fatalf("could not start reserved %+v", r)
						}
					} else if _, ok := f.Finish(i, r.Job, r.Attempt); !ok {
						t.Fatalf("could not finish %+v", r)
					}
				}
			case op == 4:
				if runs := f.Runs(i); len(runs) > 0 {
					f.Unreserve(i, runs[0].Job)
				}
			case op == 5:
				f.Down(i)
			case op == 6:
				f.Up(i)
			case op == 7:
				f.Remove(i)
			}
			checkFleet(t, f)
		}
	})
}

func checkFleet(t *rapid.T, f *Fleet) {
	offered := map[string]bool{}
	for _, s := range f.Offer(nil, false) {
		offered[s.Executor] = true
	}
	for i := range int32(f.Len()) {
		name := f.Name(i)
		if j, ok := f.Index(name); !ok || j != i {
			t.Fatalf("%q is number %d, its index says %d", name, i, j)
		}
		if i > 0 && f.Name(i-1) >= name {
			t.Fatalf("%q before %q: not name order", f.Name(i-1), name)
		}
		var held uint64
		for _, r := range f.Runs(i) {
			if held&r.GPUs != 0 {
				t.Fatalf("%s: two runs share GPUs %b", name, held&r.GPUs)
			}
			held |= r.GPUs
		}
		if held != f.Used(i) {
			t.Fatalf("%s: used %b, its runs hold %b", name, f.Used(i), held)
		}
		m := &f.execs[i]
		room := m.up && int32(len(m.runs)) < m.Slots && bits.OnesCount64(held) < int(m.gpus)
		if offered[name] != room {
			t.Fatalf("%s offered %v, has room %v", name, offered[name], room)
		}
		if !m.up && len(m.runs) > 0 {
			t.Fatalf("%s is down with runs %v", name, m.runs)
		}
	}
}
