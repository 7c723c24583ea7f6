package sim

import (
	"fmt"
	"html"
	"io"
	"math"
	"sort"
	"strings"
)

// pageHead starts a self-contained report page titled title, whose tables'
// first left columns (the row labels) are left-aligned.
func pageHead(b *strings.Builder, title string, leftColumns int) {
	left := "th:first-child,td:first-child"
	if leftColumns > 1 {
		left += ",th:nth-child(2),td:nth-child(2)"
	}
	fmt.Fprintf(b, `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>%s</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:2em}
table{border-collapse:collapse;font-variant-numeric:tabular-nums}
th,td{padding:3px 8px;border-bottom:1px solid #ddd;text-align:right}%s{text-align:left}
.charts{display:grid;grid-template-columns:1fr 1fr;gap:1em}
svg{background:#fafafa;border:1px solid #eee}
svg text{font:11px system-ui,sans-serif;fill:#444}
.muted{color:#777}
</style></head><body>
<h1>%s</h1>
`, html.EscapeString(title), left, html.EscapeString(title))
}

// WriteHTML writes the report as one self-contained HTML page: the summary
// table and inline SVG charts of queue depth by tier, the wait-time CDF by
// tier, utilisation and rejections over time. No scripts, fonts or links.
func (r *Report) WriteHTML(w io.Writer) error {
	var b strings.Builder
	pageHead(&b, "Sluice simulation: "+r.Workload, 1)
	c := r.Cluster
	fmt.Fprintf(&b, `<p>Seed %d. %d executors, %d GPUs. Arrivals stopped at %s; the run ended at %s; measured from %s.
Utilisation <b>%.1f%%</b>, mean queued %.1f, Jain's fairness index %.3f, %d executor crashes, %d leader failovers.</p>
`, r.Seed, r.Executors, r.GPUs, fmtSecs(r.StopSeconds), fmtSecs(r.EndSeconds), fmtSecs(r.WarmupSeconds),
		100*c.Utilisation, c.MeanQueued, c.Jain, c.Crashes, c.Failovers)
	b.WriteString("<h2>By tier and tenant</h2>\n<table><tr><th></th><th>submitted</th><th>admitted</th><th>delayed</th><th>degraded</th><th>rejected</th><th>succeeded</th><th>expired</th><th>dead</th><th>unfinished</th><th>wait p50</th><th>p95</th><th>p99</th><th>turnaround p95</th><th>GPU-s</th><th>fair share</th><th>ratio</th></tr>\n")
	row := func(label string, g *Group) {
		fmt.Fprintf(&b, "<tr><td>%s</td><td>%d</td><td>%d</td><td>%d</td><td>%d</td><td>%d</td><td>%d</td><td>%d</td><td>%d</td><td>%d</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%.0f</td><td>%.0f</td><td>%s</td></tr>\n",
			html.EscapeString(label), g.Submitted, g.Admitted, g.Delayed, g.Degraded, g.Rejected, g.Succeeded, g.Expired,
			g.DeadLettered+g.Failed, g.Unfinished, fmtSecs(g.Wait.P50), fmtSecs(g.Wait.P95), fmtSecs(g.Wait.P99),
			fmtSecs(g.Turnaround.P95), g.GPUSeconds, g.FairShareGPUSeconds, fmtRatio(g.ShareRatio))
	}
	for i := range r.Tiers {
		row("tier "+r.Tiers[i].Name, &r.Tiers[i])
	}
	row("all", &c.Group)
	if len(r.Tenants) <= maxTableTenants {
		for i := range r.Tenants {
			row(r.Tenants[i].Name+" ("+r.Tenants[i].Tier+")", &r.Tenants[i])
		}
	}
	b.WriteString("</table>\n")
	if len(c.RejectedBy) > 0 {
		keys := make([]string, 0, len(c.RejectedBy))
		for k := range c.RejectedBy {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		b.WriteString("<p>Rejected by rule:")
		for _, k := range keys {
			fmt.Fprintf(&b, " %s <b>%d</b>;", html.EscapeString(k), c.RejectedBy[k])
		}
		b.WriteString("</p>\n")
	}
	if c.ETA != nil {
		b.WriteString("<h2>ETAs at submission</h2>\n<p class=\"muted\">The ETA and p10–p90 band each Submit's answer carried, against when the job really started; the error is relative to the real wait (at least 1 s). An honest 80% band holds about 80% of the starts.</p>\n<table><tr><th></th><th>jobs</th><th>error p50</th><th>error p90</th><th>told to wait</th><th>inside the band</th><th>their error p50</th><th>p90</th><th>told at once</th><th>started within 1 s</th></tr>\n")
		var eta func(label string, h *ETAHonesty)
		eta = func(label string, h *ETAHonesty) {
			if h != nil {
				fmt.Fprintf(&b, "<tr><td>%s</td><td>%d</td><td>%.0f%%</td><td>%.0f%%</td><td>%d</td><td>%.1f%%</td><td>%.0f%%</td><td>%.0f%%</td><td>%d</td><td>%.1f%%</td></tr>\n",
					html.EscapeString(label), h.Jobs, 100*h.ErrP50, 100*h.ErrP90, h.Waited, 100*h.InBand, 100*h.WaitedErrP50, 100*h.WaitedErrP90, h.AtOnce, 100*h.AtOnceStarted)
				eta(label+", baseline (the models' average run times)", h.Baseline)
			}
		}
		eta("all", c.ETA)
		for i := range r.Tiers {
			eta("tier "+r.Tiers[i].Name, r.Tiers[i].ETA)
		}
		b.WriteString("</table>\n")
	}
	b.WriteString(`<div class="charts">` + "\n")
	if s := r.Series; s != nil && len(s.T) > 1 {
		var qs, rs []line
		for i, t := range s.Tiers {
			qs = append(qs, line{name: t, y: ints(s.Queued[i])})
			rs = append(rs, line{name: t, y: ints(s.Rejected[i])})
		}
		ts, unit := timeAxis(s.T)
		b.WriteString(chart("Queue depth by tier", unit, "queued jobs", ts, qs, false))
		b.WriteString(chart("Wait-time CDF by tier", "wait (s)", "share of jobs", nil, r.waitCDF(), true))
		b.WriteString(chart("GPU utilisation", unit, "busy / available GPUs", ts, []line{{name: "utilisation", y: s.Utilisation}}, false))
		b.WriteString(chart("Rejections per interval", unit, "refused submissions", ts, rs, false))
	} else {
		b.WriteString(chart("Wait-time CDF by tier", "wait (s)", "share of jobs", nil, r.waitCDF(), true))
	}
	b.WriteString("</div>\n<p class=\"muted\">Made by <code>sluice sim run</code>. Times are virtual. The wait is from submission to the start of the first attempt.</p>\n</body></html>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// timeAxis scales seconds to minutes or hours for long runs.
func timeAxis(t []float64) ([]float64, string) {
	end := t[len(t)-1]
	div, unit := 1.0, "time (s)"
	switch {
	case end > 3*3600:
		div, unit = 3600, "time (h)"
	case end > 180:
		div, unit = 60, "time (min)"
	}
	out := make([]float64, len(t))
	for i, x := range t {
		out[i] = x / div
	}
	return out, unit
}

func ints(xs []int64) []float64 {
	out := make([]float64, len(xs))
	for i, x := range xs {
		out[i] = float64(x)
	}
	return out
}

// waitCDF is one line per tier: x the wait at each percentile, y the share.
func (r *Report) waitCDF() []line {
	var out []line
	for _, t := range r.Tiers {
		if len(t.WaitQuantiles) == 0 {
			continue
		}
		l := line{name: t.Name, x: t.WaitQuantiles, y: make([]float64, len(t.WaitQuantiles))}
		for i := range l.y {
			l.y[i] = float64(i) / float64(len(l.y)-1)
		}
		out = append(out, l)
	}
	return out
}

type line struct {
	name string
	y    []float64
	x    []float64 // nil: the chart's shared x
}

var palette = []string{"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"}

// chart draws lines as an inline SVG with axes, ticks and a legend. With
// step, lines are drawn as steps (a CDF).
func chart(title, xLabel, yLabel string, xs []float64, lines []line, step bool) string {
	const W, H, left, right, top, bottom = 520.0, 300.0, 58.0, 14.0, 28.0, 40.0
	xmin, xmax, ymax := math.Inf(1), math.Inf(-1), 0.0
	for _, l := range lines {
		lx := l.x
		if lx == nil {
			lx = xs
		}
		for i, y := range l.y {
			xmin, xmax, ymax = math.Min(xmin, lx[i]), math.Max(xmax, lx[i]), math.Max(ymax, y)
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg viewBox="0 0 %.0f %.0f" role="img" aria-label="%s"><text x="%.0f" y="18" style="font-weight:600;font-size:13px">%s</text>`,
		W, H, html.EscapeString(title), left, html.EscapeString(title))
	if len(lines) == 0 || math.IsInf(xmin, 0) {
		b.WriteString(`<text x="60" y="150">no data</text></svg>` + "\n")
		return b.String()
	}
	if xmax <= xmin {
		xmax = xmin + 1
	}
	if ymax <= 0 {
		ymax = 1
	}
	yt := niceTicks(0, ymax)
	ymax = yt[len(yt)-1]
	xt := niceTicks(xmin, xmax)
	px := func(x float64) float64 { return left + (x-xmin)/(xmax-xmin)*(W-left-right) }
	py := func(y float64) float64 { return H - bottom - y/ymax*(H-top-bottom) }
	for _, y := range yt {
		fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="#e4e4e4"/><text x="%.1f" y="%.1f" text-anchor="end">%s</text>`,
			left, W-right, py(y), py(y), left-4, py(y)+4, tickLabel(y))
	}
	for _, x := range xt {
		if x < xmin || x > xmax {
			continue
		}
		fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="#e4e4e4"/><text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`,
			px(x), px(x), top, H-bottom, px(x), H-bottom+14, tickLabel(x))
	}
	fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`, (left+W-right)/2, H-6, html.EscapeString(xLabel))
	fmt.Fprintf(&b, `<text transform="translate(12 %.1f) rotate(-90)" text-anchor="middle">%s</text>`, (top+H-bottom)/2, html.EscapeString(yLabel))
	for k, l := range lines {
		lx := l.x
		if lx == nil {
			lx = xs
		}
		color := palette[k%len(palette)]
		var pts strings.Builder
		for i, y := range l.y {
			if step && i > 0 {
				fmt.Fprintf(&pts, "%.1f,%.1f ", px(lx[i]), py(l.y[i-1]))
			}
			fmt.Fprintf(&pts, "%.1f,%.1f ", px(lx[i]), py(y))
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="1.6" points="%s"/>`, color, strings.TrimSpace(pts.String()))
		// The legend sits in the title row, right-aligned.
		lx0 := W - right - float64(len(lines)-k)*90
		fmt.Fprintf(&b, `<rect x="%.1f" y="11" width="10" height="3" fill="%s"/><text x="%.1f" y="16">%s</text>`,
			lx0, color, lx0+14, html.EscapeString(l.name))
	}
	b.WriteString("</svg>\n")
	return b.String()
}

// niceTicks returns about five round tick values covering [lo, hi].
func niceTicks(lo, hi float64) []float64 {
	span := hi - lo
	step := math.Pow(10, math.Floor(math.Log10(span/5)))
	for _, m := range []float64{1, 2, 5, 10} {
		if span/(step*m) <= 6 {
			step *= m
			break
		}
	}
	var out []float64
	for v := math.Floor(lo/step) * step; v < hi+step*0.999; v += step {
		out = append(out, math.Round(v/step)*step)
	}
	return out
}

func tickLabel(v float64) string {
	switch {
	case v == 0:
		return "0"
	case math.Abs(v) >= 1e6:
		return fmt.Sprintf("%.3gM", v/1e6)
	case math.Abs(v) >= 1e4:
		return fmt.Sprintf("%.3gk", v/1e3)
	}
	return fmt.Sprintf("%.3g", v)
}
