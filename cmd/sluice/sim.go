package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	"github.com/sluicehq/sluice/node"
	"github.com/sluicehq/sluice/policy"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
	"github.com/sluicehq/sluice/sim"
)

func simCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "sim",
		Short: "Simulate a workload on the real scheduler and limits, on a virtual clock",
		Long: `Run the real state machine (admission, rate limits, fair queue) and the
leader's real placement on a virtual clock, fed by a workload file: tenants
and their arrivals, models and service times, executors, failures, and the
policy file the server takes. See docs/simulator.md and sim/scenarios/.`,
	}
	c.AddCommand(simRunCmd(), simPlanCmd(), simCompareCmd(), simReplayCmd(), simFloorCmd())
	return c
}

// loadWorkload reads a workload with the server's policy loader, so that
// its policy is read exactly as `sluice server --policy` reads it.
func loadWorkload(path string) (*sim.Workload, error) {
	if path == "" {
		return nil, fmt.Errorf("--workload: required (a YAML or JSON workload file; see sim/scenarios/)")
	}
	return sim.Load(path)
}

// simGC trades memory for speed: a run allocates fast while keeping a
// small live heap, so the collector would otherwise run very often. GOGC
// in the environment wins.
func simGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
}

func simRunCmd() *cobra.Command {
	var workload, out, csvPath, htmlPath, group string
	var seed uint64
	var executors int
	var duration time.Duration
	c := &cobra.Command{
		Use:   "run --workload FILE",
		Short: "Simulate a workload and report waits, rejections, fairness and utilisation",
		Example: `  sluice sim run --workload sim/scenarios/flash-crowd.yaml
  sluice sim run --workload sim/scenarios/tiers.yaml -o json --seed 7
  sluice sim run --workload sim/scenarios/steady.yaml --csv series.csv --report report.html`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if out != "table" && out != "json" {
				return fmt.Errorf("-o: %q is not table or json", out)
			}
			if executors < 0 {
				return fmt.Errorf("--executors: must not be negative")
			}
			w, err := loadWorkload(workload)
			if err != nil {
				return err
			}
			simGC()
			if duration < 0 {
				return fmt.Errorf("--duration: must not be negative")
			}
			opt := sim.Options{Executors: executors, Group: group, Duration: duration}
			if c.Flags().Changed("seed") {
				opt.Seed = &seed
			}
			r, err := sim.Run(w, opt)
			if err != nil {
				return err
			}
			stdout := c.OutOrStdout()
			if out == "json" {
				err = r.WriteJSON(stdout)
			} else {
				err = r.WriteTable(stdout)
			}
			if err != nil {
				return err
			}
			if csvPath != "" {
				if err := writeFile(csvPath, r.WriteCSV); err != nil {
					return err
				}
			}
			if htmlPath != "" {
				if err := writeFile(htmlPath, r.WriteHTML); err != nil {
					return err
				}
			}
			p := r.Perf
			fmt.Fprintf(c.ErrOrStderr(), "sluice sim: %d jobs, %d events, %d log entries in %.2fs (%.0f jobs/s, %.0f events/s)\n",
				r.Cluster.Submitted, p.Events, p.Commands, p.WallSeconds,
				float64(r.Cluster.Submitted)/p.WallSeconds, float64(p.Events)/p.WallSeconds)
			return nil
		},
	}
	c.Flags().StringVar(&workload, "workload", "", "workload file (YAML or JSON; see docs/simulator.md)")
	c.Flags().StringVarP(&out, "output", "o", "table", "report format on stdout: table or json (json is the same bytes for the same seed)")
	c.Flags().StringVar(&csvPath, "csv", "", "also write the time series (queue depth, admissions and rejections by tier, utilisation) as CSV to this file")
	c.Flags().StringVar(&htmlPath, "report", "", "also write a self-contained HTML report with SVG charts to this file")
	c.Flags().Uint64Var(&seed, "seed", 0, "random seed (default: the workload's seed)")
	c.Flags().IntVar(&executors, "executors", 0, "run with this many executors in --group instead of the workload's count")
	c.Flags().StringVar(&group, "group", "", "executor group --executors sets (default: the first group)")
	c.Flags().DurationVar(&duration, "duration", 0, "stop arrivals at this virtual time instead of the workload's duration (e.g. 20m for a quick look)")
	return c
}

func simFloorCmd() *cobra.Command {
	var workload, out string
	var seed uint64
	var jobs, forks int
	var from, until time.Duration
	c := &cobra.Command{
		Use:   "floor --workload FILE",
		Short: "Measure the least ETA error any estimator could reach on a workload, beside Sluice's",
		Long: `Run the workload, pick --jobs jobs that were given an ETA between --from
and --until, and for each run the workload again to the moment the job was
admitted (the same seed: the same past), then draw --forks different
futures from there (arrivals, job sizes, run-time noise, failures) and
see when the job starts in each. What its waits spread over is what no ETA
could know at admission: the report gives the least error any ETA could
have at p50 and p90 on those futures, beside Sluice's own ETAs. See
docs/simulator.md, "ETA honesty".`,
		Example: `  sluice sim floor --workload sim/scenarios/mixed-sizes.yaml
  sluice sim floor --workload sim/scenarios/steady.yaml --jobs 100 --forks 16 -o json`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if out != "table" && out != "json" {
				return fmt.Errorf("-o: %q is not table or json", out)
			}
			if jobs < 1 || jobs > 10000 {
				return fmt.Errorf("--jobs: %d is outside 1–10000", jobs)
			}
			if forks < 2 || forks > 1000 {
				return fmt.Errorf("--forks: %d is outside 2–1000", forks)
			}
			if from < 0 || until < 0 {
				return fmt.Errorf("--from, --until: must not be negative")
			}
			w, err := loadWorkload(workload)
			if err != nil {
				return err
			}
			simGC()
			fo := sim.FloorOptions{Jobs: jobs, Forks: forks, From: from, Until: until}
			if c.Flags().Changed("seed") {
				fo.Seed = &seed
			}
			start := time.Now()
			fl, err := sim.ETAFloor(w, fo)
			if err != nil {
				return err
			}
			fmt.Fprintf(c.ErrOrStderr(), "sluice sim: %d forks in %.2fs\n", fl.Jobs*fl.Forks, time.Since(start).Seconds())
			return writeOut(c.OutOrStdout(), out, fl, fl.WriteTable)
		},
	}
	c.Flags().StringVar(&workload, "workload", "", "workload file (YAML or JSON; see docs/simulator.md)")
	c.Flags().Uint64Var(&seed, "seed", 0, "random seed (default: the workload's seed)")
	c.Flags().IntVar(&jobs, "jobs", 300, "jobs to sample, evenly among those given an ETA between --from and --until")
	c.Flags().IntVar(&forks, "forks", 32, "futures to draw from each sampled job's admission")
	c.Flags().DurationVar(&from, "from", 0, "sample jobs admitted from this virtual time (default: the warm-up's end)")
	c.Flags().DurationVar(&until, "until", 0, "sample jobs admitted up to this virtual time (default: --from plus 30m); each fork replays the run to its job, so a later window costs more")
	c.Flags().StringVarP(&out, "output", "o", "table", "output format: table or json")
	return c
}

func simPlanCmd() *cobra.Command {
	var workload, slo, tier, group, out string
	var seeds, minN, maxN int
	c := &cobra.Command{
		Use:   "plan --workload FILE --slo 'p95_wait<=30s'",
		Short: "Find the fewest executors that meet a service-level objective",
		Long: `Search the executor count of one group for the smallest that meets every
objective on every seed, and print the curve: executors → p95 wait,
rejections, utilisation. Objectives: mean_wait, p50_wait, p95_wait,
p99_wait, max_wait, p95_turnaround, p99_turnaround (durations), rejected,
expired, unfinished (shares of submissions), joined by commas.`,
		Example: `  sluice sim plan --workload sim/scenarios/diurnal-day.yaml --slo 'p95_wait<=30s' --tier pro
  sluice sim plan --workload sim/scenarios/steady.yaml --slo 'p99_wait<1m,rejected<=1%' --seeds 5`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if out != "table" && out != "json" {
				return fmt.Errorf("-o: %q is not table or json", out)
			}
			if seeds < 1 || seeds > 100 {
				return fmt.Errorf("--seeds: %d is outside 1–100", seeds)
			}
			slos, err := sim.ParseSLOs(slo)
			if err != nil {
				return fmt.Errorf("--slo: %w", err)
			}
			w, err := loadWorkload(workload)
			if err != nil {
				return err
			}
			simGC()
			opt := sim.PlanOptions{SLOs: slos, Tier: tier, Group: group, Min: minN, Max: maxN, Seeds: seedList(w, seeds)}
			stderr := c.ErrOrStderr()
			opt.Progress = func(p sim.PlanPoint) {
				verdict := "misses"
				if p.Met {
					verdict = "meets"
				}
				fmt.Fprintf(stderr, "  %d executors: p95 wait %.3gs, %s\n", p.Executors, p.P95Wait, verdict)
			}
			start := time.Now()
			p, err := sim.PlanCapacity(w, opt)
			if err != nil {
				return err
			}
			fmt.Fprintf(stderr, "sluice sim: plan took %.2fs (%d runs, %d jobs)\n", time.Since(start).Seconds(), p.Runs, p.Jobs)
			return writeOut(c.OutOrStdout(), out, p, p.WriteTable)
		},
	}
	c.Flags().StringVar(&workload, "workload", "", "workload file (YAML or JSON; see docs/simulator.md)")
	c.Flags().StringVar(&slo, "slo", "", "objectives that must all hold, e.g. 'p95_wait<=30s' or 'p99_wait<1m,rejected<=1%'")
	c.Flags().StringVar(&tier, "tier", "", "tier whose jobs the objectives are about (default: all jobs)")
	c.Flags().StringVar(&group, "group", "", "executor group whose count is searched (default: the first group)")
	c.Flags().IntVar(&seeds, "seeds", 3, "seeds to run each count with (the workload's seed and the next ones); the objectives must hold on all")
	c.Flags().IntVar(&minN, "min", 1, "smallest executor count to consider")
	c.Flags().IntVar(&maxN, "max", 10000, "largest executor count to consider")
	c.Flags().StringVarP(&out, "output", "o", "table", "output format: table or json")
	return c
}

func simCompareCmd() *cobra.Command {
	var workload, out, htmlPath string
	var policies []string
	var seeds int
	var duration time.Duration
	c := &cobra.Command{
		Use:   "compare --workload FILE --policy A.yaml --policy B.yaml",
		Short: "Run one workload under several policies on the same seeds, side by side",
		Long: `Run the workload under each policy file (instead of its own) on the same
seeds: the same arrivals, service times and failures, so that what differs is
what the policies do with them. Prints, per tier and for the cluster, the
median over the seeds of rejections, waits, GPU-seconds and fairness;
--report writes an HTML page with each tier's wait-time CDF under every
policy. To see what a policy would do on the live cluster first, mark its
new rules shadow: true (docs/limits.md).`,
		Example: `  sluice sim compare --workload sim/scenarios/flash-crowd.yaml --policy sim/scenarios/policy.yaml --policy stricter.yaml --report ab.html`,
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if out != "table" && out != "json" {
				return fmt.Errorf("-o: %q is not table or json", out)
			}
			if len(policies) < 2 {
				return fmt.Errorf("--policy: %d given; give two or more policy files to compare", len(policies))
			}
			if seeds < 1 || seeds > 100 {
				return fmt.Errorf("--seeds: %d is outside 1–100", seeds)
			}
			if duration < 0 {
				return fmt.Errorf("--duration: must not be negative")
			}
			w, err := loadWorkload(workload)
			if err != nil {
				return err
			}
			var strategies []sim.Strategy
			for _, path := range policies {
				p, err := policy.Load(path)
				if err != nil {
					return fmt.Errorf("--policy %s: %w", path, err)
				}
				strategies = append(strategies, sim.Strategy{Name: path, Policy: p})
			}
			simGC()
			ss := seedList(w, seeds)
			start := time.Now()
			cmp, err := sim.Compare(w, strategies, ss, sim.Options{Duration: duration})
			if err != nil {
				return err
			}
			fmt.Fprintf(c.ErrOrStderr(), "sluice sim: %d runs in %.2fs\n", len(strategies)*len(ss), time.Since(start).Seconds())
			if htmlPath != "" {
				if err := writeFile(htmlPath, cmp.WriteHTML); err != nil {
					return err
				}
			}
			return writeOut(c.OutOrStdout(), out, cmp, cmp.WriteTable)
		},
	}
	c.Flags().StringVar(&workload, "workload", "", "workload file (YAML or JSON; see docs/simulator.md)")
	c.Flags().StringArrayVar(&policies, "policy", nil, "a policy file to run the workload under (repeat: two or more)")
	c.Flags().IntVar(&seeds, "seeds", 3, "seeds to run each policy with (the workload's seed and the next ones)")
	c.Flags().DurationVar(&duration, "duration", 0, "stop arrivals at this virtual time instead of the workload's duration")
	c.Flags().StringVar(&htmlPath, "report", "", "also write a self-contained HTML report (wait-time CDFs per tier under each policy) to this file")
	c.Flags().StringVarP(&out, "output", "o", "table", "output format: table or json")
	return c
}

func simReplayCmd() *cobra.Command {
	var from, fromCluster, key, ca, outDir, policyPath, group, out string
	var executors int
	c := &cobra.Command{
		Use:   "replay --from DATA_DIR | --from-cluster URL",
		Short: "Replay what a cluster's log recorded, as it was or under another policy or executor count",
		Long: `Read a stopped node's data dir (its latest snapshot and the raft log after
it), or a running node's over the admin API (--from-cluster, with the admin
token as --key), build a workload from what happened, the arrivals of each tenant with
their times and models, each model's service times and the executors, write
it to --out (workload.json, policy.json and a trace per tenant) and simulate
it: as recorded, or with --policy or --executors changed ("what if free
users got 30 a day", "what if we had 4 more GPUs"). Prints the recorded and
the simulated figures by tier side by side. A Submit the leader refused
before the log (a clear limit refusal) is not in it, so not replayed.`,
		Example: `  sluice sim replay --from /var/lib/sluice --executors 12    # 12 executors like the recorded ones
  sluice sim replay --from ./data --policy stricter.yaml --out replay/
  sluice sim replay --from-cluster http://127.0.0.1:7700 --key dev-admin`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if out != "table" && out != "json" {
				return fmt.Errorf("-o: %q is not table or json", out)
			}
			if (from == "") == (fromCluster == "") {
				return fmt.Errorf("--from or --from-cluster: give one (a stopped node's --data directory, or a node's URL)")
			}
			if executors < 0 {
				return fmt.Errorf("--executors: must not be negative")
			}
			var rec *sim.Recording
			var err error
			if from != "" {
				lr, err := node.OpenLog(from)
				if err != nil {
					return fmt.Errorf("--from %s: %w", from, err)
				}
				rec, err = sim.Record(lr.Snapshot, lr.Entries)
				lr.Close()
				if err != nil {
					return fmt.Errorf("--from %s: %w", from, err)
				}
			} else {
				f := &clientFlags{addr: fromCluster, key: key, ca: ca, output: "text"}
				if err := f.check(); err != nil {
					return err
				}
				from = f.addr
				if rec, err = recordCluster(c.Context(), f); err != nil {
					return fmt.Errorf("--from-cluster %s: %w", f.addr, err)
				}
			}
			if outDir == "" {
				if outDir, err = os.MkdirTemp("", "sluice-replay-"); err != nil {
					return err
				}
			}
			w, err := rec.Workload(outDir)
			if err != nil {
				return fmt.Errorf("--from %s: %w", from, err)
			}
			if policyPath != "" {
				p, err := policy.Load(policyPath)
				if err != nil {
					return fmt.Errorf("--policy %s: %w", policyPath, err)
				}
				if w, err = w.WithPolicy(p); err != nil {
					return fmt.Errorf("--policy %s: %w", policyPath, err)
				}
			}
			simGC()
			r, err := sim.Run(w, sim.Options{Executors: executors, Group: group})
			if err != nil {
				return err
			}
			stderr := c.ErrOrStderr()
			fmt.Fprintf(stderr, "sluice sim: replayed %d log entries from %s (%s of traffic); the workload is in %s\n",
				rec.Entries, from, time.Duration(rec.End-rec.Start).Round(time.Millisecond), filepath.Join(outDir, "workload.json"))
			recorded, simulated := rec.Recorded(), sim.Simulated(r)
			if out == "json" {
				return writeOut(c.OutOrStdout(), out, map[string]any{"recorded": recorded, "simulated": simulated,
					"workload": filepath.Join(outDir, "workload.json")}, nil)
			}
			return sim.WriteReplayTable(c.OutOrStdout(), recorded, simulated)
		},
	}
	c.Flags().StringVar(&from, "from", "", "a stopped node's data directory (its --data)")
	c.Flags().StringVar(&fromCluster, "from-cluster", "", "a running node's URL: its log, over the admin API (AdminService.ExportLog)")
	c.Flags().StringVar(&key, "key", os.Getenv("SLUICE_API_KEY"), "the admin token, for --from-cluster (env SLUICE_API_KEY)")
	c.Flags().StringVar(&ca, "ca", os.Getenv("SLUICE_CA"), "CA certificate to verify an https:// --from-cluster with (env SLUICE_CA)")
	c.Flags().StringVar(&outDir, "out", "", "directory to write the workload to (default: a new temporary one)")
	c.Flags().StringVar(&policyPath, "policy", "", "simulate under this policy file instead of the recorded one")
	c.Flags().IntVar(&executors, "executors", 0, "run with this many executors in --group instead of the recorded number")
	c.Flags().StringVar(&group, "group", "", "executor group --executors sets: recorded-1, recorded-2, … (executors alike; default recorded-1)")
	c.Flags().StringVarP(&out, "output", "o", "table", "output format: table or json")
	return c
}

// recordCluster reads a node's snapshot and log over AdminService.ExportLog
// and records them (sim.Record).
func recordCluster(ctx context.Context, f *clientFlags) (*sim.Recording, error) {
	stream, err := f.adminClient().ExportLog(ctx, connect.NewRequest(&sluicev1.ExportLogRequest{}))
	if err != nil {
		return nil, err
	}
	defer stream.Close()
	var snapshot []byte
	var entries []*sluicev1.LogEntry
	for stream.Receive() {
		snapshot = append(snapshot, stream.Msg().GetSnapshot()...)
		entries = append(entries, stream.Msg().GetEntries()...)
	}
	if err := stream.Err(); err != nil {
		return nil, err
	}
	if len(snapshot) == 0 {
		snapshot = nil
	}
	return sim.Record(snapshot, func(each func(uint64, []byte) error) error {
		for _, e := range entries {
			if err := each(e.Index, e.Data); err != nil {
				return err
			}
		}
		return nil
	})
}

// writeOut writes v as indented JSON (-o json) or as table writes it.
func writeOut(w io.Writer, out string, v any, table func(io.Writer) error) error {
	if out == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	return table(w)
}

// seedList is the workload's seed and the n-1 after it.
func seedList(w *sim.Workload, n int) []uint64 {
	out := make([]uint64, n)
	for i := range out {
		out[i] = w.Seed + uint64(i)
	}
	return out
}

// writeFile writes one report form to a file.
func writeFile(path string, write func(io.Writer) error) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := write(f); err != nil {
		f.Close()
		return fmt.Errorf("%s: %w", path, err)
	}
	return f.Close()
}
