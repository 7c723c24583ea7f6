package sim

import (
	"errors"
	"fmt"
	"io"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"
)

// SLO is one service-level objective: a metric of a tier (or the cluster)
// and its bound, e.g. p95_wait<=30s or rejected<=1%.
type SLO struct {
	Metric string
	Op     string // "<=" or "<"
	Value  float64
	text   string
}

// sloMetrics are the metrics an SLO may bound: durations in seconds, or
// shares of submissions.
var sloMetrics = map[string]bool{
	"mean_wait": true, "p50_wait": true, "p95_wait": true, "p99_wait": true, "max_wait": true,
	"p95_turnaround": true, "p99_turnaround": true,
	"rejected": false, "expired": false, "unfinished": false,
}

// ParseSLOs reads comma-separated objectives: "p95_wait<=30s",
// "p99_wait<2m,rejected<=1%".
func ParseSLOs(s string) ([]SLO, error) {
	var out []SLO
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		op := "<="
		i := strings.Index(part, op)
		if i < 0 {
			op = "<"
			i = strings.Index(part, op)
		}
		if i < 0 {
			return nil, fmt.Errorf("slo %q: want METRIC<=VALUE, e.g. p95_wait<=30s or rejected<=1%%", part)
		}
		m, v := strings.TrimSpace(part[:i]), strings.TrimSpace(part[i+len(op):])
		isTime, ok := sloMetrics[m]
		if !ok {
			names := make([]string, 0, len(sloMetrics))
			for k := range sloMetrics {
				names = append(names, k)
			}
			sort.Strings(names)
			return nil, fmt.Errorf("slo %q: %q is not a metric (%s)", part, m, strings.Join(names, ", "))
		}
		slo := SLO{Metric: m, Op: op, text: part}
		if isTime {
			d, err := time.ParseDuration(v)
			if err != nil || d < 0 {
				return nil, fmt.Errorf("slo %q: %q is not a duration such as 30s", part, v)
			}
			slo.Value = d.Seconds()
		} else {
			pct, isPct := strings.CutSuffix(v, "%")
			f, err := strconv.ParseFloat(pct, 64)
			if isPct {
				f /= 100
			}
			if err != nil || f < 0 || f > 1 {
				return nil, fmt.Errorf("slo %q: %q is not a share such as 1%% or 0.01", part, v)
			}
			slo.Value = f
		}
		out = append(out, slo)
	}
	if len(out) == 0 {
		return nil, errors.New("slo: none given")
	}
	return out, nil
}

func (s SLO) String() string { return s.text }

// sloMetric is the metric of an SLO's text.
func sloMetric(text string) string {
	m, _, _ := strings.Cut(text, "<")
	return strings.TrimSpace(m)
}

// of reads the SLO's metric from a group's figures.
func (s SLO) of(g *Group) float64 {
	share := func(n int64) float64 {
		if g.Submitted == 0 {
			return 0
		}
		return float64(n) / float64(g.Submitted)
	}
	switch s.Metric {
	case "mean_wait":
		return g.Wait.Mean
	case "p50_wait":
		return g.Wait.P50
	case "p95_wait":
		return g.Wait.P95
	case "p99_wait":
		return g.Wait.P99
	case "max_wait":
		return g.Wait.Max
	case "p95_turnaround":
		return g.Turnaround.P95
	case "p99_turnaround":
		return g.Turnaround.P99
	case "rejected":
		return share(g.Rejected)
	case "expired":
		return share(g.Expired)
	case "unfinished":
		return share(g.Unfinished)
	}
	return 0
}

func (s SLO) met(v float64) bool {
	if s.Op == "<" {
		return v < s.Value
	}
	return v <= s.Value
}

// PlanOptions says what a capacity plan searches.
type PlanOptions struct {
	SLOs []SLO
	// Tier whose figures the SLOs bound; empty: the whole cluster.
	Tier string
	// Group is the executor group whose count varies (default: the first).
	Group string
	// Seeds: the SLOs must hold on every one (default: the workload's seed
	// and the next two).
	Seeds []uint64
	// Min and Max bound the count searched (default 1 and 100000).
	Min, Max int
	// Parallel runs (default: GOMAXPROCS); also the batch of seeds after
	// which a count that missed is given up.
	Parallel int
	// Progress, when set, hears of each count as it is evaluated.
	Progress func(PlanPoint)
}

// PlanPoint is one executor count, over every seed.
type PlanPoint struct {
	Executors int  `json:"executors"`
	GPUs      int  `json:"gpus"`
	Met       bool `json:"met"`
	// Seeds run: all of them when met, up to the first batch that missed
	// otherwise.
	Seeds int `json:"seeds"`
	// Stopped: a run stopped as soon as an objective was certain to be
	// missed (its figures are then those of the run so far).
	Stopped string `json:"stopped,omitempty"`
	// Worst is each SLO metric's worst value over the seeds, in SLO order.
	Worst []float64 `json:"worst"`
	// Means over the seeds, of the planned tier (or the cluster).
	P95Wait     float64 `json:"p95_wait"`
	Rejected    float64 `json:"rejected"`
	Utilisation float64 `json:"utilisation"`
}

// Plan is a capacity plan's answer.
type Plan struct {
	Workload  string      `json:"workload"`
	Group     string      `json:"group"`
	Tier      string      `json:"tier,omitempty"`
	SLOs      []string    `json:"slos"`
	Seeds     []uint64    `json:"seeds"`
	Found     bool        `json:"found"`
	Executors int         `json:"executors"` // the smallest count that meets the SLOs
	Points    []PlanPoint `json:"points"`    // ascending by count
	Runs      int         `json:"runs"`
	Jobs      int64       `json:"jobs"` // simulated over all runs
}

// PlanCapacity finds the smallest count of the group's executors for which
// the SLOs hold on every seed: it doubles the count from the workload's
// until they hold (or halves it while they do), then bisects; the counts
// it ran are the curve. It assumes more executors never make the SLOs
// worse. A run stops as soon as an objective is certain to be missed.
func PlanCapacity(w *Workload, o PlanOptions) (*Plan, error) {
	if len(o.SLOs) == 0 {
		return nil, errors.New("plan: no SLO given")
	}
	if err := w.Check(); err != nil {
		return nil, err
	}
	gi := 0
	if o.Group != "" {
		gi = -1
		for i, g := range w.Executors {
			if g.Name == o.Group {
				gi = i
			}
		}
		if gi < 0 {
			return nil, fmt.Errorf("plan: executor group %q is not in the workload", o.Group)
		}
	}
	group := w.Executors[gi].Name
	if len(o.Seeds) == 0 {
		o.Seeds = []uint64{w.Seed, w.Seed + 1, w.Seed + 2}
	}
	if o.Min <= 0 {
		o.Min = 1
	}
	if o.Max <= 0 {
		o.Max = MaxExecutors
	}
	if o.Min > o.Max {
		return nil, fmt.Errorf("plan: min %d exceeds max %d", o.Min, o.Max)
	}
	if o.Parallel <= 0 {
		o.Parallel = runtime.GOMAXPROCS(0)
	}
	p := &Plan{Workload: w.Name, Group: group, Tier: o.Tier, Seeds: o.Seeds}
	for _, s := range o.SLOs {
		p.SLOs = append(p.SLOs, s.String())
	}
	points := map[int]PlanPoint{}
	eval := func(n int) (bool, error) {
		if pt, ok := points[n]; ok {
			return pt.Met, nil
		}
		pt, jobs, err := evalPoint(w, o, group, n)
		if err != nil {
			return false, err
		}
		p.Runs += pt.Seeds
		p.Jobs += jobs
		points[n] = pt
		if o.Progress != nil {
			o.Progress(pt)
		}
		return pt.Met, nil
	}
	n := min(max(w.Executors[gi].Count, o.Min), o.Max)
	met, err := eval(n)
	if err != nil {
		return nil, err
	}
	lo, hi := o.Min-1, -1 // lo fails (or is below the range), hi meets
	if met {
		hi = n
		for hi > o.Min {
			m := max(o.Min, hi/2)
			ok, err := eval(m)
			if err != nil {
				return nil, err
			}
			if !ok {
				lo = m
				break
			}
			hi = m
		}
	} else {
		lo = n
		for lo < o.Max {
			m := min(o.Max, lo*2)
			ok, err := eval(m)
			if err != nil {
				return nil, err
			}
			if ok {
				hi = m
				break
			}
			lo = m
		}
	}
	if hi >= 0 {
		for hi-lo > 1 {
			m := lo + (hi-lo)/2
			ok, err := eval(m)
			if err != nil {
				return nil, err
			}
			if ok {
				hi = m
			} else {
				lo = m
			}
		}
		p.Found, p.Executors = true, hi
	}
	for _, pt := range points {
		p.Points = append(p.Points, pt)
	}
	sort.Slice(p.Points, func(a, b int) bool { return p.Points[a].Executors < p.Points[b].Executors })
	return p, nil
}

// evalPoint runs the seeds at n executors, Parallel at a time, and stops
// at the first batch in which one misses: the SLOs must hold on every
// seed, so the rest cannot change the verdict (overloaded counts, the
// slowest to simulate, are the ones that miss).
func evalPoint(w *Workload, o PlanOptions, group string, n int) (PlanPoint, int64, error) {
	pt := PlanPoint{Executors: n, Met: true, Worst: make([]float64, len(o.SLOs))}
	var reports []*Report
	for next := 0; next < len(o.Seeds) && pt.Met; {
		batch := o.Seeds[next:min(len(o.Seeds), next+o.Parallel)]
		next += len(batch)
		rs := make([]*Report, len(batch))
		errs := make([]error, len(batch))
		var wg sync.WaitGroup
		for i, seed := range batch {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rs[i], errs[i] = Run(w, Options{Seed: &seed, Executors: n, Group: group, NoSeries: true,
					missSLOs: o.SLOs, missTier: o.Tier})
			}()
		}
		wg.Wait()
		for i, r := range rs {
			if errs[i] != nil {
				return pt, 0, errs[i]
			}
			g, err := planned(r, o.Tier)
			if err != nil {
				return pt, 0, err
			}
			for k, s := range o.SLOs {
				v := s.of(g)
				if len(reports) == 0 || v > pt.Worst[k] {
					pt.Worst[k] = v
				}
				pt.Met = pt.Met && s.met(v)
			}
			if r.Stopped != "" {
				pt.Met = false
				if pt.Stopped == "" {
					pt.Stopped = r.Stopped
				}
			}
			reports = append(reports, r)
		}
	}
	var jobs int64
	for _, r := range reports {
		g, _ := planned(r, o.Tier)
		k := float64(len(reports))
		pt.GPUs = r.GPUs
		pt.P95Wait += g.Wait.P95 / k
		if g.Submitted > 0 {
			pt.Rejected += float64(g.Rejected) / float64(g.Submitted) / k
		}
		pt.Utilisation += r.Cluster.Utilisation / k
		jobs += r.Cluster.Submitted
	}
	pt.Seeds = len(reports)
	pt.P95Wait, pt.Rejected, pt.Utilisation = round6(pt.P95Wait), round6(pt.Rejected), round6(pt.Utilisation)
	return pt, jobs, nil
}

// planned is the group a plan's SLOs are about: a tier, or the cluster.
func planned(r *Report, tier string) (*Group, error) {
	if tier == "" {
		return &r.Cluster.Group, nil
	}
	for k := range r.Tiers {
		if r.Tiers[k].Name == tier {
			return &r.Tiers[k], nil
		}
	}
	return nil, fmt.Errorf("plan: tier %q sends no jobs in this workload", tier)
}

// WriteTable prints the plan: the answer and the curve.
func (p *Plan) WriteTable(w io.Writer) error {
	scope := "the cluster"
	if p.Tier != "" {
		scope = "tier " + p.Tier
	}
	if p.Found {
		fmt.Fprintf(w, "%d %s executors meet %s for %s on all %d seeds\n\n", p.Executors, p.Group, strings.Join(p.SLOs, ", "), scope, len(p.Seeds))
	} else {
		fmt.Fprintf(w, "no count of %s executors up to the maximum meets %s for %s\n\n", p.Group, strings.Join(p.SLOs, ", "), scope)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, "executors\tGPUs\tseeds\tp95 wait\trejected\tutilisation\t")
	for _, s := range p.SLOs {
		fmt.Fprintf(tw, "worst %s\t", sloMetric(s))
	}
	fmt.Fprintln(tw, "meets\t")
	var notes []string
	for _, pt := range p.Points {
		fmt.Fprintf(tw, "%d\t%d\t%d\t%s\t%.2f%%\t%.1f%%\t", pt.Executors, pt.GPUs, pt.Seeds, fmtSecs(pt.P95Wait), 100*pt.Rejected, 100*pt.Utilisation)
		for k, s := range p.SLOs {
			if sloMetrics[sloMetric(s)] {
				fmt.Fprintf(tw, "%s\t", fmtSecs(pt.Worst[k]))
			} else {
				fmt.Fprintf(tw, "%.2f%%\t", 100*pt.Worst[k])
			}
		}
		mark := "no"
		if pt.Met {
			mark = "yes"
		}
		if pt.Stopped != "" {
			mark += " *"
			notes = append(notes, fmt.Sprintf("%d executors: stopped early, %s", pt.Executors, pt.Stopped))
		}
		fmt.Fprintf(tw, "%s\t\n", mark)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, n := range notes {
		fmt.Fprintf(w, "* %s\n", n)
	}
	fmt.Fprintf(w, "\n%d runs, %d jobs simulated\n", p.Runs, p.Jobs)
	return nil
}
