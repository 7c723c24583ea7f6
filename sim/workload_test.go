package sim

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const goodWorkload = `
name: two-tiers
seed: 9
duration: 30m
warmup: 1m
tenants:
  - name: free
    count: 3
    tier: free
    model: sdxl
    arrivals: {rate: 30/m, bursts: [{at: 10m, for: 2m, factor: 5}]}
  - name: acme
    tier: pro
    mix: [{model: sdxl, share: 1}, {model: llama, share: 2}]
    arrivals: {rate: 1, diurnal: {peak: 2, trough: 0.5, peak_at: 14h}, on_off: {on_for: 5m, off_for: 10m}}
models:
  - {name: sdxl, service: {dist: lognormal, mean: 3s, stddev: 1s}, gpu_memory_mb: 16384, cold_start: 15s}
  - {name: llama, service: 800ms}
executors:
  - {name: a100, count: 3, gpus: 2, gpu_memory_mb: 81920, warm: [sdxl]}
failures:
  crashes: {mtbf: 2h, repair: 5m}
  outages: [{at: 20m, executors: "33%", for: 5m}]
  failovers: [{at: 15m, pause: 5s}]
policy:
  tiers: [{name: free, weight: 1}, {name: pro, weight: 4}]
  rules:
    - name: free-rate
      match: {tier: free}
      token_bucket: {count: 20, per: 60s, burst: 5}
`

func TestParseReadsEveryField(t *testing.T) {
	w, err := Parse([]byte(goodWorkload), ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if w.Name != "two-tiers" || w.Seed != 9 || w.Duration.D() != 30*time.Minute || len(w.TenantNames()) != 4 {
		t.Fatalf("parsed %+v", w)
	}
	a := w.Tenants[0].Arrivals
	if a.Rate != 0.5 || a.Bursts[0].Factor != 5 || a.Bursts[0].At.D() != 10*time.Minute {
		t.Errorf("arrivals %+v", a)
	}
	if s := w.Models[1].Service; s.Dist != "constant" || s.Mean.D() != 800*time.Millisecond {
		t.Errorf("a bare duration is a constant service: %+v", s)
	}
	if o := w.Failures.Outages[0].Executors; o.Share != 0.33 || o.of(3) != 1 {
		t.Errorf("outage share %+v", o)
	}
	p := w.EffectivePolicy()
	if len(p.Tenants) != 4 || len(p.Models) != 2 || p.Defaults.JobRetention.AsDuration() != Retention {
		t.Errorf("effective policy %v", p)
	}
	r, err := Run(w, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if r.Cluster.Submitted == 0 || r.Cluster.Failovers != 1 || len(r.Tiers) != 2 {
		t.Errorf("run %+v", r.Cluster)
	}
}

// TestBadWorkloadErrorsNameTheField: each broken workload is refused with
// an error that names the field.
func TestBadWorkloadErrorsNameTheField(t *testing.T) {
	cases := []struct{ edit, want string }{
		{"arrivals: {rate: 30/m,", "arrivals: {rate: 0,|workload: tenants[0].arrivals.rate: must be > 0"},
		{"arrivals: {rate: 30/m,", "arrivals: {rat: 3,|workload: tenants[0].arrivals.rat: unknown field"},
		{"rate: 1, diurnal", "rate: 1/w, diurnal|tenants[1].arrivals.rate"},
		{"peak: 2, trough: 0.5", "peak: 2, trough: 3|workload: tenants[1].arrivals.diurnal.trough: must be between 0 and peak"},
		{"dist: lognormal, mean: 3s, stddev: 1s", "dist: gamma, mean: 3s|workload: models[0].service.dist: \"gamma\" is not constant, exponential or lognormal"},
		{"dist: lognormal, mean: 3s, stddev: 1s", "dist: lognormal, mean: 3s|workload: models[0].service.stddev: a lognormal needs one > 0"},
		{"service: 800ms", "service: fast|\"fast\" is not a duration"},
		{"service: 800ms", "service: 800ms, sizes: {fields: {steps: {min: 9, max: 3}}, run: {per: 10ms, term: [steps]}}|workload: models[1].sizes.fields.steps: min 9 and max 3"},
		{"service: 800ms", "service: 800ms, sizes: {fields: {steps: {min: 1, max: 3}}, run: {per: 10ms, term: [frames]}}|workload: models[1].sizes.run.term[0]: \"frames\" is not one of its fields"},
		{"model: sdxl", "model: sd3|workload: tenants[0].model: \"sd3\" is not one of the workload's models"},
		{"{model: llama, share: 2}", "{model: llama, share: -2}|workload: tenants[1].mix[1].share: must be > 0"},
		{"count: 3, gpus: 2", "count: -3, gpus: 2|workload: executors[0].count: must not be negative"},
		{"warm: [sdxl]", "warm: [flux]|workload: executors[0].warm[0]: \"flux\" is not one of the workload's models"},
		{"executors: \"33%\"", "executors: \"133%\"|failures.outages[0].executors"},
		{"pause: 5s", "pause: 0s|workload: failures.failovers[0].pause: must be > 0"},
		{"mtbf: 2h", "mtbf: 0s|workload: failures.crashes.mtbf: must be > 0"},
		{"duration: 30m", "duration: 0s|workload: duration, jobs: give at least one"},
		{"tier: pro", "tier: gold|workload: tenants[1].tier: \"gold\" is neither one of the policy's tiers"},
		{"per: 60s", "per: 0s|workload: policy: rules[0].token_bucket.per: must be a positive duration"},
		{"{name: free, weight: 1}", "{name: free, weight: -1}|workload: policy: tiers[0].weight"},
	}
	for _, c := range cases {
		edit, want, _ := strings.Cut(c.want, "|")
		if !strings.Contains(goodWorkload, c.edit) {
			t.Fatalf("%q is not in the workload", c.edit)
		}
		doc := strings.Replace(goodWorkload, c.edit, edit, 1)
		_, err := Parse([]byte(doc), ParseOptions{})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s → %v; want an error containing %q", edit, err, want)
		}
	}
}

func TestTraceArrivals(t *testing.T) {
	dir := t.TempDir()
	trace := "# seconds, model\n0.5 llama\n1.0\n1.0 sdxl\n7.25\n"
	if err := os.WriteFile(filepath.Join(dir, "t.txt"), []byte(trace), 0o600); err != nil {
		t.Fatal(err)
	}
	doc := `
duration: 1m
tenants: [{name: a, model: sdxl, arrivals: {trace: t.txt}}]
models: [{name: sdxl, service: 1s}, {name: llama, service: 2s}]
executors: [{name: g, count: 1}]
`
	w, err := Parse([]byte(doc), ParseOptions{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	r, err := Run(w, Options{OnJob: func(o JobOutcome) {
		got = append(got, o.Model+"@"+time.Duration(o.Submitted).String()+"→"+time.Duration(o.Started).String())
	}})
	if err != nil {
		t.Fatal(err)
	}
	want := "llama@500ms→500ms sdxl@1s→2.5s sdxl@1s→3.5s sdxl@7.25s→7.25s"
	if strings.Join(got, " ") != want || r.Cluster.Succeeded != 4 {
		t.Errorf("trace run: %s; want %s", strings.Join(got, " "), want)
	}
	for _, bad := range []string{"x\n", "2\n1\n", "1 flux\n", ""} {
		if err := os.WriteFile(filepath.Join(dir, "t.txt"), []byte(bad), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := Parse([]byte(doc), ParseOptions{Dir: dir}); err == nil || !strings.Contains(err.Error(), "tenants[0].arrivals.trace") {
			t.Errorf("trace %q: %v", bad, err)
		}
	}
}

// TestArrivalRatesFollowTheirShape checks the arrival process against its
// integrated rate: a Poisson count over a span is within 4 standard
// deviations of the integral of the rate curve.
func TestArrivalRatesFollowTheirShape(t *testing.T) {
	day := Duration(24 * time.Hour)
	shapes := map[string]Arrivals{
		"poisson": {Rate: 2},
		"diurnal": {Rate: 2, Diurnal: &Diurnal{Peak: 3, Trough: 0.2, PeakAt: Duration(15 * time.Hour)}},
		"on-off":  {Rate: 2, OnOff: &OnOff{On: Duration(7 * time.Minute), Off: Duration(13 * time.Minute), OffFactor: 0.25}},
		"burst":   {Rate: 2, Bursts: []Burst{{At: Duration(3 * time.Hour), For: Duration(10 * time.Minute), Factor: 20}}},
	}
	for name, a := range shapes {
		g := arrivals{spec: &a, r: stream(1, name)}
		// Count arrivals per hour and integrate the rate numerically.
		var counts [24]float64
		for {
			at, _, ok := g.draw()
			if !ok || at >= int64(day) {
				break
			}
			counts[at/int64(time.Hour)]++
		}
		for h := range 24 {
			want := 0.0
			for s := int64(h) * 3600; s < int64(h+1)*3600; s++ {
				want += g.rate(s * int64(time.Second))
			}
			if d := counts[h] - want; d*d > 16*want {
				t.Errorf("%s: hour %d has %.0f arrivals; the rate integrates to %.0f", name, h, counts[h], want)
			}
		}
	}
}
