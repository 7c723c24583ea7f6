package sim

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/sluicehq/sluice/policy"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// MaxWorkloadBytes bounds a workload file; trace files have their own bound.
const MaxWorkloadBytes = 8 << 20

// Bounds on a workload, so that a typo cannot exhaust the machine.
const (
	MaxTenants   = 100000 // after count expansion; the policy allows as many
	MaxExecutors = 100000
	MaxTrace     = 50_000_000 // timestamps in one trace file
)

// DefaultStart is the virtual clock's origin when a workload gives none: a
// Monday at midnight UTC, so that daily quotas reset at whole days of
// simulated time.
var DefaultStart = time.Date(2026, 1, 5, 0, 0, 0, 0, time.UTC)

// Workload is a simulation's input: who sends what and when, what runs it,
// what breaks, and the policy in force. Its file form is YAML or JSON with
// these field names; docs/simulator.md describes every field.
type Workload struct {
	Name string `json:"name,omitempty"`
	// Seed makes a run reproducible: the same seed gives the same report,
	// byte for byte.
	Seed uint64 `json:"seed,omitempty"`
	// Start is the virtual clock's origin (RFC 3339); it matters for
	// calendar quotas and diurnal curves. Default DefaultStart.
	Start string `json:"start,omitempty"`
	// Arrivals stop at Duration or after Jobs submissions, whichever comes
	// first; at least one must be set.
	Duration Duration `json:"duration,omitempty"`
	Jobs     int64    `json:"jobs,omitempty"`
	// Warmup: jobs submitted before it are left out of the statistics, and
	// GPU time and utilisation are measured from it.
	Warmup Duration `json:"warmup,omitempty"`
	// Drain: after arrivals stop, run on until every job has ended (true,
	// the default) or stop at once and count the rest as unfinished.
	Drain *bool `json:"drain,omitempty"`
	// DrainLimit bounds the drain (default: max(1h, Duration)).
	DrainLimit Duration `json:"drain_limit,omitempty"`
	// Sample is the time-series interval (default: the run's stop time / 200,
	// at least 1s).
	Sample Duration `json:"sample,omitempty"`

	Tiers     []TierSpec     `json:"tiers,omitempty"`
	Tenants   []TenantSpec   `json:"tenants"`
	Models    []ModelSpec    `json:"models"`
	Executors []ExecutorSpec `json:"executors"`
	Failures  Failures       `json:"failures,omitempty"`

	// PolicyDoc is the policy inline, in the server's file form; PolicyFile
	// names one (relative to the workload file). At most one.
	PolicyDoc  json.RawMessage `json:"policy,omitempty"`
	PolicyFile string          `json:"policy_file,omitempty"`

	// Policy is the parsed policy file, or nil for none; set by Parse, or
	// directly when a workload is built in Go. The simulation runs on its
	// effective policy: this one plus the workload's tiers, tenants and
	// models it lacks (see EffectivePolicy).
	Policy *sluicev1.Policy `json:"-"`

	dir       string           // resolves relative paths
	effective *sluicev1.Policy // set by Check
}

// TierSpec adds a tier the policy lacks.
type TierSpec struct {
	Name   string `json:"name"`
	Weight int32  `json:"weight,omitempty"`
	Strict bool   `json:"strict,omitempty"`
}

// TenantSpec is one tenant, or Count alike tenants, and the jobs it sends.
type TenantSpec struct {
	Name string `json:"name"`
	// Tier and Weight: for a tenant the policy lacks; must agree with the
	// policy's otherwise.
	Tier   string `json:"tier,omitempty"`
	Weight int32  `json:"weight,omitempty"`
	// Count > 1 makes that many tenants, "<name>-1" ... "<name>-<count>",
	// each with these arrivals.
	Count    int      `json:"count,omitempty"`
	Arrivals Arrivals `json:"arrivals"`
	// Model, or Mix: the models its jobs ask for, with shares.
	Model    string     `json:"model,omitempty"`
	Mix      []ModelMix `json:"mix,omitempty"`
	Priority int32      `json:"priority,omitempty"`
	Retry    *RetrySpec `json:"retry,omitempty"`
	// Challenge is how its clients meet a CHALLENGE rule; without it they
	// answer no challenge (bots).
	Challenge *ChallengeSpec `json:"challenge,omitempty"`
	mixCum    []float64      // cumulative shares
	mixIdx    []int32        // model indexes
	expanded  []string       // tenant names after Count
	trace     []traceItem    // loaded trace
}

// RetrySpec makes a refused client come back: a rejected or "system busy"
// submission is sent again after the server's suggested retry time (at
// least After), up to Attempts times in all.
type RetrySpec struct {
	Attempts int      `json:"attempts"`
	After    Duration `json:"after,omitempty"`
}

// ChallengeSpec is how a tenant's clients meet a CHALLENGE rule's
// challenge: a share Solve of them (people) answer it After a while, and
// the request comes back with the answer (admitted unless another rule
// refuses, the pass it earns exempting the tenant's next requests until it
// expires); the others (bots) never answer: the request counts as refused,
// and comes back only as the tenant's retry policy says (to be challenged
// again).
type ChallengeSpec struct {
	Solve float64  `json:"solve"`
	After Duration `json:"after,omitempty"`
}

// ModelMix is one model's share of a tenant's jobs.
type ModelMix struct {
	Model string  `json:"model"`
	Share float64 `json:"share"`
}

// Arrivals is a tenant's arrival process: a Poisson stream of Rate jobs per
// second, shaped by a diurnal curve, on/off bursts and flash crowds (all
// multiply the rate), or a trace of timestamps instead.
type Arrivals struct {
	Rate    Rate     `json:"rate,omitempty"`
	Diurnal *Diurnal `json:"diurnal,omitempty"`
	OnOff   *OnOff   `json:"on_off,omitempty"`
	Bursts  []Burst  `json:"bursts,omitempty"`
	// Trace is a file of arrival times, one a line: seconds since the start
	// (e.g. 12.5) or RFC 3339 times (relative to the first line), optionally
	// followed by a model name. Lines starting with # are comments.
	Trace string `json:"trace,omitempty"`
}

// Diurnal multiplies the rate by a daily cosine curve between Trough (at
// PeakAt+12h) and Peak (at PeakAt, a time of day).
type Diurnal struct {
	Peak   float64  `json:"peak"`
	Trough float64  `json:"trough"`
	PeakAt Duration `json:"peak_at,omitempty"`
}

// OnOff alternates On (the full rate) and Off (OffFactor × the rate, default
// 0), starting on at Phase. (The file keys are on_for and off_for: YAML 1.1
// reads a bare on or off as a boolean.)
type OnOff struct {
	On        Duration `json:"on_for"`
	Off       Duration `json:"off_for"`
	OffFactor float64  `json:"off_factor,omitempty"`
	Phase     Duration `json:"phase,omitempty"`
}

// Burst multiplies the rate by Factor from At for For: a flash crowd.
type Burst struct {
	At     Duration `json:"at"`
	For    Duration `json:"for"`
	Factor float64  `json:"factor"`
}

// ModelSpec is a model's service time and needs. A model the policy lacks
// is added to the effective policy with default_duration = the mean.
type ModelSpec struct {
	Name    string  `json:"name"`
	Service Service `json:"service"`
	// GPUs and GPUMemoryMB: for a model the policy lacks; must agree with the
	// policy's otherwise.
	GPUs        int32 `json:"gpus,omitempty"`
	GPUMemoryMB int64 `json:"gpu_memory_mb,omitempty"`
	// ColdStart is added to an attempt on an executor where the model is not
	// warm (loading weights).
	ColdStart Duration `json:"cold_start,omitempty"`
	// FailureRate is the share of attempts that fail (retryably) at the end
	// of their run.
	FailureRate float64 `json:"failure_rate,omitempty"`
	// Sizes gives its jobs input sizes that make their run times (sizes.go).
	Sizes *SizeSpec `json:"sizes,omitempty"`
}

// Service is a service-time distribution: constant, exponential (Mean) or
// lognormal (Mean and Stddev). A bare duration ("2s") means constant.
type Service struct {
	Dist   string   `json:"dist"`
	Mean   Duration `json:"mean"`
	Stddev Duration `json:"stddev,omitempty"`
}

// UnmarshalJSON takes {dist, mean, stddev} or a bare duration (constant).
func (s *Service) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var d Duration
		if err := d.UnmarshalJSON(b); err != nil {
			return err
		}
		*s = Service{Dist: "constant", Mean: d}
		return nil
	}
	type plain Service
	return json.Unmarshal(b, (*plain)(s))
}

// ExecutorSpec is a group of alike executors, named "<name>-0001" ...
type ExecutorSpec struct {
	Name        string `json:"name"`
	Count       int    `json:"count"`
	GPUs        int32  `json:"gpus,omitempty"`  // each; default 1
	Slots       int32  `json:"slots,omitempty"` // jobs at once; default GPUs
	GPUMemoryMB int64  `json:"gpu_memory_mb,omitempty"`
	// Models it can run (empty: any) and those loaded at the start.
	Models []string `json:"models,omitempty"`
	Warm   []string `json:"warm,omitempty"`
	// WarmCapacity is how many recently run models stay loaded (default 2,
	// as the server's executors count them).
	WarmCapacity int `json:"warm_capacity,omitempty"`
}

// Failures is what breaks during the run.
type Failures struct {
	// Crashes: each executor crashes after an exponential time of mean MTBF
	// and comes back after an exponential time of mean Repair.
	Crashes *Crashes `json:"crashes,omitempty"`
	// Outages take executors down at given times.
	Outages []Outage `json:"outages,omitempty"`
	// Failovers: the leader is lost at At; for Pause no entry commits (no
	// admissions, dispatches or results), then a new leader carries on.
	Failovers []Failover `json:"failovers,omitempty"`
	// Detect is how long the leader takes to declare a crashed executor's
	// attempts lost and requeue them (lease expiry). Default 10s.
	Detect Duration `json:"detect,omitempty"`
}

// Crashes is random executor failures.
type Crashes struct {
	MTBF   Duration `json:"mtbf"`
	Repair Duration `json:"repair"`
}

// Outage takes Executors (a count, or a share such as "33%") of Group (default:
// all groups) down at At for For (0: for the rest of the run).
type Outage struct {
	At        Duration `json:"at"`
	For       Duration `json:"for,omitempty"`
	Executors Amount   `json:"executors"`
	Group     string   `json:"group,omitempty"`
}

// Failover is one leader loss.
type Failover struct {
	At    Duration `json:"at"`
	Pause Duration `json:"pause"`
}

// Duration is a time.Duration written "1m30s" (or a number of seconds).
type Duration time.Duration

// D is the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

func (d *Duration) UnmarshalJSON(b []byte) error {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	switch x := v.(type) {
	case string:
		p, err := time.ParseDuration(x)
		if err != nil {
			return fmt.Errorf("%q is not a duration such as \"30s\" or \"1h30m\"", x)
		}
		*d = Duration(p)
	case float64:
		*d = Duration(x * float64(time.Second))
	default:
		return fmt.Errorf("want a duration such as \"30s\", not %s", b)
	}
	return nil
}

// Rate is jobs per second, written as a number (per second) or "120/m",
// "5000/h", "2/s", "10000/d".
type Rate float64

func (r *Rate) UnmarshalJSON(b []byte) error {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	switch x := v.(type) {
	case float64:
		*r = Rate(x)
		return nil
	case string:
		num, unit, ok := strings.Cut(strings.TrimSpace(x), "/")
		f, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
		if err != nil {
			return fmt.Errorf("%q is not a rate such as 2, \"120/m\" or \"5000/h\"", x)
		}
		if !ok {
			*r = Rate(f)
			return nil
		}
		per := map[string]float64{"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}[strings.TrimSpace(unit)]
		if per == 0 {
			return fmt.Errorf("%q: the unit after / must be s, m, h or d", x)
		}
		*r = Rate(f / per)
		return nil
	}
	return fmt.Errorf("want a rate such as 2 or \"120/m\", not %s", b)
}

// Amount is a count ("3") or a share ("33%").
type Amount struct {
	N     int
	Share float64 // in (0, 1] when given as a percentage
}

func (a *Amount) UnmarshalJSON(b []byte) error {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	switch x := v.(type) {
	case float64:
		if x != float64(int(x)) {
			return fmt.Errorf("%v is not a whole number of executors (use \"33%%\" for a share)", x)
		}
		a.N = int(x)
		return nil
	case string:
		s := strings.TrimSpace(x)
		if p, ok := strings.CutSuffix(s, "%"); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(p), 64)
			if err != nil || f <= 0 || f > 100 {
				return fmt.Errorf("%q is not a share between 0%% and 100%%", x)
			}
			a.Share = f / 100
			return nil
		}
		n, err := strconv.Atoi(s)
		if err != nil {
			return fmt.Errorf("%q is not a count or a share such as \"33%%\"", x)
		}
		a.N = n
		return nil
	}
	return fmt.Errorf("want a count or a share such as \"33%%\", not %s", b)
}

func (a Amount) MarshalJSON() ([]byte, error) {
	if a.Share > 0 {
		return json.Marshal(strconv.FormatFloat(a.Share*100, 'f', -1, 64) + "%")
	}
	return json.Marshal(a.N)
}

// of resolves the amount against n executors: a share rounds to the nearest
// count, at least 1.
func (a Amount) of(n int) int {
	if a.Share > 0 {
		return min(n, max(1, int(a.Share*float64(n)+0.5)))
	}
	return min(n, a.N)
}

// ParseOptions says how to read what a workload refers to.
type ParseOptions struct {
	// Dir resolves relative policy_file and trace paths.
	Dir string
}

// Load reads and checks a workload file.
func Load(path string) (*Workload, error) {
	data, err := readBounded(path, MaxWorkloadBytes)
	if err != nil {
		return nil, err
	}
	w, err := Parse(data, ParseOptions{Dir: filepath.Dir(path)})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if w.Name == "" {
		w.Name = strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
	}
	return w, nil
}

func readBounded(path string, limit int64) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if fi.Size() > limit {
		return nil, fmt.Errorf("%s: %d bytes exceed the %d-byte limit", path, fi.Size(), limit)
	}
	return os.ReadFile(path)
}

// Parse reads a workload (YAML or JSON), its policy and traces, and checks
// it. Errors name the field: "workload: tenants[2].arrivals.rate: must be > 0".
func Parse(data []byte, opt ParseOptions) (*Workload, error) {
	if len(data) > MaxWorkloadBytes {
		return nil, fmt.Errorf("workload: %d bytes exceed the %d-byte limit", len(data), MaxWorkloadBytes)
	}
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, fmt.Errorf("workload: not valid YAML or JSON: %w", err)
	}
	var doc any
	if err := json.Unmarshal(js, &doc); err != nil {
		return nil, fmt.Errorf("workload: %w", err)
	}
	if _, ok := doc.(map[string]any); !ok {
		return nil, errors.New("workload: want a mapping of fields (name, tenants, models, executors, ...)")
	}
	if err := unknownFields(doc, reflect.TypeFor[Workload](), ""); err != nil {
		return nil, fmt.Errorf("workload: %w", err)
	}
	w := &Workload{}
	dec := json.NewDecoder(bytes.NewReader(js))
	if err := dec.Decode(w); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return nil, fmt.Errorf("workload: %s: want %s, not a %s", te.Field, te.Type, te.Value)
		}
		return nil, fmt.Errorf("workload: %w", err)
	}
	w.dir = opt.Dir
	if len(w.PolicyDoc) > 0 && string(w.PolicyDoc) != "null" && w.PolicyFile != "" {
		return nil, errors.New("workload: policy, policy_file: give one, not both")
	}
	var pdata []byte
	pfield := "workload" // policy.Parse's errors begin "policy: "
	switch {
	case w.PolicyFile != "":
		pfield = "workload: policy_file " + w.PolicyFile
		pdata, err = readBounded(w.path(w.PolicyFile), MaxWorkloadBytes)
		if err != nil {
			return nil, fmt.Errorf("workload: policy_file: %w", err)
		}
	case len(w.PolicyDoc) > 0 && string(w.PolicyDoc) != "null":
		pdata = w.PolicyDoc
	}
	if pdata != nil {
		p, err := policy.Parse(pdata) // the file the server takes
		if err != nil {
			return nil, fmt.Errorf("%s: %w", pfield, err)
		}
		w.Policy = p
	}
	if err := w.Check(); err != nil {
		return nil, err
	}
	return w, nil
}

func (w *Workload) path(p string) string {
	if filepath.IsAbs(p) || w.dir == "" {
		return p
	}
	return filepath.Join(w.dir, p)
}

// unknownFields names the first key in doc that t has no field for, or
// the first value of a type with its own decoding (durations, rates) that
// does not decode.
func unknownFields(doc any, t reflect.Type, path string) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Struct:
		obj, ok := doc.(map[string]any)
		if !ok {
			return nil // the decoder reports the type
		}
		known := map[string]reflect.Type{}
		var names []string
		for i := range t.NumField() {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if !f.IsExported() || name == "-" || name == "" {
				continue
			}
			known[name] = f.Type
			names = append(names, name)
		}
		keys := make([]string, 0, len(obj))
		for k := range obj {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			ft, ok := known[k]
			if !ok {
				return fmt.Errorf("%s: unknown field (known: %s)", join(path, k), strings.Join(names, ", "))
			}
			if k == "policy" && t == reflect.TypeFor[Workload]() {
				continue // the policy loader checks it
			}
			if u, ok := reflect.New(ft).Interface().(json.Unmarshaler); ok {
				// Durations, rates, shares, services: decode the value
				// alone so that its error names the field.
				b, _ := json.Marshal(obj[k])
				if err := u.UnmarshalJSON(b); err != nil {
					return fmt.Errorf("%s: %w", join(path, k), err)
				}
			}
			if ft.Kind() == reflect.Struct || ft.Kind() == reflect.Pointer || ft.Kind() == reflect.Slice {
				if err := unknownFields(obj[k], ft, join(path, k)); err != nil {
					return err
				}
			}
		}
	case reflect.Slice:
		xs, ok := doc.([]any)
		if !ok {
			return nil
		}
		for i, x := range xs {
			if err := unknownFields(x, t.Elem(), fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
	}
	return nil
}

func join(path, k string) string {
	if path == "" {
		return k
	}
	return path + "." + k
}

// Check validates the workload, loads its traces and builds its effective
// policy. Errors name the field. Parse calls it; call it yourself on a
// workload built in Go.
func (w *Workload) Check() error {
	if err := w.check(); err != nil {
		return fmt.Errorf("workload: %w", err)
	}
	return nil
}

var services = map[string]bool{"constant": true, "exponential": true, "lognormal": true}

func (w *Workload) check() error {
	if err := w.checkRun(); err != nil {
		return err
	}
	models, err := w.checkModels()
	if err != nil {
		return err
	}
	if err := w.checkTenants(models); err != nil {
		return err
	}
	if err := w.checkTiers(); err != nil {
		return err
	}
	groups, err := w.checkExecutors(models)
	if err != nil {
		return err
	}
	if err := w.Failures.check(groups); err != nil {
		return err
	}
	p, err := w.effectivePolicy()
	if err != nil {
		return err
	}
	w.effective = p
	return nil
}

// checkRun checks when the run starts, how long it lasts and what it samples.
func (w *Workload) checkRun() error {
	if w.Start != "" {
		if _, err := time.Parse(time.RFC3339, w.Start); err != nil {
			return fmt.Errorf("start: %q is not an RFC 3339 time such as 2026-01-05T00:00:00Z", w.Start)
		}
	}
	if w.Duration < 0 {
		return errors.New("duration: must not be negative")
	}
	if w.Jobs < 0 {
		return errors.New("jobs: must not be negative")
	}
	if w.Duration == 0 && w.Jobs == 0 {
		return errors.New("duration, jobs: give at least one (when arrivals stop)")
	}
	if w.Warmup < 0 || (w.Duration > 0 && w.Warmup >= w.Duration) {
		return errors.New("warmup: must be between 0 and duration")
	}
	if w.Sample < 0 || (w.Sample > 0 && w.Sample.D() < time.Millisecond) {
		return errors.New("sample: must be at least 1ms")
	}
	if w.DrainLimit < 0 {
		return errors.New("drain_limit: must not be negative")
	}
	return nil
}

// checkModels checks the models and returns their indexes by name.
func (w *Workload) checkModels() (map[string]int, error) {
	if len(w.Models) == 0 {
		return nil, errors.New("models: need at least one")
	}
	models := map[string]int{}
	for i, m := range w.Models {
		f := fmt.Sprintf("models[%d]", i)
		if m.Name == "" {
			return nil, fmt.Errorf("%s.name: must not be empty", f)
		}
		if _, dup := models[m.Name]; dup {
			return nil, fmt.Errorf("%s.name: %q appears twice", f, m.Name)
		}
		models[m.Name] = i
		if err := m.Service.check(f + ".service"); err != nil {
			return nil, err
		}
		if m.Sizes != nil {
			if err := m.Sizes.check(f + ".sizes"); err != nil {
				return nil, err
			}
		}
		if m.GPUs < 0 || m.GPUs > 64 {
			return nil, fmt.Errorf("%s.gpus: %d is outside 0–64", f, m.GPUs)
		}
		if m.GPUMemoryMB < 0 {
			return nil, fmt.Errorf("%s.gpu_memory_mb: must not be negative", f)
		}
		if m.ColdStart < 0 {
			return nil, fmt.Errorf("%s.cold_start: must not be negative", f)
		}
		if m.FailureRate < 0 || m.FailureRate >= 1 {
			return nil, fmt.Errorf("%s.failure_rate: %v is outside [0, 1)", f, m.FailureRate)
		}
	}
	return models, nil
}

// checkTenants checks the tenants (expanding each count into its names),
// their mixes of models and their arrivals.
func (w *Workload) checkTenants(models map[string]int) error {
	if len(w.Tenants) == 0 {
		return errors.New("tenants: need at least one")
	}
	names := map[string]string{}
	total := 0
	for i := range w.Tenants {
		t := &w.Tenants[i]
		f := fmt.Sprintf("tenants[%d]", i)
		if t.Name == "" {
			return fmt.Errorf("%s.name: must not be empty", f)
		}
		if t.Count < 0 {
			return fmt.Errorf("%s.count: must not be negative", f)
		}
		t.expanded = t.expanded[:0]
		if t.Count <= 1 {
			t.expanded = append(t.expanded, t.Name)
		} else {
			for k := 1; k <= t.Count; k++ {
				t.expanded = append(t.expanded, fmt.Sprintf("%s-%d", t.Name, k))
			}
		}
		total += len(t.expanded)
		if total > MaxTenants {
			return fmt.Errorf("%s.count: %d tenants in all exceed the limit of %d", f, total, MaxTenants)
		}
		for _, n := range t.expanded {
			if prev, dup := names[n]; dup {
				return fmt.Errorf("%s.name: tenant %q is also made by %s", f, n, prev)
			}
			names[n] = f
		}
		if t.Weight < 0 {
			return fmt.Errorf("%s.weight: must not be negative", f)
		}
		if t.Priority < 0 || t.Priority > 9 {
			return fmt.Errorf("%s.priority: %d is outside 0–9", f, t.Priority)
		}
		if r := t.Retry; r != nil {
			if r.Attempts < 1 || r.Attempts > 100 {
				return fmt.Errorf("%s.retry.attempts: %d is outside 1–100", f, r.Attempts)
			}
			if r.After < 0 {
				return fmt.Errorf("%s.retry.after: must not be negative", f)
			}
		}
		if c := t.Challenge; c != nil {
			if !(c.Solve >= 0 && c.Solve <= 1) {
				return fmt.Errorf("%s.challenge.solve: %v is not a share between 0 and 1", f, c.Solve)
			}
			if c.After < 0 {
				return fmt.Errorf("%s.challenge.after: must not be negative", f)
			}
		}
		if err := w.checkMix(t, f, models); err != nil {
			return err
		}
		if err := w.checkArrivals(t, f+".arrivals", models); err != nil {
			return err
		}
	}
	return nil
}

// checkTiers checks the workload's tiers.
func (w *Workload) checkTiers() error {
	for i, t := range w.Tiers {
		f := fmt.Sprintf("tiers[%d]", i)
		if t.Name == "" {
			return fmt.Errorf("%s.name: must not be empty", f)
		}
		if t.Weight < 0 {
			return fmt.Errorf("%s.weight: must not be negative", f)
		}
	}
	return nil
}

// checkExecutors checks the executor groups and returns their names.
func (w *Workload) checkExecutors(models map[string]int) (map[string]bool, error) {
	if len(w.Executors) == 0 {
		return nil, errors.New("executors: need at least one group")
	}
	groups := map[string]bool{}
	nexec := 0
	for i, e := range w.Executors {
		f := fmt.Sprintf("executors[%d]", i)
		if e.Name == "" {
			return nil, fmt.Errorf("%s.name: must not be empty", f)
		}
		if groups[e.Name] {
			return nil, fmt.Errorf("%s.name: %q appears twice", f, e.Name)
		}
		groups[e.Name] = true
		if e.Count < 0 {
			return nil, fmt.Errorf("%s.count: must not be negative", f)
		}
		nexec += e.Count
		if nexec > MaxExecutors {
			return nil, fmt.Errorf("%s.count: %d executors in all exceed the limit of %d", f, nexec, MaxExecutors)
		}
		if e.GPUs < 0 || e.GPUs > 1024 {
			return nil, fmt.Errorf("%s.gpus: %d is outside 0–1024", f, e.GPUs)
		}
		if e.Slots < 0 || e.Slots > 1024 {
			return nil, fmt.Errorf("%s.slots: %d is outside 0–1024", f, e.Slots)
		}
		if e.GPUMemoryMB < 0 {
			return nil, fmt.Errorf("%s.gpu_memory_mb: must not be negative", f)
		}
		if e.WarmCapacity < 0 {
			return nil, fmt.Errorf("%s.warm_capacity: must not be negative", f)
		}
		for j, m := range e.Models {
			if _, ok := models[m]; !ok {
				return nil, fmt.Errorf("%s.models[%d]: %q is not one of the workload's models", f, j, m)
			}
		}
		for j, m := range e.Warm {
			if _, ok := models[m]; !ok {
				return nil, fmt.Errorf("%s.warm[%d]: %q is not one of the workload's models", f, j, m)
			}
		}
	}
	return groups, nil
}

func (s Service) check(f string) error {
	if !services[s.Dist] {
		return fmt.Errorf("%s.dist: %q is not constant, exponential or lognormal", f, s.Dist)
	}
	if s.Mean <= 0 {
		return fmt.Errorf("%s.mean: must be > 0", f)
	}
	if s.Stddev < 0 {
		return fmt.Errorf("%s.stddev: must not be negative", f)
	}
	if s.Dist == "lognormal" && s.Stddev == 0 {
		return fmt.Errorf("%s.stddev: a lognormal needs one > 0", f)
	}
	if s.Dist != "lognormal" && s.Stddev != 0 {
		return fmt.Errorf("%s.stddev: only a lognormal takes one", f)
	}
	return nil
}

func (w *Workload) checkMix(t *TenantSpec, f string, models map[string]int) error {
	t.mixCum, t.mixIdx = t.mixCum[:0], t.mixIdx[:0]
	switch {
	case t.Model != "" && len(t.Mix) > 0:
		return fmt.Errorf("%s.model, %s.mix: give one, not both", f, f)
	case t.Model != "":
		i, ok := models[t.Model]
		if !ok {
			return fmt.Errorf("%s.model: %q is not one of the workload's models", f, t.Model)
		}
		t.mixCum, t.mixIdx = append(t.mixCum, 1), append(t.mixIdx, int32(i))
	case len(t.Mix) > 0:
		sum := 0.0
		for j, m := range t.Mix {
			i, ok := models[m.Model]
			if !ok {
				return fmt.Errorf("%s.mix[%d].model: %q is not one of the workload's models", f, j, m.Model)
			}
			if m.Share <= 0 {
				return fmt.Errorf("%s.mix[%d].share: must be > 0", f, j)
			}
			sum += m.Share
			t.mixCum, t.mixIdx = append(t.mixCum, sum), append(t.mixIdx, int32(i))
		}
		for j := range t.mixCum {
			t.mixCum[j] /= sum
		}
	case len(w.Models) == 1:
		t.mixCum, t.mixIdx = append(t.mixCum, 1), append(t.mixIdx, 0)
	default:
		return fmt.Errorf("%s.model: the workload has %d models; say which this tenant sends (model or mix)", f, len(w.Models))
	}
	return nil
}

func (w *Workload) checkArrivals(t *TenantSpec, f string, models map[string]int) error {
	a := &t.Arrivals
	if a.Trace != "" {
		if a.Rate != 0 || a.Diurnal != nil || a.OnOff != nil || len(a.Bursts) > 0 {
			return fmt.Errorf("%s.trace: a trace replaces rate, diurnal, on_off and bursts; give it alone", f)
		}
		tr, err := loadTrace(w.path(a.Trace), models)
		if err != nil {
			return fmt.Errorf("%s.trace: %w", f, err)
		}
		t.trace = tr
		return nil
	}
	if a.Rate <= 0 {
		return fmt.Errorf("%s.rate: must be > 0", f)
	}
	if a.Rate > 1e7 {
		return fmt.Errorf("%s.rate: %v jobs/s exceeds the limit of 1e7", f, float64(a.Rate))
	}
	if d := a.Diurnal; d != nil {
		if d.Peak <= 0 {
			return fmt.Errorf("%s.diurnal.peak: must be > 0", f)
		}
		if d.Trough < 0 || d.Trough > d.Peak {
			return fmt.Errorf("%s.diurnal.trough: must be between 0 and peak", f)
		}
		if d.PeakAt < 0 || d.PeakAt.D() >= 24*time.Hour {
			return fmt.Errorf("%s.diurnal.peak_at: must be a time of day in [0, 24h)", f)
		}
	}
	if o := a.OnOff; o != nil {
		if o.On <= 0 {
			return fmt.Errorf("%s.on_off.on_for: must be > 0", f)
		}
		if o.Off <= 0 {
			return fmt.Errorf("%s.on_off.off_for: must be > 0", f)
		}
		if o.OffFactor < 0 {
			return fmt.Errorf("%s.on_off.off_factor: must not be negative", f)
		}
		if o.Phase < 0 {
			return fmt.Errorf("%s.on_off.phase: must not be negative", f)
		}
	}
	for j, b := range a.Bursts {
		bf := fmt.Sprintf("%s.bursts[%d]", f, j)
		if b.At < 0 {
			return fmt.Errorf("%s.at: must not be negative", bf)
		}
		if b.For <= 0 {
			return fmt.Errorf("%s.for: must be > 0", bf)
		}
		if b.Factor < 0 || b.Factor > 1e4 {
			return fmt.Errorf("%s.factor: %v is outside 0–10000", bf, b.Factor)
		}
	}
	return nil
}

func (fl Failures) check(groups map[string]bool) error {
	if c := fl.Crashes; c != nil {
		if c.MTBF <= 0 {
			return errors.New("failures.crashes.mtbf: must be > 0")
		}
		if c.Repair <= 0 {
			return errors.New("failures.crashes.repair: must be > 0")
		}
	}
	if fl.Detect < 0 {
		return errors.New("failures.detect: must not be negative")
	}
	for i, o := range fl.Outages {
		f := fmt.Sprintf("failures.outages[%d]", i)
		if o.At < 0 {
			return fmt.Errorf("%s.at: must not be negative", f)
		}
		if o.For < 0 {
			return fmt.Errorf("%s.for: must not be negative", f)
		}
		if o.Executors.N <= 0 && o.Executors.Share <= 0 {
			return fmt.Errorf("%s.executors: must be a count > 0 or a share such as \"33%%\"", f)
		}
		if o.Group != "" && !groups[o.Group] {
			return fmt.Errorf("%s.group: %q is not one of the executor groups", f, o.Group)
		}
	}
	var last Duration = -1
	for i, fo := range fl.Failovers {
		f := fmt.Sprintf("failures.failovers[%d]", i)
		if fo.At < 0 {
			return fmt.Errorf("%s.at: must not be negative", f)
		}
		if fo.Pause <= 0 {
			return fmt.Errorf("%s.pause: must be > 0", f)
		}
		if fo.At <= last {
			return fmt.Errorf("%s.at: must come after the previous failover ends", f)
		}
		last = fo.At + fo.Pause
	}
	return nil
}

// traceItem is one arrival of a trace: offset from the start, and the model
// index (-1: the tenant's mix).
type traceItem struct {
	at    int64
	model int32
}

func loadTrace(path string, models map[string]int) ([]traceItem, error) {
	data, err := readBounded(path, 1<<30)
	if err != nil {
		return nil, err
	}
	var out []traceItem
	var origin time.Time
	for ln, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		it := traceItem{model: -1}
		if s, err := strconv.ParseFloat(fields[0], 64); err == nil {
			if s < 0 || s > 1e9 {
				return nil, fmt.Errorf("line %d: %v seconds is outside 0–1e9", ln+1, s)
			}
			it.at = int64(s * 1e9)
		} else if t, err := time.Parse(time.RFC3339Nano, fields[0]); err == nil {
			if origin.IsZero() {
				origin = t
			}
			it.at = int64(t.Sub(origin))
		} else {
			return nil, fmt.Errorf("line %d: %q is neither seconds nor an RFC 3339 time", ln+1, fields[0])
		}
		if len(fields) > 1 {
			i, ok := models[fields[1]]
			if !ok {
				return nil, fmt.Errorf("line %d: model %q is not one of the workload's models", ln+1, fields[1])
			}
			it.model = int32(i)
		}
		if len(out) > 0 && it.at < out[len(out)-1].at {
			return nil, fmt.Errorf("line %d: times must not go back", ln+1)
		}
		out = append(out, it)
		if len(out) > MaxTrace {
			return nil, fmt.Errorf("more than %d arrivals", MaxTrace)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no arrivals in the file")
	}
	return out, nil
}

// start is the virtual clock's origin in unix nanoseconds.
func (w *Workload) start() int64 {
	if w.Start != "" {
		t, _ := time.Parse(time.RFC3339, w.Start)
		return t.UnixNano()
	}
	return DefaultStart.UnixNano()
}

func (w *Workload) drain() bool { return w.Drain == nil || *w.Drain }

// ExecutorCount is the number of executors over all groups.
func (w *Workload) ExecutorCount() int {
	n := 0
	for _, e := range w.Executors {
		n += e.Count
	}
	return n
}

// TenantNames lists the tenants after count expansion, in workload order.
func (w *Workload) TenantNames() []string {
	var out []string
	for _, t := range w.Tenants {
		out = append(out, t.expanded...)
	}
	return out
}
