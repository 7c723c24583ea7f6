package scheduler

import (
	"testing"
	"time"
)

func TestFIFOPlacesReadyJobsInArrivalOrder(t *testing.T) {
	q := NewFIFO()
	q.Enqueue(Job{ID: 1, Seq: 1, GPUs: 1, Ready: 0})
	q.Enqueue(Job{ID: 2, Seq: 2, GPUs: 1, Ready: 100}) // not ready until t=100
	q.Enqueue(Job{ID: 3, Seq: 3, GPUs: 4, Ready: 0})   // fits no 1-GPU slot
	q.Enqueue(Job{ID: 4, Seq: 4, GPUs: 1, Ready: 0})
	slots := []Slot{{Executor: "a", GPUs: 1, GPUMemoryMB: 100}, {Executor: "b", GPUs: 1, GPUMemoryMB: 100}}
	got := q.Place(50, slots)
	if len(got) != 2 || got[0] != (Placement{JobID: 1, Executor: "a", Slot: 0}) || got[1] != (Placement{JobID: 4, Executor: "b", Slot: 1}) {
		t.Fatalf("Place at 50 = %v; want job 1 on a, job 4 on b (2 not ready, 3 too big)", got)
	}
	if q.Len() != 4 {
		t.Fatal("Place changed the queue")
	}
	if got := q.Place(100, slots[:1]); len(got) != 1 || got[0].JobID != 1 {
		t.Fatalf("Place at 100 with one slot = %v, want job 1", got)
	}
}

func TestFIFOPositionsFollowRemovals(t *testing.T) {
	q := NewFIFO()
	for i := uint64(1); i <= 5; i++ {
		q.Enqueue(Job{ID: i, Seq: 10 - i}) // arrives in reverse Seq order
	}
	if p, _ := q.Position(5); p != 1 {
		t.Fatalf("lowest Seq is at %d, want 1", p)
	}
	q.Remove(5)
	q.Remove(3)
	for id, want := range map[uint64]int{4: 1, 2: 2, 1: 3} {
		if p, ok := q.Position(id); !ok || p != want {
			t.Errorf("position of %d = %d, want %d", id, p, want)
		}
	}
	if _, ok := q.Position(3); ok {
		t.Error("removed job still has a position")
	}
	if q.Remove(3) {
		t.Error("second remove succeeded")
	}
	var order []uint64
	q.Ascend(func(j Job) bool { order = append(order, j.ID); return true })
	if len(order) != 3 || order[0] != 4 || order[2] != 1 {
		t.Fatalf("Ascend order %v", order)
	}
}

func TestFitsChecksGPUsMemoryAndModels(t *testing.T) {
	s := Slot{GPUs: 2, GPUMemoryMB: 1000, Models: []string{"sdxl"}}
	for _, tc := range []struct {
		j    Job
		want bool
	}{
		{Job{GPUs: 2, GPUMemoryMB: 1000, Model: "sdxl"}, true},
		{Job{GPUs: 3, Model: "sdxl"}, false},
		{Job{GPUs: 1, GPUMemoryMB: 1001, Model: "sdxl"}, false},
		{Job{GPUs: 1, Model: "llama"}, false},
	} {
		if got := Fits(tc.j, s); got != tc.want {
			t.Errorf("Fits(%+v) = %v, want %v", tc.j, got, tc.want)
		}
	}
}

func TestETA(t *testing.T) {
	for _, tc := range []struct {
		pos, slots int
		want       time.Duration
	}{
		{1, 4, 250 * time.Millisecond}, {4, 4, 1750 * time.Millisecond}, {5, 4, 2250 * time.Millisecond}, {9, 4, 4250 * time.Millisecond},
		{1, 1, time.Second}, {3, 1, 5 * time.Second}, {1, 0, -1}, {0, 4, 0},
	} {
		if got := ETA(tc.pos, tc.slots, 2*time.Second); got != tc.want {
			t.Errorf("ETA(%d, %d, 2s) = %v, want %v", tc.pos, tc.slots, got, tc.want)
		}
	}
}
