package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/policy"
	"github.com/sluicehq/sluice/sim"
)

// runSim runs `sluice sim ARGS` in-process and returns stdout and the error.
func runSim(t *testing.T, args ...string) (string, error) {
	t.Helper()
	c := simCmd()
	var out, errb bytes.Buffer
	c.SetOut(&out)
	c.SetErr(&errb)
	c.SetArgs(args)
	c.SilenceUsage, c.SilenceErrors = true, true
	err := c.Execute()
	return out.String(), err
}

// TestShippedScenariosLoadWithTheServersPolicyLoader reads every scenario
// in sim/scenarios with policy.Parse, as `sluice sim` does, and runs
// its first 10 minutes.
func TestShippedScenariosLoadWithTheServersPolicyLoader(t *testing.T) {
	files, err := filepath.Glob("../../sim/scenarios/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, f := range files {
		if filepath.Base(f) == "policy.yaml" {
			if _, err := policy.Load(f); err != nil {
				t.Errorf("%s: %v", f, err)
			}
			continue
		}
		n++
		w, err := sim.Load(f)
		if err != nil {
			t.Errorf("%v", err)
			continue
		}
		succeeded := 0
		_, err = sim.Run(w, sim.Options{Duration: 10 * time.Minute, NoSeries: true, OnJob: func(o sim.JobOutcome) {
			if o.State == "SUCCEEDED" {
				succeeded++
			}
		}})
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if succeeded == 0 {
			t.Errorf("%s: no job succeeded in 10 minutes", f)
		}
	}
	if n < 6 {
		t.Errorf("%d scenarios; want steady, flash-crowd, tiers-quotas, outage, failover and diurnal-day", n)
	}
}

func TestSimRunWritesEveryFormAndRepeatsItself(t *testing.T) {
	dir := t.TempDir()
	csv, html := filepath.Join(dir, "s.csv"), filepath.Join(dir, "r.html")
	args := []string{"run", "--workload", "../../sim/scenarios/steady.yaml", "--duration", "15m", "--seed", "3", "-o", "json"}
	a, err := runSim(t, append(args, "--csv", csv, "--report", html)...)
	if err != nil {
		t.Fatal(err)
	}
	b, err := runSim(t, args...)
	if err != nil {
		t.Fatal(err)
	}
	if a != b {
		t.Error("two runs with --seed 3 printed different JSON")
	}
	var r sim.Report
	if err := json.Unmarshal([]byte(a), &r); err != nil {
		t.Fatal(err)
	}
	if r.Seed != 3 || r.Cluster.Submitted == 0 || len(r.Tiers) != 2 || r.Series == nil {
		t.Errorf("report: seed %d, %d submitted, %d tiers", r.Seed, r.Cluster.Submitted, len(r.Tiers))
	}
	for _, f := range []string{csv, html} {
		if fi, err := os.Stat(f); err != nil || fi.Size() < 1000 {
			t.Errorf("%s: %v", f, err)
		}
	}
	table, err := runSim(t, "run", "--workload", "../../sim/scenarios/failover.yaml", "--duration", "12m")
	if err != nil || !strings.Contains(table, "tier pro") {
		t.Errorf("table: %v\n%s", err, table)
	}
}

func TestSimPlanPrintsTheCurve(t *testing.T) {
	dir := t.TempDir()
	wl := filepath.Join(dir, "w.yaml")
	doc := `
name: mm
seed: 1
jobs: 3000
warmup: 1m
tenants: [{name: t, arrivals: {rate: 3.6}}]
models: [{name: m, service: {dist: exponential, mean: 1s}}]
executors: [{name: gpu, count: 2}]
`
	if err := os.WriteFile(wl, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := runSim(t, "plan", "--workload", wl, "--slo", "p95_wait<=3s", "--seeds", "2")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "gpu executors meet p95_wait<=3s for the cluster on all 2 seeds") || !strings.Contains(out, "utilisation") {
		t.Errorf("plan output:\n%s", out)
	}
}

func TestSimCommandsRefuseBadInput(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"run"}, "--workload: required"},
		{[]string{"run", "--workload", "../../sim/scenarios/steady.yaml", "-o", "xml"}, `-o: "xml" is not table or json`},
		{[]string{"run", "--workload", "nope.yaml"}, "no such file"},
		{[]string{"plan", "--workload", "../../sim/scenarios/steady.yaml", "--slo", "p95<=3s"}, `--slo: slo "p95<=3s": "p95" is not a metric`},
		{[]string{"plan", "--workload", "../../sim/scenarios/steady.yaml", "--slo", "p95_wait<=3s", "--seeds", "0"}, "--seeds: 0 is outside 1–100"},
		{[]string{"floor", "--workload", "../../sim/scenarios/steady.yaml", "--forks", "1"}, "--forks: 1 is outside 2–1000"},
		{[]string{"floor", "--workload", "../../sim/scenarios/steady.yaml", "--jobs", "0"}, "--jobs: 0 is outside 1–10000"},
		{[]string{"floor", "--workload", "../../sim/scenarios/steady.yaml", "--from", "2h", "--until", "1h"}, "until 1h0m0s is not after 2h0m0s"},
		{[]string{"floor", "--workload", "../../sim/scenarios/steady.yaml", "--from", "5h"}, "from 5h0m0s is not before the workload's duration 4h0m0s"},
	} {
		if _, err := runSim(t, c.args...); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("sluice sim %s: %v; want %q", strings.Join(c.args, " "), err, c.want)
		}
	}
}

// TestSimFloorPrintsTheLeastErrorBesideSluices runs `sluice sim floor` on
// a few jobs of the steady scenario, as its help says.
func TestSimFloorPrintsTheLeastErrorBesideSluices(t *testing.T) {
	out, err := runSim(t, "floor", "--workload", "../../sim/scenarios/steady.yaml", "--jobs", "6", "--forks", "3", "--until", "15m")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"workload steady, seed 1: 6 jobs given an ETA, 3 futures drawn", "no ETA less", "held out", "all but one", "Sluice's ETAs", "waits told within 40%"} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in:\n%s", want, out)
		}
	}
	out, err = runSim(t, "floor", "--workload", "../../sim/scenarios/steady.yaml", "--jobs", "2", "--forks", "2", "--until", "12m", "-o", "json")
	var fl sim.Floor
	if err != nil || json.Unmarshal([]byte(out), &fl) != nil || fl.Jobs != 2 || fl.Forks != 2 {
		t.Fatalf("-o json: %v\n%s", err, out)
	}
}

// TestFlashCrowdKeepsProWaitsShort runs the shipped flash-crowd scenario
// (free users at 20× for ten minutes) and checks that pro, weight 4, keeps
// short waits and each tier its fair share: the rush's overdue one-GPU
// free jobs must not take the executors by reservation (they did, once).
func TestFlashCrowdKeepsProWaitsShort(t *testing.T) {
	w, err := sim.Load("../../sim/scenarios/flash-crowd.yaml")
	if err != nil {
		t.Fatal(err)
	}
	r, err := sim.Run(w, sim.Options{NoSeries: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range r.Tiers {
		if g.Name == "pro" && g.Wait.P95 > 5 {
			t.Fatalf("pro's p95 wait in the flash crowd is %.1fs, want under 5s", g.Wait.P95)
		}
	}
}

// TestChallengeScenarioStopsBotsNotPeople runs sim/scenarios/bots-and-people:
// with the CHALLENGE rule enforced, the people (who answer) get nearly all
// their jobs done and the bots (who never answer) little beyond the rule's
// rate; in shadow mode nobody is challenged, and the report counts whom the
// rule would have challenged.
func TestChallengeScenarioStopsBotsNotPeople(t *testing.T) {
	run := func(shadow bool) (people, bots sim.Group) {
		doc, err := os.ReadFile("../../sim/scenarios/bots-and-people.yaml")
		if err != nil {
			t.Fatal(err)
		}
		if shadow {
			doc = bytes.Replace(doc, []byte("      token_bucket:"), []byte("      shadow: true\n      token_bucket:"), 1)
		}
		r := runScenario(t, doc)
		for _, g := range r.Tenants {
			sum := &bots
			if strings.HasPrefix(g.Name, "person-") {
				sum = &people
			}
			sum.Submitted += g.Submitted
			sum.Succeeded += g.Succeeded
			sum.Challenged += g.Challenged
			sum.Solved += g.Solved
			sum.ShadowChallenged += g.ShadowChallenged
		}
		return people, bots
	}
	people, bots := run(false)
	t.Logf("enforced: people %d/%d succeeded, %d challenged, %d solved; bots %d/%d, %d challenged",
		people.Succeeded, people.Submitted, people.Challenged, people.Solved, bots.Succeeded, bots.Submitted, bots.Challenged)
	if people.Solved == 0 || float64(people.Succeeded) < 0.97*float64(people.Submitted) {
		t.Errorf("people: %d of %d succeeded, %d answers admitted", people.Succeeded, people.Submitted, people.Solved)
	}
	if bots.Solved != 0 || bots.Challenged == 0 || float64(bots.Succeeded) > 0.05*float64(bots.Submitted) {
		t.Errorf("bots: %d of %d succeeded, %d challenged, %d solved", bots.Succeeded, bots.Submitted, bots.Challenged, bots.Solved)
	}
	people, bots = run(true)
	t.Logf("shadow: people %d would-be challenges; bots %d/%d succeeded, %d would-be challenges",
		people.ShadowChallenged, bots.Succeeded, bots.Submitted, bots.ShadowChallenged)
	if people.Challenged+bots.Challenged != 0 || bots.ShadowChallenged == 0 || bots.Succeeded < bots.Submitted/2 {
		t.Errorf("shadow: %d challenged, bots %d would-be, %d of %d succeeded", people.Challenged+bots.Challenged, bots.ShadowChallenged, bots.Succeeded, bots.Submitted)
	}
}

// TestSimCompareRunsPoliciesSideBySide: `sluice sim compare` runs the
// flash crowd under its policy and under one with a tighter in-flight cap,
// on the same seeds: the same submissions, fewer free jobs waiting, the
// HTML report written; bad input is refused naming the flag.
func TestSimCompareRunsPoliciesSideBySide(t *testing.T) {
	base, err := os.ReadFile("../../sim/scenarios/policy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	stricter := filepath.Join(dir, "stricter.yaml")
	if err := os.WriteFile(stricter, bytes.Replace(base, []byte("concurrency: {limit: 4}"), []byte("concurrency: {limit: 2}"), 1), 0o644); err != nil {
		t.Fatal(err)
	}
	report := filepath.Join(dir, "ab.html")
	out, err := runSim(t, "compare", "--workload", "../../sim/scenarios/flash-crowd.yaml", "--policy", "../../sim/scenarios/policy.yaml",
		"--policy", stricter, "--seeds", "2", "-o", "json", "--report", report)
	if err != nil {
		t.Fatal(err)
	}
	var cmp sim.Comparison
	if err := json.Unmarshal([]byte(out), &cmp); err != nil {
		t.Fatal(err)
	}
	if len(cmp.Strategies) != 2 || len(cmp.Seeds) != 2 {
		t.Fatalf("%d strategies, %d seeds", len(cmp.Strategies), len(cmp.Seeds))
	}
	a, b := cmp.Strategies[0].Tiers[0], cmp.Strategies[1].Tiers[0]
	if a.Name != "free" || a.Submitted != b.Submitted || b.WaitP95 >= a.WaitP95 {
		t.Fatalf("free under A %+v, under B %+v: want the same submissions and a shorter p95 wait under the tighter cap", a, b)
	}
	page, err := os.ReadFile(report)
	if err != nil || !bytes.Contains(page, []byte("Wait-time CDF, tier free")) || !bytes.Contains(page, []byte(stricter)) {
		t.Fatalf("the HTML report: %v", err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"compare", "--workload", "../../sim/scenarios/steady.yaml", "--policy", "../../sim/scenarios/policy.yaml"}, "--policy: 1 given; give two or more"},
		{[]string{"compare", "--workload", "../../sim/scenarios/steady.yaml", "--policy", "../../sim/scenarios/policy.yaml", "--policy", filepath.Join(dir, "none.yaml")}, "--policy " + filepath.Join(dir, "none.yaml")},
	} {
		if _, err := runSim(t, tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want %q", tc.args, err, tc.want)
		}
	}
}

// TestMixedSizesPredictsBetterThanTheAverage (issue 28): on jobs of mixed
// sizes, the ETAs by the jobs' own predicted run times err less than the
// baseline's by the models' averages, and their 80 % band holds 75–85 % of
// the starts of the jobs told to wait.
func TestMixedSizesPredictsBetterThanTheAverage(t *testing.T) {
	doc, err := os.ReadFile("../../sim/scenarios/mixed-sizes.yaml")
	if err != nil {
		t.Fatal(err)
	}
	e := runScenario(t, doc).Cluster.ETA
	if e == nil || e.Baseline == nil {
		t.Fatal("no ETA figures, or no baseline beside them")
	}
	t.Logf("by size: error p50 %.0f%%, p90 %.0f%%, %.1f%% inside; baseline: %.0f%%, %.0f%%, %.1f%%",
		100*e.ErrP50, 100*e.ErrP90, 100*e.InBand, 100*e.Baseline.ErrP50, 100*e.Baseline.ErrP90, 100*e.Baseline.InBand)
	if e.ErrP50 >= e.Baseline.ErrP50 || e.ErrP90 >= e.Baseline.ErrP90 {
		t.Errorf("by size p50/p90 %.3f/%.3f, not below the baseline's %.3f/%.3f", e.ErrP50, e.ErrP90, e.Baseline.ErrP50, e.Baseline.ErrP90)
	}
	if e.InBand < 0.75 || e.InBand > 0.85 {
		t.Errorf("the band holds %.1f%% of the starts, want 75–85%%", 100*e.InBand)
	}
}

// runScenario parses a workload with the server's policy loader and runs
// it, without the time series.
func runScenario(t *testing.T, doc []byte) *sim.Report {
	t.Helper()
	w, err := sim.Parse(doc, sim.ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	r, err := sim.Run(w, sim.Options{NoSeries: true})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestMixedSizesReservesCloserToTheCost (issue 28): reserving cost by the
// jobs' predicted sizes leaves far fewer reservations over 1.5× the cost
// settled than reserving the model's default duration.
func TestMixedSizesReservesCloserToTheCost(t *testing.T) {
	doc, err := os.ReadFile("../../sim/scenarios/mixed-sizes.yaml")
	if err != nil {
		t.Fatal(err)
	}
	bySize := runScenario(t, doc).Cluster.Reservations
	fixed := runScenario(t, bytes.ReplaceAll(doc, []byte("reserve: true"), []byte("reserve: false"))).Cluster.Reservations
	if bySize == nil || fixed == nil {
		t.Fatal("no reservation figures")
	}
	t.Logf("over 1.5x the cost: %.1f%% by size, %.1f%% fixed; under 2/3: %.1f%%, %.1f%%", 100*bySize.Over50, 100*fixed.Over50, 100*bySize.Under33, 100*fixed.Under33)
	if bySize.Over50 >= fixed.Over50/2 {
		t.Errorf("reserving by size leaves %.3f over 1.5x the cost, the fixed reservation %.3f", bySize.Over50, fixed.Over50)
	}
}
