package node

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
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

func writeKeys(t *testing.T, path string, keys ...[]byte) {
	t.Helper()
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(base64.StdEncoding.EncodeToString(k) + "\n")
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
}

func gossipKey(fill byte) []byte { return bytes.Repeat([]byte{fill}, 32) }

func keyedPool(t *testing.T, name, keyFile string, join ...string) (*Pool, error) {
	p, err := StartPool(PoolConfig{Name: name, Bind: "127.0.0.1:0", Join: join, KeyFile: keyFile,
		Meta: func() *sluicev1.GossipMeta { return &sluicev1.GossipMeta{Role: sluicev1.GossipMeta_ROLE_EXECUTOR} }})
	if err == nil {
		t.Cleanup(func() { p.Close() })
	}
	return p, err
}

// TestGossipKeyringAdmitsOnlyKeyHolders: members with the same key see each
// other; one with another key cannot join, nor can one without a key.
func TestGossipKeyringAdmitsOnlyKeyHolders(t *testing.T) {
	dir := t.TempDir()
	good, other := filepath.Join(dir, "good"), filepath.Join(dir, "other")
	writeKeys(t, good, gossipKey(1))
	writeKeys(t, other, gossipKey(2))
	a, err := keyedPool(t, "a", good)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := keyedPool(t, "b", good, a.Addr()); err != nil {
		t.Fatalf("same key: %v", err)
	}
	waitFor(t, "a and b to see each other", func() bool { return len(a.Members()) == 2 })
	_, err = keyedPool(t, "c", other, a.Addr())
	if err == nil {
		t.Fatal("a member with another key joined")
	}
	t.Logf("other key: %v", err)
	_, err = keyedPool(t, "d", "", a.Addr())
	if err == nil {
		t.Fatal("a member without a key joined an encrypted pool")
	}
	time.Sleep(time.Second)
	if m := a.Members(); len(m) != 2 || m["c"] != nil || m["d"] != nil {
		t.Fatalf("members %v", m)
	}
}

// TestGossipKeyRotationLosesNoMember: the documented rotation (add the new
// key second, make it first, drop the old), each step reaching every member
// by the file changing or by ReloadKeys, loses no member; afterwards a
// member with only the new key joins and one with only the old cannot.
func TestGossipKeyRotationLosesNoMember(t *testing.T) {
	dir := t.TempDir()
	files := []string{filepath.Join(dir, "a"), filepath.Join(dir, "b"), filepath.Join(dir, "c")}
	old, fresh := gossipKey(1), gossipKey(9)
	var pools []*Pool
	var lost atomic.Int64
	for i, f := range files {
		writeKeys(t, f, old)
		var join []string
		if i > 0 {
			join = []string{pools[0].Addr()}
		}
		p, err := StartPool(PoolConfig{Name: string(rune('a' + i)), Bind: "127.0.0.1:0", Join: join, KeyFile: f,
			Meta: func() *sluicev1.GossipMeta { return &sluicev1.GossipMeta{Role: sluicev1.GossipMeta_ROLE_EXECUTOR} },
			Events: func(e PoolEvent) {
				if e.Kind == "leave" {
					lost.Add(1)
				}
			}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		pools = append(pools, p)
	}
	for _, p := range pools {
		waitFor(t, "three members", func() bool { return len(p.Members()) == 3 })
	}
	for step, keys := range [][][]byte{{old, fresh}, {fresh, old}, {fresh}} {
		for i, f := range files {
			writeKeys(t, f, keys...)
			if i == 0 {
				// One member by SIGHUP's path, the others by the file watch.
				if err := pools[0].ReloadKeys(); err != nil {
					t.Fatal(err)
				}
			}
		}
		for _, p := range pools {
			waitFor(t, fmt.Sprintf("step %d to reach %s", step+1, p.cfg.Name), func() bool {
				return bytes.Equal(p.ring.GetPrimaryKey(), keys[0]) && len(p.ring.GetKeys()) == len(keys)
			})
		}
		time.Sleep(1500 * time.Millisecond) // several probe rounds under the new keys
		for _, p := range pools {
			if n := len(p.Members()); n != 3 {
				t.Fatalf("step %d: %s sees %d members", step+1, p.cfg.Name, n)
			}
		}
	}
	if n := lost.Load(); n != 0 {
		t.Fatalf("%d leave events during the rotation", n)
	}
	newOnly, oldOnly := filepath.Join(dir, "new"), filepath.Join(dir, "old")
	writeKeys(t, newOnly, fresh)
	writeKeys(t, oldOnly, old)
	if _, err := keyedPool(t, "d", newOnly, pools[1].Addr()); err != nil {
		t.Fatalf("a member with the new key: %v", err)
	}
	if _, err := keyedPool(t, "e", oldOnly, pools[1].Addr()); err == nil {
		t.Fatal("a member with only the retired key joined")
	}
}

// TestGossipKeyFileErrorsNameTheLine: a bad key file is refused naming the
// flag and the line; a bad rewrite keeps the keys in use.
func TestGossipKeyFileErrorsNameTheLine(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "keys")
	for _, tc := range []struct{ data, want string }{
		{"", "no key"},
		{"!!!\n", "line 1: not base64"},
		{base64.StdEncoding.EncodeToString(gossipKey(1)) + "\n" + base64.StdEncoding.EncodeToString([]byte("short")) + "\n", "line 2: 5 bytes; a key is 16, 24 or 32 bytes"},
		{base64.StdEncoding.EncodeToString(gossipKey(1)) + "\n" + base64.StdEncoding.EncodeToString(gossipKey(1)) + "\n", "line 2: the key appears twice"},
	} {
		os.WriteFile(f, []byte(tc.data), 0o600)
		_, err := LoadGossipKeys(f)
		if err == nil || !strings.Contains(err.Error(), "--gossip-key-file "+f+": "+tc.want) {
			t.Fatalf("%q: %v, want %q", tc.data, err, tc.want)
		}
	}
	writeKeys(t, f, gossipKey(1))
	p, err := keyedPool(t, "a", f)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(f, []byte("garbage\n"), 0o600)
	if err := p.ReloadKeys(); err == nil {
		t.Fatal("a garbage key file reloaded")
	}
	if !bytes.Equal(p.ring.GetPrimaryKey(), gossipKey(1)) || len(p.ring.GetKeys()) != 1 {
		t.Fatal("a bad key file changed the keyring")
	}
}
