package predict

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/structpb"
	"pgregory.net/rapid"

	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

func secs(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// TestLearnerFindsTheRunTimeOfImagesAndAnswers: image jobs of 10–60 steps
// at two resolutions (run time 0.5 s + 0.1 s a step per megapixel), with
// 10 % noise and one attempt in ten ten times as long (a cold GPU, a
// retry), are predicted within 10 % once trusted; nothing is claimed
// before the floor of observations.
func TestLearnerFindsTheRunTimeOfImagesAndAnswers(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	l := NewLearner(1, 30)
	truth := func(steps, mpix float64) float64 { return 0.5 + 0.1*steps*mpix }
	for i := range 600 {
		steps := float64(10 + r.IntN(51))
		mpix := []float64{1, 2.36}[r.IntN(2)]
		y := truth(steps, mpix) * (1 + 0.1*r.NormFloat64())
		if r.IntN(10) == 0 {
			y *= 10
		}
		if i == 29 {
			if _, _, ok := l.Predict([]float64{steps * mpix}); ok {
				t.Fatal("trusted before its floor of observations")
			}
		}
		l.Observe([]float64{steps * mpix}, secs(y))
	}
	for _, c := range []struct{ steps, mpix float64 }{{10, 1}, {60, 1}, {30, 2.36}, {60, 2.36}} {
		got, sd, ok := l.Predict([]float64{c.steps * c.mpix})
		want := truth(c.steps, c.mpix)
		if !ok || math.Abs(got.Seconds()-want)/want > 0.1 {
			t.Errorf("%v steps at %v Mpx: predicted %v (sd %v, %v), want %.2fs", c.steps, c.mpix, got, sd, ok, want)
		}
	}
	long, _, _ := l.Predict([]float64{60})
	short, _, _ := l.Predict([]float64{10})
	if long < 3*short {
		t.Fatalf("60 steps predicted %v, 10 steps %v: want at least 3×", long, short)
	}
}

// TestLearnerFitsAnyLine: for any fixed part and coefficients of up to
// three terms, noise-free attempts are predicted within 1 %.
func TestLearnerFitsAnyLine(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		terms := rapid.IntRange(1, 3).Draw(t, "terms")
		fixed := rapid.Float64Range(0, 30).Draw(t, "fixed")
		coef := make([]float64, terms)
		scale := make([]float64, terms)
		for i := range coef {
			coef[i] = rapid.Float64Range(0.001, 5).Draw(t, "coef")
			scale[i] = math.Pow(10, float64(rapid.IntRange(0, 7).Draw(t, "magnitude")))
		}
		r := rand.New(rand.NewPCG(rapid.Uint64().Draw(t, "seed"), 1))
		draw := func() ([]float64, float64) {
			x := make([]float64, terms)
			y := fixed
			for i := range x {
				x[i] = scale[i] * (0.1 + r.Float64())
				y += coef[i] * x[i] / scale[i]
			}
			return x, y
		}
		l := NewLearner(terms, 0)
		for range 300 {
			x, y := draw()
			l.Observe(x, secs(y))
		}
		for range 20 {
			x, y := draw()
			got, _, ok := l.Predict(x)
			if !ok || math.Abs(got.Seconds()-y) > 0.01*y+0.01 {
				t.Fatalf("predicted %v for %v, want %.3fs", got, x, y)
			}
		}
	})
}

// TestLearnerDoesNotTrustOneSize: attempts all of one size say nothing of
// another; the learner waits for sizes that vary.
func TestLearnerDoesNotTrustOneSize(t *testing.T) {
	l := NewLearner(1, 4)
	for range 20 {
		l.Observe([]float64{10}, time.Second)
	}
	if d, _, ok := l.Predict([]float64{60}); ok {
		t.Fatalf("trusted after one size only: %v for 60", d)
	}
	l.Observe([]float64{20}, 2*time.Second)
	if _, _, ok := l.Predict([]float64{60}); !ok {
		t.Fatal("not trusted once the sizes vary")
	}
}

func TestFeaturesAndValidate(t *testing.T) {
	size := &sluicev1.SizeModel{Terms: []*sluicev1.SizeTerm{{Fields: []string{"steps", "width", "height"}}, {Fields: []string{"frames"}}}}
	if err := Validate("models[0].size", size); err != nil {
		t.Fatal(err)
	}
	in, _ := structpb.NewStruct(map[string]any{"steps": 30, "width": 1024, "height": 512, "prompt": "a cat"})
	x, ok, err := Features(size, in)
	if err != nil || ok || x[0] != 30*1024*512 {
		t.Fatalf("features %v, complete %v, %v: want 30×1024×512 and frames missing", x, ok, err)
	}
	bad, _ := structpb.NewStruct(map[string]any{"steps": "thirty", "width": 1, "height": 1, "frames": 1})
	if _, _, err := Features(size, bad); err == nil || !strings.Contains(err.Error(), "spec.input.steps") {
		t.Fatalf("a text where a number goes: %v", err)
	}
	for _, c := range []struct {
		s    *sluicev1.SizeModel
		want string
	}{
		{&sluicev1.SizeModel{}, "models[0].size.terms: 0 terms"},
		{&sluicev1.SizeModel{Terms: []*sluicev1.SizeTerm{{}}}, "models[0].size.terms[0].fields: 0 fields"},
		{&sluicev1.SizeModel{Terms: []*sluicev1.SizeTerm{{Fields: []string{"max tokens"}}}}, "models[0].size.terms[0].fields[0]"},
		{&sluicev1.SizeModel{Terms: []*sluicev1.SizeTerm{{Fields: []string{"n"}}}, MinObservations: -1}, "models[0].size.min_observations"},
		{&sluicev1.SizeModel{Terms: []*sluicev1.SizeTerm{{Fields: []string{"a"}}, {Fields: []string{"b"}}}, MinObservations: 1}, "models[0].size.min_observations: 1 is too few"},
	} {
		if err := Validate("models[0].size", c.s); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want an error naming %s", c.s, err, c.want)
		}
	}
}
