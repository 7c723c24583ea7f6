package sim

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is what a run found. Times are seconds of virtual time; the JSON
// form (WriteJSON) is a pure function of the workload and seed.
type Report struct {
	Workload string `json:"workload"`
	Seed     uint64 `json:"seed"`
	Start    string `json:"start"`
	// Executors and GPUs at the start.
	Executors int `json:"executors"`
	GPUs      int `json:"gpus"`
	// When arrivals stopped and the run ended, and the measurement window:
	// from the warm-up to the end.
	StopSeconds   float64 `json:"stop_seconds"`
	EndSeconds    float64 `json:"end_seconds"`
	WarmupSeconds float64 `json:"warmup_seconds"`
	WindowSeconds float64 `json:"window_seconds"`

	Cluster Cluster `json:"cluster"`
	Tiers   []Group `json:"tiers"`
	Tenants []Group `json:"tenants"`
	Series  *Series `json:"series,omitempty"`
	// Stopped says why a plan's run stopped early (an objective certain
	// to be missed); empty for a full run.
	Stopped string `json:"stopped,omitempty"`
	Perf    Perf   `json:"-"` // wall-clock figures: never in the JSON
}

// Cluster sums the run over every tenant.
type Cluster struct {
	Group
	// Utilisation is busy GPU time over available GPU time in the window.
	Utilisation float64 `json:"utilisation"`
	// Reservations: sized workloads (issue 28).
	Reservations        *Reservations `json:"reservations,omitempty"`
	BusyGPUSeconds      float64       `json:"busy_gpu_seconds"`
	AvailableGPUSeconds float64       `json:"available_gpu_seconds"`
	Crashes             int           `json:"executor_crashes"`
	Failovers           int           `json:"leader_failovers"`
	Events              int64         `json:"events"`
	Commands            int64         `json:"commands"`
}

// Group is one tenant's, one tier's or the cluster's figures, for jobs
// submitted after the warm-up. A rejected submission is one the client
// finally gave up on; Retried counts refusals it came back after.
type Group struct {
	Name   string `json:"name,omitempty"`
	Tier   string `json:"tier,omitempty"`
	Weight int32  `json:"weight,omitempty"`

	Submitted  int64            `json:"submitted"`
	Admitted   int64            `json:"admitted"`
	Delayed    int64            `json:"delayed"`
	Degraded   int64            `json:"degraded"`
	Rejected   int64            `json:"rejected"`
	RejectedBy map[string]int64 `json:"rejected_by,omitempty"`
	Retried    int64            `json:"retried,omitempty"`
	// CHALLENGE rules: submissions refused with a challenge; answers that
	// were admitted; admitted submissions a shadow challenge rule would
	// have challenged.
	Challenged       int64 `json:"challenged,omitempty"`
	Solved           int64 `json:"solved,omitempty"`
	ShadowChallenged int64 `json:"shadow_challenged,omitempty"`
	// ETA is how the ETAs given at submission fared (tiers and cluster).
	ETA *ETAHonesty `json:"eta,omitempty"`

	Succeeded    int64 `json:"succeeded"`
	DeadLettered int64 `json:"dead_lettered,omitempty"`
	Failed       int64 `json:"failed,omitempty"`
	Expired      int64 `json:"expired,omitempty"`
	Unfinished   int64 `json:"unfinished,omitempty"`

	// Wait is from submission to the start of the first attempt;
	// turnaround from submission to success.
	Wait       Dist `json:"wait"`
	Turnaround Dist `json:"turnaround"`
	// MeanQueued is the time-average number of queued jobs (tiers and the
	// cluster; delayed jobs count as queued).
	MeanQueued float64 `json:"mean_queued,omitempty"`

	// GPU time received in the window, against the weighted max-min fair
	// share of the GPU time delivered (strict tiers first, then tiers by
	// weight, then tenants by weight, no one given more than its jobs
	// need), and their ratio.
	GPUSeconds          float64 `json:"gpu_seconds"`
	FairShareGPUSeconds float64 `json:"fair_share_gpu_seconds"`
	ShareRatio          float64 `json:"share_ratio,omitempty"`
	// Jain is Jain's fairness index of the share ratios of the group's
	// tenants: 1 when each got exactly its fair share (tiers and the
	// cluster).
	Jain float64 `json:"jain,omitempty"`
	// WaitQuantiles are the 0th to 100th percentiles of wait (tiers and the
	// cluster), for CDF plots.
	WaitQuantiles []float64 `json:"wait_quantiles,omitempty"`
}

// Dist summarises durations in seconds.
type Dist struct {
	N    int64   `json:"n"`
	Mean float64 `json:"mean"`
	P50  float64 `json:"p50"`
	P95  float64 `json:"p95"`
	P99  float64 `json:"p99"`
	Max  float64 `json:"max"`
}

// Series is the time series: one point per sample interval.
type Series struct {
	Tiers []string  `json:"tiers"`
	T     []float64 `json:"t"`
	// Queued jobs by tier at T; refusals and admissions by tier in the
	// interval ending at T.
	Queued   [][]int64 `json:"queued"`
	Rejected [][]int64 `json:"rejected"`
	Admitted [][]int64 `json:"admitted"`
	Running  []int64   `json:"running"`
	UpGPUs   []int64   `json:"up_gpus"`
	// Utilisation over the interval ending at T.
	Utilisation []float64 `json:"utilisation"`
}

// Perf is how fast the run went (wall clock).
type Perf struct {
	Events      int64
	Commands    int64
	WallSeconds float64
}

func secs(ns int64) float64 { return round6(float64(ns) / 1e9) }

func round6(x float64) float64 { return math.Round(x*1e6) / 1e6 }

// dist summarises sorted nanosecond durations.
func dist(sorted []int64) Dist {
	n := len(sorted)
	if n == 0 {
		return Dist{}
	}
	var sum float64
	for _, v := range sorted {
		sum += float64(v)
	}
	return Dist{N: int64(n), Mean: round6(sum / float64(n) / 1e9), P50: secs(quantile(sorted, 0.50)),
		P95: secs(quantile(sorted, 0.95)), P99: secs(quantile(sorted, 0.99)), Max: secs(sorted[n-1])}
}

// quantile is the nearest-rank quantile of sorted values.
func quantile(sorted []int64, p float64) int64 {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	k := int(math.Ceil(p*float64(n))) - 1
	return sorted[min(max(k, 0), n-1)]
}

func percentiles(sorted []int64) []float64 {
	if len(sorted) == 0 {
		return nil
	}
	out := make([]float64, 101)
	for i := range out {
		out[i] = secs(quantile(sorted, float64(i)/100))
	}
	out[0] = secs(sorted[0])
	return out
}

func (g *Group) add(o *Group) {
	g.Submitted += o.Submitted
	g.Admitted += o.Admitted
	g.Delayed += o.Delayed
	g.Degraded += o.Degraded
	g.Rejected += o.Rejected
	g.Retried += o.Retried
	g.Challenged += o.Challenged
	g.Solved += o.Solved
	g.ShadowChallenged += o.ShadowChallenged
	for k, v := range o.RejectedBy {
		if g.RejectedBy == nil {
			g.RejectedBy = map[string]int64{}
		}
		g.RejectedBy[k] += v
	}
	g.Succeeded += o.Succeeded
	g.DeadLettered += o.DeadLettered
	g.Failed += o.Failed
	g.Expired += o.Expired
	g.Unfinished += o.Unfinished
	g.GPUSeconds += o.GPUSeconds
	g.FairShareGPUSeconds += o.FairShareGPUSeconds
}

// report finishes the accounts and builds the report.
func (e *engine) report() *Report {
	s := &e.stats
	s.advance(e)
	end := e.now
	// Runs still going count up to the end; jobs still queued or running
	// are unfinished.
	for xi := range int32(len(e.execs)) {
		for _, r := range e.fleet.Runs(xi) {
			j := &e.jobs[r.Ref]
			s.ran(e, j, j.runStart, end)
		}
	}
	// Clients still waiting to retry a refusal gave up when the run ended.
	var retrying []event
	for _, ev := range e.ev.h {
		if ev.kind == evResubmit {
			retrying = append(retrying, ev)
		}
	}
	slices.SortFunc(retrying, func(a, b event) int { return cmp.Compare(a.seq, b.seq) })
	for _, ev := range retrying {
		p := e.pending[ev.a]
		e.clients.rejected(p, p.rule)
	}
	for _, pi := range e.held {
		p := e.pending[pi]
		e.clients.rejected(p, "no leader")
	}
	ids := make([]uint64, 0, len(e.jobIx))
	for id := range e.jobIx {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		j := &e.jobs[e.jobIx[id]]
		if j.measured {
			e.tenants[j.tenant].tally.other++
		}
		if e.opt.OnJob != nil {
			e.opt.OnJob(e.clients.outcome(j, -1, "UNFINISHED"))
		}
	}
	if !e.opt.NoSeries {
		if n := len(s.series.T); n == 0 || s.series.T[n-1] < secs(end-e.base) {
			s.sample(e)
		}
	}
	r := &Report{Workload: e.w.Name, Seed: e.seed, Start: time.Unix(0, e.base).UTC().Format(time.RFC3339),
		Executors: len(e.execs), StopSeconds: secs(e.stopAt - e.base), EndSeconds: secs(end - e.base),
		WarmupSeconds: secs(e.warmAt - e.base), Stopped: e.cut}
	for i := range e.execs {
		r.GPUs += int(e.execs[i].gpus)
	}
	window := max(end-e.warmAt, 0)
	r.WindowSeconds = secs(window)
	pol := e.r.Policy()
	tierW := map[string]int32{}
	strict := map[string]bool{}
	for _, t := range pol.GetTiers() {
		tierW[t.Name] = max(t.Weight, 1)
		strict[t.Name] = t.Strict
	}
	tenW := map[string]int32{}
	for _, t := range pol.GetTenants() {
		tenW[t.Name] = max(t.Weight, 1)
	}
	// Tenants.
	tierWaits := make([][]int64, len(e.tiers))
	tierTurn := make([][]int64, len(e.tiers))
	var allWaits, allTurn []int64
	for i := range e.tenants {
		t := &e.tenants[i]
		ta := &t.tally
		sortNs(ta.waits)
		sortNs(ta.turnarounds)
		g := Group{Name: t.name, Tier: t.tier, Weight: tenW[t.name], Submitted: ta.submitted, Admitted: ta.admitted,
			Delayed: ta.delayed, Degraded: ta.degraded, Rejected: ta.rejected, Retried: ta.retried,
			Challenged: ta.challenged, Solved: ta.solved, ShadowChallenged: ta.shadowChallenged,
			Succeeded: ta.succeeded, DeadLettered: ta.deadLettered, Failed: ta.failed, Expired: ta.expired,
			Unfinished: ta.other, Wait: dist(ta.waits), Turnaround: dist(ta.turnarounds),
			GPUSeconds: round6(ta.gpuNs / 1e9)}
		if len(ta.rejectedBy) > 0 {
			g.RejectedBy = map[string]int64{}
			for k, v := range ta.rejectedBy {
				g.RejectedBy[k] = v
			}
		}
		r.Tenants = append(r.Tenants, g)
		tierWaits[t.tierIdx] = append(tierWaits[t.tierIdx], ta.waits...)
		tierTurn[t.tierIdx] = append(tierTurn[t.tierIdx], ta.turnarounds...)
		allWaits = append(allWaits, ta.waits...)
		allTurn = append(allTurn, ta.turnarounds...)
	}
	e.fairShares(r, tierW, tenW, strict)
	// Tiers and the cluster.
	for ti, name := range e.tiers {
		g := Group{Name: name, Weight: tierW[name]}
		var ratios []float64
		for i := range r.Tenants {
			if e.tenants[i].tierIdx == int32(ti) {
				g.add(&r.Tenants[i])
				if r.Tenants[i].FairShareGPUSeconds > 0 {
					ratios = append(ratios, r.Tenants[i].ShareRatio)
				}
			}
		}
		sortNs(tierWaits[ti])
		sortNs(tierTurn[ti])
		g.Wait, g.Turnaround = dist(tierWaits[ti]), dist(tierTurn[ti])
		g.WaitQuantiles = percentiles(tierWaits[ti])
		if window > 0 {
			g.MeanQueued = round6(s.queuedArea[ti] / float64(window))
		}
		g.Jain = jain(ratios)
		g.ETA = e.etaTiers[ti].honesty()
		if e.sized && g.ETA != nil {
			g.ETA.Baseline = e.etaBaseTiers[ti].honesty()
		}
		g.GPUSeconds, g.FairShareGPUSeconds = round6(g.GPUSeconds), round6(g.FairShareGPUSeconds)
		if g.FairShareGPUSeconds > 0 {
			g.ShareRatio = round6(g.GPUSeconds / g.FairShareGPUSeconds)
		}
		if g.Submitted == 0 && g.GPUSeconds == 0 {
			continue // a tier of the policy that this workload does not use
		}
		r.Tiers = append(r.Tiers, g)
	}
	c := &r.Cluster
	var ratios []float64
	var qa float64
	for i := range r.Tenants {
		c.add(&r.Tenants[i])
		if r.Tenants[i].FairShareGPUSeconds > 0 {
			ratios = append(ratios, r.Tenants[i].ShareRatio)
		}
	}
	for _, a := range s.queuedArea {
		qa += a
	}
	c.Name = "cluster"
	sortNs(allWaits)
	sortNs(allTurn)
	c.Wait, c.Turnaround = dist(allWaits), dist(allTurn)
	c.WaitQuantiles = percentiles(allWaits)
	c.Jain = jain(ratios)
	c.ETA = e.etaAll.honesty()
	if rs := e.reservations; rs.Jobs > 0 {
		rs.Over50, rs.Under33 = round6(float64(rs.over)/float64(rs.Jobs)), round6(float64(rs.under)/float64(rs.Jobs))
		c.Reservations = &rs
	}
	if e.sized && c.ETA != nil {
		c.ETA.Baseline = e.etaBaseAll.honesty()
	}
	c.GPUSeconds, c.FairShareGPUSeconds = round6(c.GPUSeconds), round6(c.FairShareGPUSeconds)
	if window > 0 {
		c.MeanQueued = round6(qa / float64(window))
	}
	c.BusyGPUSeconds = round6(s.busyArea / 1e9)
	c.AvailableGPUSeconds = round6(s.upArea / 1e9)
	if s.upArea > 0 {
		c.Utilisation = round6(s.busyArea / s.upArea)
	}
	c.Crashes, c.Failovers = s.crashes, s.failovers
	c.Events, c.Commands = e.events, e.commands
	if !e.opt.NoSeries {
		ser := s.series
		r.Series = &ser
	}
	return r
}

// fairShares computes each tenant's weighted max-min fair share of the GPU
// time delivered in the window: strict tiers take what they need first,
// the rest is water-filled among tiers by weight (a tier needs what its
// tenants need), then within each tier among its tenants by weight.
func (e *engine) fairShares(r *Report, tierW, tenW map[string]int32, strict map[string]bool) {
	total := 0.0
	for i := range r.Tenants {
		total += e.tenants[i].tally.gpuNs
	}
	need := make([]float64, len(e.tiers))
	for i := range e.tenants {
		need[e.tenants[i].tierIdx] += e.tenants[i].tally.demandNs
	}
	alloc := make([]float64, len(e.tiers))
	left := total
	for ti, name := range e.tiers {
		if strict[name] {
			alloc[ti] = min(need[ti], left)
			left -= alloc[ti]
		}
	}
	var idx []int
	var w, d []float64
	for ti, name := range e.tiers {
		if !strict[name] {
			idx = append(idx, ti)
			w = append(w, float64(tierW[name]))
			d = append(d, need[ti])
		}
	}
	for k, a := range waterFill(left, w, d) {
		alloc[idx[k]] = a
	}
	for ti := range e.tiers {
		var members []int
		w, d = w[:0], d[:0]
		for i := range e.tenants {
			if e.tenants[i].tierIdx == int32(ti) {
				members = append(members, i)
				w = append(w, float64(tenW[e.tenants[i].name]))
				d = append(d, e.tenants[i].tally.demandNs)
			}
		}
		for k, a := range waterFill(alloc[ti], w, d) {
			g := &r.Tenants[members[k]]
			g.FairShareGPUSeconds = round6(a / 1e9)
			if a > 0 {
				g.ShareRatio = round6(e.tenants[members[k]].tally.gpuNs / a)
			}
		}
	}
}

// waterFill splits capacity among claimants by weight, none getting more
// than its demand: the weighted max-min fair allocation.
func waterFill(capacity float64, weights, demands []float64) []float64 {
	n := len(weights)
	out := make([]float64, n)
	order := make([]int, n)
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool {
		return demands[order[a]]/weights[order[a]] < demands[order[b]]/weights[order[b]]
	})
	wsum := 0.0
	for _, x := range weights {
		wsum += x
	}
	left := capacity
	for k, i := range order {
		if wsum <= 0 || left <= 0 {
			break
		}
		level := left / wsum
		if demands[i] <= level*weights[i] {
			out[i] = demands[i]
			left -= demands[i]
			wsum -= weights[i]
			continue
		}
		for _, j := range order[k:] {
			out[j] = level * weights[j]
		}
		break
	}
	return out
}

// jain is Jain's fairness index (Σx)²/(n·Σx²): 1 when all are equal, 1/n
// when one has everything. 0 for no values.
func jain(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	var s, s2 float64
	for _, x := range xs {
		s += x
		s2 += x * x
	}
	if s2 == 0 {
		return 0
	}
	return round6(s * s / (float64(len(xs)) * s2))
}

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteCSV writes the time series: one row per sample.
func (r *Report) WriteCSV(w io.Writer) error {
	s := r.Series
	if s == nil {
		return fmt.Errorf("sim: the report has no time series")
	}
	var b strings.Builder
	b.WriteString("t_seconds,utilisation,running,up_gpus")
	for _, t := range s.Tiers {
		fmt.Fprintf(&b, ",queued_%s,admitted_%s,rejected_%s", t, t, t)
	}
	b.WriteString("\n")
	for i, t := range s.T {
		fmt.Fprintf(&b, "%g,%g,%d,%d", t, s.Utilisation[i], s.Running[i], s.UpGPUs[i])
		for k := range s.Tiers {
			fmt.Fprintf(&b, ",%d,%d,%d", s.Queued[k][i], s.Admitted[k][i], s.Rejected[k][i])
		}
		b.WriteString("\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// maxTableTenants is how many tenants the table lists one by one.
const maxTableTenants = 30

// WriteTable writes the report for a terminal.
func (r *Report) WriteTable(w io.Writer) error {
	fmt.Fprintf(w, "workload %s, seed %d: %d executors (%d GPUs); arrivals stopped at %s, run ended at %s, measured from %s\n",
		r.Workload, r.Seed, r.Executors, r.GPUs, fmtSecs(r.StopSeconds), fmtSecs(r.EndSeconds), fmtSecs(r.WarmupSeconds))
	c := r.Cluster
	fmt.Fprintf(w, "utilisation %.1f%%, mean queued %.1f, Jain's index %.3f, %d executor crashes, %d leader failovers\n\n",
		100*c.Utilisation, c.MeanQueued, c.Jain, c.Crashes, c.Failovers)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "\tsubmitted\tadmitted\tdelayed\tdegraded\trejected\tsucceeded\texpired\tdead\tunfinished\twait p50\tp95\tp99\tturnaround p95\tGPU-s\tfair share\tratio\t")
	row := func(label string, g *Group) {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t%s\t%s\t%s\t%.0f\t%.0f\t%s\t\n", label,
			g.Submitted, g.Admitted, g.Delayed, g.Degraded, g.Rejected, g.Succeeded, g.Expired, g.DeadLettered+g.Failed,
			g.Unfinished, fmtSecs(g.Wait.P50), fmtSecs(g.Wait.P95), fmtSecs(g.Wait.P99), fmtSecs(g.Turnaround.P95),
			g.GPUSeconds, g.FairShareGPUSeconds, fmtRatio(g.ShareRatio))
	}
	for i := range r.Tiers {
		row("tier "+r.Tiers[i].Name, &r.Tiers[i])
	}
	row("all", &c.Group)
	if len(r.Tenants) <= maxTableTenants {
		fmt.Fprintln(tw, "\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t")
		for i := range r.Tenants {
			row(r.Tenants[i].Name+" ("+r.Tenants[i].Tier+")", &r.Tenants[i])
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(r.Tenants) > maxTableTenants {
		fmt.Fprintf(w, "(%d tenants: see -o json for each)\n", len(r.Tenants))
	}
	// Rejections by rule, cluster-wide.
	if len(c.RejectedBy) > 0 {
		keys := make([]string, 0, len(c.RejectedBy))
		for k := range c.RejectedBy {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		fmt.Fprint(w, "\nrejected by rule:")
		for _, k := range keys {
			fmt.Fprintf(w, " %s %d;", k, c.RejectedBy[k])
		}
		fmt.Fprintln(w)
	}
	if rs := c.Reservations; rs != nil {
		fmt.Fprintf(w, "\nreservations at admission against the settled cost (%d succeeded jobs): %.1f%% reserved over 1.5× their cost, %.1f%% under 2/3 of it\n",
			rs.Jobs, 100*rs.Over50, 100*rs.Under33)
	}
	// ETA honesty, cluster and tiers.
	if c.ETA != nil {
		fmt.Fprintf(w, "\nETAs at submission (p10–p90 band; error relative to the real wait, at least 1 s):\n")
		var eta func(label string, h *ETAHonesty)
		eta = func(label string, h *ETAHonesty) {
			if h != nil {
				fmt.Fprintf(w, "  %s: error p50 %.0f%%, p90 %.0f%% (%d jobs); told to wait: %d, %.1f%% started inside the band, error p50 %.0f%%, p90 %.0f%%; told at once: %d, %.1f%% started within 1 s\n",
					label, 100*h.ErrP50, 100*h.ErrP90, h.Jobs, h.Waited, 100*h.InBand, 100*h.WaitedErrP50, 100*h.WaitedErrP90, h.AtOnce, 100*h.AtOnceStarted)
				eta("  baseline, by the models' average run times", h.Baseline)
			}
		}
		eta("all", c.ETA)
		for i := range r.Tiers {
			eta("tier "+r.Tiers[i].Name, r.Tiers[i].ETA)
		}
	}
	// Challenge rules, by tenant (as many as the table lists).
	if c.Challenged > 0 || c.ShadowChallenged > 0 {
		fmt.Fprintf(w, "\nchallenged %d, solved %d (admitted answers), %d admitted that a shadow challenge rule would have challenged\n",
			c.Challenged, c.Solved, c.ShadowChallenged)
		for i := range r.Tenants {
			if g := &r.Tenants[i]; i < maxTableTenants && (g.Challenged > 0 || g.ShadowChallenged > 0) {
				fmt.Fprintf(w, "  %s: challenged %d, solved %d, succeeded %d of %d submitted; shadow %d\n",
					g.Name, g.Challenged, g.Solved, g.Succeeded, g.Submitted, g.ShadowChallenged)
			}
		}
	}
	return nil
}

func fmtRatio(x float64) string {
	if x == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", x)
}

// fmtSecs prints seconds the short way: 850ms, 12.3s, 4m05s, 2h10m.
func fmtSecs(s float64) string {
	switch {
	case s == 0:
		return "0"
	case s < 1:
		return fmt.Sprintf("%.0fms", s*1000)
	case s < 60:
		return fmt.Sprintf("%.1fs", s)
	case s < 3600:
		return fmt.Sprintf("%dm%02ds", int(s)/60, int(s)%60)
	}
	return fmt.Sprintf("%dh%02dm", int(s)/3600, (int(s)%3600)/60)
}
