package sim

import (
	"hash/fnv"
	"math"
	"math/rand/v2"
	"time"
)

// stream returns the seeded generator of one source of randomness (a
// tenant's arrivals, a model's service times, an executor's crashes). Each
// source has its own PCG stream, so that changing one part of a workload
// (another tenant, more executors) leaves the others' random draws alone:
// runs that differ in one knob are compared on common random numbers.
func stream(seed uint64, purpose string) *rand.Rand {
	h := fnv.New64a()
	h.Write([]byte(purpose))
	return rand.New(rand.NewPCG(seed, h.Sum64()))
}

// sample draws a service time in nanoseconds (at least 1).
func (s Service) sample(r *rand.Rand) int64 {
	mean := float64(s.Mean)
	var v float64
	switch s.Dist {
	case "exponential":
		v = mean * r.ExpFloat64()
	case "lognormal":
		// Mean m and standard deviation s of the lognormal itself:
		// σ² = ln(1 + s²/m²), μ = ln m − σ²/2.
		sd := float64(s.Stddev)
		s2 := math.Log1p(sd * sd / (mean * mean))
		v = math.Exp(math.Log(mean) - s2/2 + math.Sqrt(s2)*r.NormFloat64())
	default:
		v = mean
	}
	if v < 1 {
		return 1
	}
	if v > float64(math.MaxInt64/4) {
		return math.MaxInt64 / 4
	}
	return int64(v)
}

// never is a time that does not come.
const never = int64(math.MaxInt64)

// diurnalStep is the length of the steps in which a diurnal curve is held
// constant (the arrival process is exact for the stepped curve).
const diurnalStep = int64(time.Minute)

// arrivals generates one tenant's arrival times, as offsets from the start
// in nanoseconds: a non-homogeneous Poisson process whose rate is
// piecewise constant (the diurnal curve in one-minute steps, on/off edges,
// bursts), drawn exactly by inverting the integrated rate, or a trace.
type arrivals struct {
	spec  *Arrivals
	r     *rand.Rand
	t     int64
	trace []traceItem
	next  int
}

// draw returns the next arrival offset and the trace's model for it (-1:
// none), or ok false when no more arrivals come.
func (g *arrivals) draw() (at int64, model int32, ok bool) {
	if g.trace != nil {
		if g.next >= len(g.trace) {
			return 0, 0, false
		}
		it := g.trace[g.next]
		g.next++
		return it.at, it.model, true
	}
	e := g.r.ExpFloat64() // the integrated rate to the next arrival
	t := g.t
	for {
		rate := g.rate(t) // jobs per second
		b := g.nextBreak(t)
		if rate > 0 {
			dt := e / rate * 1e9
			if dt < float64(b-t) {
				g.t = t + int64(dt)
				return g.t, -1, true
			}
		}
		if b == never {
			return 0, 0, false
		}
		e -= rate * float64(b-t) / 1e9
		t = b
	}
}

// rate is the arrival rate at offset t, in jobs per second.
func (g *arrivals) rate(t int64) float64 {
	a := g.spec
	r := float64(a.Rate)
	if d := a.Diurnal; d != nil {
		mid := t - t%diurnalStep + diurnalStep/2
		day := float64(24 * time.Hour)
		phase := 2 * math.Pi * float64(mid-int64(d.PeakAt)) / day
		r *= d.Trough + (d.Peak-d.Trough)*(1+math.Cos(phase))/2
	}
	if o := a.OnOff; o != nil {
		if !onOffIsOn(o, t) {
			r *= o.OffFactor
		}
	}
	for _, b := range a.Bursts {
		if t >= int64(b.At) && t < int64(b.At+b.For) {
			r *= b.Factor
		}
	}
	return r
}

func onOffIsOn(o *OnOff, t int64) bool {
	if t < int64(o.Phase) {
		return false
	}
	return (t-int64(o.Phase))%int64(o.On+o.Off) < int64(o.On)
}

// nextBreak is the first offset after t at which the rate may change.
func (g *arrivals) nextBreak(t int64) int64 {
	a := g.spec
	b := never
	if a.Diurnal != nil {
		b = t - t%diurnalStep + diurnalStep
	}
	if o := a.OnOff; o != nil {
		var e int64
		if t < int64(o.Phase) {
			e = int64(o.Phase)
		} else {
			period := int64(o.On + o.Off)
			pos := (t - int64(o.Phase)) % period
			if pos < int64(o.On) {
				e = t - pos + int64(o.On)
			} else {
				e = t - pos + period
			}
		}
		b = min(b, e)
	}
	for _, x := range a.Bursts {
		if s := int64(x.At); s > t {
			b = min(b, s)
		}
		if e := int64(x.At + x.For); e > t {
			b = min(b, e)
		}
	}
	return b
}
