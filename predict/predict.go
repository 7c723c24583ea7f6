// Package predict learns a model's run time from a job's inputs (issue
// 28): a fixed part plus a coefficient times each declared term (a term is
// the product of numeric input fields, e.g. steps × width × height), fitted
// from the last completed attempts by least squares that sets outliers
// aside (Tukey's biweight), and trusted only after a floor of observations.
package predict

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/structpb"

	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// MaxTerms and MaxTermFields bound a model's size declaration.
const (
	MaxTerms      = 4
	MaxTermFields = 4
	// DefaultMinObservations is how many completed attempts a learner
	// needs before it is trusted, unless the model says.
	DefaultMinObservations = 20
)

// Validate checks a model's size declaration; field names the declaration
// in errors (e.g. "models[2].size").
func Validate(field string, s *sluicev1.SizeModel) error {
	if s == nil {
		return nil
	}
	if len(s.Terms) == 0 || len(s.Terms) > MaxTerms {
		return fmt.Errorf("%s.terms: %d terms; give 1–%d", field, len(s.Terms), MaxTerms)
	}
	for i, t := range s.Terms {
		tf := fmt.Sprintf("%s.terms[%d].fields", field, i)
		if len(t.Fields) == 0 || len(t.Fields) > MaxTermFields {
			return fmt.Errorf("%s: %d fields; give 1–%d input fields to multiply", tf, len(t.Fields), MaxTermFields)
		}
		for j, f := range t.Fields {
			if f == "" || len(f) > 64 || strings.ContainsAny(f, " \t\n") {
				return fmt.Errorf("%s[%d]: %q is not an input field name (1–64 characters, no spaces)", tf, j, f)
			}
		}
	}
	if s.Reserve && len(s.Terms) != 1 {
		return fmt.Errorf("%s.reserve: reservations by size take one term; this declaration has %d", field, len(s.Terms))
	}
	if s.MinObservations != 0 && int(s.MinObservations) < 2*(len(s.Terms)+1) {
		return fmt.Errorf("%s.min_observations: %d is too few to fit %d term(s) and a fixed part; give 0 (20) or at least %d", field, s.MinObservations, len(s.Terms), 2*(len(s.Terms)+1))
	}
	if s.MinObservations < 0 || s.MinObservations > 10000 {
		return fmt.Errorf("%s.min_observations: %d is outside 0–10000", field, s.MinObservations)
	}
	return nil
}

// FieldError is an input field that cannot size a job.
type FieldError struct{ Field, Reason string }

func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }

// Features are a job's terms under s, from its input: ok is false when a
// term's field is missing, and err (a *FieldError) names a field that is
// there but not a non-negative number.
func Features(s *sluicev1.SizeModel, input *structpb.Struct) (x []float64, ok bool, err error) {
	if s == nil {
		return nil, false, nil
	}
	x = make([]float64, len(s.Terms))
	ok = true
	for i, t := range s.Terms {
		v := 1.0
		for _, f := range t.Fields {
			fv, present := input.GetFields()[f]
			if !present {
				ok = false
				continue
			}
			n, isNum := fv.GetKind().(*structpb.Value_NumberValue)
			if !isNum || n.NumberValue < 0 || math.IsInf(n.NumberValue, 0) || math.IsNaN(n.NumberValue) {
				return nil, false, &FieldError{Field: "spec.input." + f, Reason: "must be a non-negative number (the model's size declaration multiplies it)"}
			}
			v *= n.NumberValue
		}
		x[i] = v
	}
	return x, ok, nil
}

// Learner fits run time ≈ θ₀ + Σ θᵢ·xᵢ over the last window attempts by
// iteratively reweighted least squares with Tukey's biweight: an attempt
// far from the fit (a cold start, a retry, a stuck GPU) counts for little
// or nothing, however early it came. Not safe for concurrent use.
type Learner struct {
	min   int
	n     int // attempts learned from
	terms int
	scale [MaxTerms]float64 // each feature's scale, from its first non-zero value
	obs   []obs             // the window, a ring
	next  int
	theta [MaxTerms + 1]float64
	sigma float64 // the residuals' robust scale, seconds
	// flat: some term has not varied over the window, so its coefficient
	// is not known (all jobs of one size say nothing of another).
	flat bool
}

type obs struct {
	x [MaxTerms]float64
	y float64
}

const (
	window     = 256   // attempts the fit is over
	irlsRounds = 6     // reweighting rounds per fit
	tukey      = 4.685 // biweight cut-off, in robust scales of the residuals
	ridge      = 1e-9  // keeps the normal equations solvable with a constant feature
)

// NewLearner is a learner of terms features (at most MaxTerms), trusted
// after min observations (0: DefaultMinObservations).
func NewLearner(terms int, floor int) *Learner {
	if floor <= 0 {
		floor = DefaultMinObservations
	}
	return &Learner{min: floor, terms: min(max(terms, 0), MaxTerms)}
}

// row is x scaled, with the intercept's 1 first.
func (l *Learner) row(x *[MaxTerms]float64) (z [MaxTerms + 1]float64) {
	z[0] = 1
	for i := range l.terms {
		if l.scale[i] > 0 {
			z[i+1] = x[i] / l.scale[i]
		}
	}
	return z
}

// Observe learns that a job with features x ran for d.
func (l *Learner) Observe(x []float64, d time.Duration) {
	if len(x) != l.terms || d < 0 {
		return
	}
	var o obs
	for i, v := range x {
		if l.scale[i] == 0 && v > 0 {
			l.scale[i] = v
		}
		o.x[i] = v
	}
	o.y = d.Seconds()
	l.obs = ringPut(l.obs, &l.next, window, o)
	l.n++
	if l.n <= 2*l.min || l.n%8 == 0 || l.flat {
		l.fit()
	}
}

// fit refits θ and σ over the window.
func (l *Learner) fit() {
	d := l.terms + 1
	l.flat = false
	for i := range l.terms {
		lo, hi := math.Inf(1), math.Inf(-1)
		for k := range l.obs {
			lo, hi = min(lo, l.obs[k].x[i]), max(hi, l.obs[k].x[i])
		}
		if !(hi-lo > 1e-6*max(math.Abs(hi), 1e-12)) {
			l.flat = true
		}
	}
	w := make([]float64, len(l.obs))
	for i := range w {
		w[i] = 1
	}
	res := make([]float64, len(l.obs))
	for round := range irlsRounds {
		// Weighted normal equations: (Zᵀ W Z + ridge·I) θ = Zᵀ W y.
		var a [MaxTerms + 1][MaxTerms + 2]float64
		for k := range l.obs {
			if w[k] == 0 {
				continue
			}
			z := l.row(&l.obs[k].x)
			for i := range d {
				for j := range d {
					a[i][j] += w[k] * z[i] * z[j]
				}
				a[i][d] += w[k] * z[i] * l.obs[k].y
			}
		}
		for i := range d {
			a[i][i] += ridge
		}
		theta, ok := solve(&a, d)
		if !ok {
			return
		}
		l.theta = theta
		for k := range l.obs {
			z := l.row(&l.obs[k].x)
			res[k] = l.obs[k].y - dotN(l.theta[:d], z[:d])
		}
		l.sigma = 1.4826 * medianAbs(res)
		if round == irlsRounds-1 || l.sigma == 0 {
			break
		}
		c := tukey * l.sigma
		for k, r := range res {
			if u := r / c; math.Abs(u) < 1 {
				w[k] = (1 - u*u) * (1 - u*u)
			} else {
				w[k] = 0
			}
		}
	}
}

// solve solves the d×d system in a (its last column the right side) by
// Gaussian elimination with partial pivoting.
func solve(a *[MaxTerms + 1][MaxTerms + 2]float64, d int) (x [MaxTerms + 1]float64, ok bool) {
	for c := range d {
		p := c
		for r := c + 1; r < d; r++ {
			if math.Abs(a[r][c]) > math.Abs(a[p][c]) {
				p = r
			}
		}
		if a[p][c] == 0 {
			return x, false
		}
		a[c], a[p] = a[p], a[c]
		for r := c + 1; r < d; r++ {
			f := a[r][c] / a[c][c]
			for k := c; k <= d; k++ {
				a[r][k] -= f * a[c][k]
			}
		}
	}
	for r := d - 1; r >= 0; r-- {
		s := a[r][d]
		for k := r + 1; k < d; k++ {
			s -= a[r][k] * x[k]
		}
		x[r] = s / a[r][r]
	}
	return x, true
}

func medianAbs(xs []float64) float64 {
	a := make([]float64, len(xs))
	for i, v := range xs {
		a[i] = math.Abs(v)
	}
	slices.Sort(a)
	if len(a) == 0 {
		return 0
	}
	return a[len(a)/2]
}

func dotN(a, b []float64) float64 {
	s := 0.0
	for i := range a {
		s += a[i] * b[i]
	}
	return s
}

// Trusted reports whether the learner has seen enough attempts, of sizes
// that varied in every term.
func (l *Learner) Trusted() bool { return l.n >= l.min && !l.flat }

// Observations is how many attempts it has learned from.
func (l *Learner) Observations() int { return l.n }

// Predict is the run time of a job with features x and its spread (the
// residuals' robust scale); ok is false until the learner is trusted.
func (l *Learner) Predict(x []float64) (mean, sd time.Duration, ok bool) {
	if !l.Trusted() || len(x) != l.terms {
		return 0, 0, false
	}
	var o [MaxTerms]float64
	copy(o[:], x)
	z := l.row(&o)
	m := max(dotN(l.theta[:l.terms+1], z[:l.terms+1]), 0)
	return time.Duration(m * float64(time.Second)), time.Duration(l.sigma * float64(time.Second)), true
}
