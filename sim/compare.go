package sim

import (
	"fmt"
	"html"
	"io"
	"slices"
	"strings"
	"text/tabwriter"

	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// Comparing strategies (issue 22): one workload under several policies, on
// the same seeds, side by side. The arrivals, service times and failures
// are the same draws under every policy (each source has its own seeded
// stream), so what differs is what the policies do with them.

// Strategy is one policy to compare, by name (its file, say).
type Strategy struct {
	Name   string
	Policy *sluicev1.Policy
}

// WithPolicy is w under policy p instead of its own: the same tenants,
// models, executors and arrivals. p must know the workload's tiers and
// models as the workload's own policy would (Check's rules).
func (w *Workload) WithPolicy(p *sluicev1.Policy) (*Workload, error) {
	c := *w
	c.Policy, c.PolicyFile, c.PolicyDoc, c.effective = p, "", nil, nil
	if err := c.Check(); err != nil {
		return nil, err
	}
	return &c, nil
}

// Comparison is each strategy's figures: per tier and for the cluster,
// the median over the seeds of each figure.
type Comparison struct {
	Workload   string        `json:"workload"`
	Seeds      []uint64      `json:"seeds"`
	Strategies []StrategyRun `json:"strategies"`
}

// StrategyRun is one strategy's medians, and its reports (one per seed;
// not in the JSON).
type StrategyRun struct {
	Name    string       `json:"name"`
	Tiers   []CompareRow `json:"tiers"`
	Cluster CompareRow   `json:"cluster"`
	reports []*Report
}

// CompareRow is one tier's (or the cluster's) medians over the seeds.
type CompareRow struct {
	Name        string  `json:"name"`
	Submitted   float64 `json:"submitted"`
	Rejected    float64 `json:"rejected"` // share of submissions
	Succeeded   float64 `json:"succeeded"`
	WaitP50     float64 `json:"wait_p50"` // seconds
	WaitP95     float64 `json:"wait_p95"`
	WaitP99     float64 `json:"wait_p99"`
	GPUSeconds  float64 `json:"gpu_seconds"`
	ShareRatio  float64 `json:"share_ratio,omitempty"` // GPU time over the fair share
	Jain        float64 `json:"jain,omitempty"`
	Utilisation float64 `json:"utilisation,omitempty"` // the cluster's
}

// Compare runs w under each strategy on each seed (opt's Seed is set per
// run).
func Compare(w *Workload, strategies []Strategy, seeds []uint64, opt Options) (*Comparison, error) {
	if len(strategies) < 2 {
		return nil, fmt.Errorf("compare: %d policies; give two or more", len(strategies))
	}
	c := &Comparison{Workload: w.Name, Seeds: seeds}
	for _, s := range strategies {
		ws, err := w.WithPolicy(s.Policy)
		if err != nil {
			return nil, fmt.Errorf("policy %s: %w", s.Name, err)
		}
		run := StrategyRun{Name: s.Name}
		for _, seed := range seeds {
			o := opt
			o.Seed = &seed
			r, err := Run(ws, o)
			if err != nil {
				return nil, fmt.Errorf("policy %s, seed %d: %w", s.Name, seed, err)
			}
			run.reports = append(run.reports, r)
		}
		run.summarise()
		c.Strategies = append(c.Strategies, run)
	}
	return c, nil
}

// summarise takes each figure's median over the runs' reports.
func (s *StrategyRun) summarise() {
	row := func(name string, groups []*Group, util []float64) CompareRow {
		med := func(f func(g *Group) float64) float64 {
			xs := make([]float64, len(groups))
			for i, g := range groups {
				xs[i] = f(g)
			}
			return round6(median(xs))
		}
		r := CompareRow{Name: name,
			Submitted: med(func(g *Group) float64 { return float64(g.Submitted) }),
			Rejected: med(func(g *Group) float64 {
				if g.Submitted == 0 {
					return 0
				}
				return float64(g.Rejected) / float64(g.Submitted)
			}),
			Succeeded:  med(func(g *Group) float64 { return float64(g.Succeeded) }),
			WaitP50:    med(func(g *Group) float64 { return g.Wait.P50 }),
			WaitP95:    med(func(g *Group) float64 { return g.Wait.P95 }),
			WaitP99:    med(func(g *Group) float64 { return g.Wait.P99 }),
			GPUSeconds: med(func(g *Group) float64 { return g.GPUSeconds }),
			ShareRatio: med(func(g *Group) float64 { return g.ShareRatio }),
			Jain:       med(func(g *Group) float64 { return g.Jain }),
		}
		if len(util) > 0 {
			r.Utilisation = round6(median(util))
		}
		return r
	}
	var tiers []string
	for _, rep := range s.reports {
		for _, t := range rep.Tiers {
			if !slices.Contains(tiers, t.Name) {
				tiers = append(tiers, t.Name)
			}
		}
	}
	for _, name := range tiers {
		var gs []*Group
		for _, rep := range s.reports {
			g := &Group{Name: name}
			for i := range rep.Tiers {
				if rep.Tiers[i].Name == name {
					g = &rep.Tiers[i]
				}
			}
			gs = append(gs, g)
		}
		s.Tiers = append(s.Tiers, row(name, gs, nil))
	}
	var gs []*Group
	var util []float64
	for _, rep := range s.reports {
		gs = append(gs, &rep.Cluster.Group)
		util = append(util, rep.Cluster.Utilisation)
	}
	s.Cluster = row("all", gs, util)
}

// median is the middle of xs (the mean of the two middle ones when even).
func median(xs []float64) float64 {
	xs = slices.Clone(xs)
	slices.Sort(xs)
	n := len(xs)
	if n%2 == 1 {
		return xs[n/2]
	}
	return (xs[n/2-1] + xs[n/2]) / 2
}

// WriteTable writes the comparison for a terminal: a block per tier, a
// row per strategy.
func (c *Comparison) WriteTable(w io.Writer) error {
	fmt.Fprintf(w, "workload %s, %d seeds %v: medians over the seeds\n", c.Workload, len(c.Seeds), c.Seeds)
	for i, s := range c.Strategies {
		fmt.Fprintf(w, "  %s: %s\n", label(i), s.Name)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "\tpolicy\tsubmitted\trejected\tsucceeded\twait p50\tp95\tp99\tGPU-s\tfair-share ratio\tJain\tutilisation\t")
	for _, cells := range c.cells() {
		fmt.Fprintln(tw, strings.Join(cells, "\t")+"\t")
	}
	return tw.Flush()
}

// label is strategy i's letter in tables and charts: A, B, …
func label(i int) string {
	if i < 26 {
		return string(rune('A' + i))
	}
	return fmt.Sprint(i + 1)
}

func fmtJain(x float64) string {
	if x == 0 {
		return "-"
	}
	return fmt.Sprintf("%.3f", x)
}

// cells are the table's rows as text: the tier (on its first row), the
// strategy's letter and its figures.
func (c *Comparison) cells() [][]string {
	var out [][]string
	for _, block := range c.blocks() {
		for i, r := range block.rows {
			name := ""
			if i == 0 {
				name = block.name
			}
			util := "-"
			if r.Utilisation > 0 {
				util = fmt.Sprintf("%.1f%%", 100*r.Utilisation)
			}
			out = append(out, []string{name, label(i), fmt.Sprintf("%.0f", r.Submitted), fmt.Sprintf("%.1f%%", 100*r.Rejected),
				fmt.Sprintf("%.0f", r.Succeeded), fmtSecs(r.WaitP50), fmtSecs(r.WaitP95), fmtSecs(r.WaitP99),
				fmt.Sprintf("%.0f", r.GPUSeconds), fmtRatio(r.ShareRatio), fmtJain(r.Jain), util})
		}
	}
	return out
}

type compareBlock struct {
	name string
	rows []CompareRow // one per strategy
}

// blocks are the rows by tier (every strategy's tiers), then the cluster.
func (c *Comparison) blocks() []compareBlock {
	var names []string
	for _, s := range c.Strategies {
		for _, t := range s.Tiers {
			if !slices.Contains(names, t.Name) {
				names = append(names, t.Name)
			}
		}
	}
	var out []compareBlock
	for _, n := range names {
		b := compareBlock{name: "tier " + n}
		for _, s := range c.Strategies {
			r := CompareRow{Name: n}
			for _, t := range s.Tiers {
				if t.Name == n {
					r = t
				}
			}
			b.rows = append(b.rows, r)
		}
		out = append(out, b)
	}
	b := compareBlock{name: "all"}
	for _, s := range c.Strategies {
		b.rows = append(b.rows, s.Cluster)
	}
	return append(out, b)
}

// WriteHTML writes the comparison as one self-contained page: the table,
// and each tier's wait-time CDF under every strategy (first seed), and
// rejections over time.
func (c *Comparison) WriteHTML(w io.Writer) error {
	var b strings.Builder
	names := make([]string, len(c.Strategies))
	for i, s := range c.Strategies {
		names[i] = s.Name
	}
	title := "Sluice: " + c.Workload + " under " + strings.Join(names, " vs ")
	var keys string
	for i, n := range names {
		keys += "<li><b>" + label(i) + "</b>: " + html.EscapeString(n) + "</li>"
	}
	pageHead(&b, title, 2)
	fmt.Fprintf(&b, `<p>The same arrivals, service times and failures under each policy, on %d seeds (%v); each figure is the median over the seeds.</p>
<ul>%s</ul>
<table><tr><th></th><th>policy</th><th>submitted</th><th>rejected</th><th>succeeded</th><th>wait p50</th><th>p95</th><th>p99</th><th>GPU-s</th><th>fair-share ratio</th><th>Jain</th><th>utilisation</th></tr>
`, len(c.Seeds), c.Seeds, keys)
	for _, cells := range c.cells() {
		b.WriteString("<tr>")
		for _, cell := range cells {
			b.WriteString("<td>" + html.EscapeString(cell) + "</td>")
		}
		b.WriteString("</tr>\n")
	}
	b.WriteString("</table>\n<div class=\"charts\">\n")
	// One CDF per tier, a line per strategy.
	for _, block := range c.blocks() {
		if block.name == "all" {
			continue
		}
		tier := strings.TrimPrefix(block.name, "tier ")
		var lines []line
		for i, s := range c.Strategies {
			for _, l := range s.reports[0].waitCDF() {
				if l.name == tier {
					l.name = label(i)
					lines = append(lines, l)
				}
			}
		}
		b.WriteString(chart("Wait-time CDF, tier "+tier+" (seed "+fmt.Sprint(c.Seeds[0])+")", "wait (s)", "share of jobs", nil, lines, true))
	}
	var rejs []line
	var ts []float64
	unit := "time"
	for si, s := range c.Strategies {
		if sr := s.reports[0].Series; sr != nil && len(sr.T) > 1 {
			var sum []float64
			for _, tierRej := range sr.Rejected {
				for i, v := range tierRej {
					if i >= len(sum) {
						sum = append(sum, 0)
					}
					sum[i] += float64(v)
				}
			}
			if ts == nil {
				ts, unit = timeAxis(sr.T)
			}
			rejs = append(rejs, line{name: label(si), y: sum})
		}
	}
	if len(rejs) > 0 {
		b.WriteString(chart("Rejections per interval, every tier (seed "+fmt.Sprint(c.Seeds[0])+")", unit, "refused submissions", ts, rejs, false))
	}
	b.WriteString("</div>\n</body></html>\n")
	_, err := io.WriteString(w, b.String())
	return err
}
