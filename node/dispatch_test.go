package node

import (
	"bytes"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/sluicehq/sluice/admission"
	"github.com/sluicehq/sluice/fsm"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// TestServerAndSimulatorPlaceAlike: a server's leader places a queue of
// 1-, 2- and 3-GPU jobs of two tenants on executors that lease at once, and
// the simulator's placement (admission.Dispatcher on a fresh Fleet built
// the simulator's way, GPUs unnamed) run on a copy of the same state
// chooses the same jobs, executors and GPUs.
func TestServerAndSimulatorPlaceAlike(t *testing.T) {
	c := startCluster(t, 1, 0)
	n := c.waitLeader()
	for i := range 12 {
		key := []string{DemoBobKey, DemoAliceKey}[i%2]
		submit(t, jobClient(n, key), &sluicev1.JobSpec{Model: "llama-8b", Gpus: int32(1 + i%3),
			IdempotencyKey: fmt.Sprintf("j%d", i), Input: input(t, map[string]any{"duration_ms": 60000})})
	}
	// The queue as the leader holds it before any executor leases.
	var buf bytes.Buffer
	if _, err := n.fsm.Capture().WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	clone := fsm.New()
	if err := clone.Restore(buf.Bytes()); err != nil {
		t.Fatal(err)
	}
	var infos []*sluicev1.ExecutorInfo
	for e := range 3 {
		info := &sluicev1.ExecutorInfo{Name: fmt.Sprintf("x%d", e), Slots: 3}
		for g := range 4 {
			info.Gpus = append(info.Gpus, &sluicev1.GPU{Uuid: fmt.Sprintf("x%d-uuid-%d", e, g), MemoryTotalMb: 81920})
		}
		infos = append(infos, info)
	}
	// All lease in one step, so that the leader places the queue at once.
	n.execs.mu.Lock()
	for _, info := range infos {
		n.execs.execs[info.Name] = &leased{name: info.Name, info: info, out: make(chan *sluicev1.LeaseResponse, 256),
			done: make(chan struct{}), lastSeen: time.Now(), progress: map[uint64]progressReport{}}
		n.execs.fleet.Attach(descOf(info), nil)
	}
	n.execs.mu.Unlock()
	n.execs.signal()

	// The server's placements: executor and GPU numbers per job.
	type place struct {
		executor string
		gpus     []int
	}
	server := map[uint64]place{}
	waitFor(t, "the leader to place the queue", func() bool {
		clear(server)
		for _, rj := range n.fsm.Running() {
			j, _ := n.fsm.Job(rj.ID)
			var gpus []int
			for _, id := range j.Gpus {
				var e, g int
				fmt.Sscanf(id, "x%d-uuid-%d", &e, &g)
				gpus = append(gpus, g)
			}
			server[rj.ID] = place{rj.Executor, gpus}
		}
		return len(server) > 0
	})
	// The simulator's, on the copy: its fleet names no GPUs.
	fl := admission.NewFleet()
	for _, info := range infos {
		fl.Attach(admission.Desc{Name: info.Name, Slots: info.Slots, GPUs: admission.GPUIDs(make([]string, len(info.Gpus))),
			GPUMemoryMB: []int64{81920, 81920, 81920, 81920}}, nil)
	}
	var d admission.Dispatcher
	sim := map[uint64]place{}
	for _, p := range d.Dispatch(clone.Reads(), fl, time.Now().UnixNano(), true, nil) {
		var gpus []int
		for g := range 64 {
			if p.Mask&(1<<g) != 0 {
				gpus = append(gpus, g)
			}
		}
		sim[p.JobID] = place{p.Executor, gpus}
	}
	if len(sim) != len(server) {
		t.Fatalf("the server placed %d jobs, the simulator %d", len(server), len(sim))
	}
	for id, s := range server {
		if m, ok := sim[id]; !ok || m.executor != s.executor || !slices.Equal(m.gpus, s.gpus) {
			t.Errorf("job %d: the server put it on %s GPUs %v, the simulator on %s GPUs %v", id, s.executor, s.gpus, m.executor, m.gpus)
		}
	}
	t.Logf("%d jobs placed alike on 3 executors of 4 GPUs", len(server))
}
