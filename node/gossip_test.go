package node

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/sluicehq/sluice/gpuexec"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

func TestGossipMetaWithEightGPUsFitsMemberlistsLimit(t *testing.T) {
	m := &sluicev1.GossipMeta{Role: sluicev1.GossipMeta_ROLE_EXECUTOR, ApiAddress: "[2001:db8::1234:5678]:65535",
		Slots: 8, FreeSlots: 8, WarmModels: []string{
			strings.Repeat("m", 40), "stable-diffusion-xl-1.0", "llama-3.1-70b-instruct", "flux.1-dev"}}
	for range 8 {
		m.Gpus = append(m.Gpus, &sluicev1.GossipGPU{MemoryTotalMb: 143771, MemoryFreeMb: 143155, UtilizationPct: 100})
	}
	b, err := EncodeMeta(m)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > memberlist.MetaMaxSize {
		t.Fatalf("%d bytes", len(b))
	}
	t.Logf("8 GPUs, 4 warm models: %d of %d bytes", len(b), memberlist.MetaMaxSize)
	back, err := DecodeMeta(b)
	if err != nil || len(back.Gpus) != 8 || back.Gpus[7].MemoryFreeMb != 143155 {
		t.Fatalf("round trip: %v %v", back, err)
	}
	for _, bad := range [][]byte{nil, {9, 1, 2}, {metaVersion, 0xff, 0xff, 0xff}} {
		if _, err := DecodeMeta(bad); err == nil {
			t.Fatalf("DecodeMeta(%x) accepted garbage", bad)
		}
	}
	m.WarmModels = append(m.WarmModels, strings.Repeat("x", 600))
	if _, err := EncodeMeta(m); err == nil {
		t.Fatal("EncodeMeta let metadata past the 512-byte limit")
	}
}

// TestExecutorLeavingThePoolRequeuesItsJobsAtOnce: when the gossip pool
// declares an executor gone, the leader requeues its attempts without
// waiting for its lease to miss heartbeats (set far longer here).
func TestExecutorLeavingThePoolRequeuesItsJobsAtOnce(t *testing.T) {
	p := DemoPolicy()
	p.Rules = nil
	n, err := Start(Config{DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", Bootstrap: true, Policy: p,
		HeartbeatInterval: 10 * time.Second, Gossip: "127.0.0.1:0", Logger: quietLogger(), RaftLog: nilWriter{}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	waitFor(t, "leadership", n.Leading)
	pool, err := StartPool(PoolConfig{Name: "gone-1", Bind: "127.0.0.1:0", Join: []string{n.GossipAddr()},
		Meta: func() *sluicev1.GossipMeta { return &sluicev1.GossipMeta{Role: sluicev1.GossipMeta_ROLE_EXECUTOR} }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a := &gpuexec.Agent{Info: gpuexec.DeclaredInfo("gone-1", 1, 1, 81920, nil), Servers: []string{baseURL(n)},
		Token: DemoExecutorToken, Runner: &gpuexec.Synthetic{Name: "gone-1"}}
	go a.Run(ctx)
	waitExecutors(t, n, 1)
	c := jobClient(n, DemoBobKey)
	id := submit(t, c, &sluicev1.JobSpec{Model: "sdxl", Input: input(t, map[string]any{"duration_ms": 60000})}).Id
	waitState(t, c, id, sluicev1.JobState_JOB_STATE_RUNNING)
	left := time.Now()
	pool.Close()
	waitFor(t, "the job to be requeued", func() bool {
		j := getJob(t, c, id)
		return j.Attempt >= 1 && strings.Contains(j.Error.GetMessage(), "left the gossip pool")
	})
	if took := time.Since(left); took > 5*time.Second {
		t.Fatalf("requeued %v after the executor left; the lease alone would take 30s", took)
	} else {
		t.Logf("requeued %v after the executor left the pool", took.Round(time.Millisecond))
	}
}

type nilWriter struct{}

func (nilWriter) Write(p []byte) (int, error) { return len(p), nil }
