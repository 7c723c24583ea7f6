package main

import (
	"context"
	"encoding/json"
	"math"
	"net/http"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/sluicehq/sluice/node"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
	"github.com/sluicehq/sluice/proto/gen/sluice/v1/sluicev1connect"
	"github.com/sluicehq/sluice/sim"
)

// replayTolerance is how close a replay under the recorded policy and
// executors must come to the recorded waits: within a tenth, or half a
// second (the real leader dispatches within its poll and lease round
// trips; the simulator at once).
const replayTolerance = 0.10

// TestReplayReproducesRecordedWaits: `sluice dev` with two executors takes
// three bursts of bob's jobs (2 s each) and queues them; stopped, its data
// dir is replayed (`sluice sim replay --from`; before it stopped, its log
// was read over the admin API with --from-cluster, recording the same),
// and the simulated waits
// by tier come within replayTolerance of the recorded ones. With one more
// executor the replay says they would have waited less.
func TestReplayReproducesRecordedWaits(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildSluice(t)
	data := t.TempDir()
	dev, url := startDev(t, bin, data)
	bob := sluicev1connect.NewJobServiceClient(http.DefaultClient, url, connect.WithInterceptors(bearerAuth(node.DemoBobKey)))
	var ids []string
	for burst := range 3 {
		for range 6 {
			res, err := bob.Submit(context.Background(), connect.NewRequest(&sluicev1.SubmitRequest{Spec: &sluicev1.JobSpec{Model: "sdxl"}}))
			if err != nil {
				t.Fatalf("burst %d: %v", burst, err)
			}
			ids = append(ids, res.Msg.Job.Id)
		}
		time.Sleep(3 * time.Second)
	}
	waitFor(t, "every job to finish", func() bool {
		res, err := bob.GetJob(context.Background(), connect.NewRequest(&sluicev1.GetJobRequest{Id: ids[len(ids)-1]}))
		return err == nil && res.Msg.Job.State == sluicev1.JobState_JOB_STATE_SUCCEEDED
	})
	replay := func(args ...string) map[string]sim.ReplayRow {
		t.Helper()
		out, err := exec.Command(bin, append([]string{"sim", "replay", "--out", t.TempDir(), "-o", "json"}, args...)...).Output()
		if err != nil {
			t.Fatalf("replay %v: %v\n%s", args, err, out)
		}
		var got struct{ Recorded, Simulated []sim.ReplayRow }
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		rows := map[string]sim.ReplayRow{}
		for _, r := range got.Recorded {
			rows["recorded "+r.Tier] = r
		}
		for _, r := range got.Simulated {
			rows["simulated "+r.Tier] = r
		}
		return rows
	}
	// The running node's log, over the admin API.
	live := replay("--from-cluster", url, "--key", node.DemoAdminToken)
	if out, err := exec.Command(bin, "sim", "replay", "--from-cluster", url, "--key", "guess").CombinedOutput(); err == nil || !strings.Contains(string(out), "permission_denied") {
		t.Fatalf("replay with a wrong admin token: %v\n%s", err, out)
	}
	dev.Process.Signal(syscall.SIGTERM)
	dev.Wait()
	rows := replay("--from", data)
	if live["recorded pro"] != rows["recorded pro"] {
		t.Fatalf("recorded through the API %+v, from the data dir %+v", live["recorded pro"], rows["recorded pro"])
	}
	rec, simd := rows["recorded pro"], rows["simulated pro"]
	t.Logf("pro: recorded %+v, simulated %+v", rec, simd)
	if rec.Admitted != 18 || simd.Admitted != 18 || rec.WaitP95 < 4 {
		t.Fatalf("recorded %+v, simulated %+v: want 18 admitted each, and waits of several seconds", rec, simd)
	}
	for _, q := range []struct {
		name      string
		rec, simd float64
	}{{"p50", rec.WaitP50, simd.WaitP50}, {"p95", rec.WaitP95, simd.WaitP95}} {
		if math.Abs(q.simd-q.rec) > math.Max(replayTolerance*q.rec, 0.5) {
			t.Errorf("wait %s: simulated %.2fs, recorded %.2fs: further apart than %.0f%% (or 0.5 s)", q.name, q.simd, q.rec, 100*replayTolerance)
		}
	}
	more := replay("--from", data, "--executors", "3")["simulated pro"] // the two recorded, and one more alike
	if more.WaitP95 >= simd.WaitP95 {
		t.Fatalf("with another executor: p95 %.2fs, as recorded %.2fs", more.WaitP95, simd.WaitP95)
	}
}
