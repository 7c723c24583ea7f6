package limiter

import (
	"fmt"
	"math"
	"time"
)

// Never is the RetryAt of a hit whose cost exceeds the limit: no amount of waiting fits it.
const Never int64 = math.MaxInt64

// maxAmount bounds limits, costs and debts so that sums and differences of two of them never
// overflow an int64.
const maxAmount = int64(1) << 60

// Result is one algorithm's decision on one hit. Times are unix nanoseconds.
type Result struct {
	Allowed bool
	// Limit is the capacity: burst, window limit, queue capacity, cap or allowance.
	Limit int64
	// Remaining is what is left after this decision (after the charge if allowed); never negative.
	Remaining int64
	// ResetAt is when the state is back to full: the window or period end for windows and quotas;
	// 0 when unknown (a concurrency cap waits on releases).
	ResetAt int64
	// RetryAt is the earliest time this cost fits, given no other traffic: now when allowed,
	// Never when the cost exceeds Limit, 0 when unknown (a full concurrency cap).
	RetryAt int64
	// ServeAt is when an allowed hit may start: now, except for LeakyQueue, which smooths hits
	// by queueing them. 0 when not allowed.
	ServeAt int64
}

// verdict is a Result as the algorithms compute it, without Limit (a parameter) and with
// RetryAt and ServeAt in one field (an allowed hit retries at now; a refused one has no
// ServeAt). At four words it stays in registers across calls; a Result, one word too wide
// for that, is copied through memory between the layers of a decision, and those copies
// stall on store forwarding (see bench/README.md, limiter).
type verdict struct {
	allowed   bool
	remaining int64
	resetAt   int64
	at        int64 // ServeAt when allowed, RetryAt when not
}

// result is v as the Result of a hit at now on an algorithm whose Limit is limit.
func (v verdict) result(limit, now int64) (r Result) {
	v.fill(&r, limit, now)
	return r
}

// fill sets *r to v.result(limit, now). A Result is too wide to live in registers: returned
// by value from a call, the compiler copies it through the stack in 16-byte loads of the
// 8-byte stores that built it, and each such load stalls on store forwarding. Callers on a
// hot path fill their own named result instead, and return it as it is.
func (v verdict) fill(r *Result, limit, now int64) {
	r.Allowed, r.Limit, r.Remaining, r.ResetAt, r.RetryAt, r.ServeAt = v.allowed, limit, v.remaining, v.resetAt, v.at, 0
	if v.allowed {
		r.RetryAt, r.ServeAt = now, v.at
	}
}

// Rate is N units per Per. Arithmetic on rates is exact (no floats): 7 per second is
// 7 per 1e9 nanoseconds, not one per 142857142.857.
type Rate struct {
	N   int64
	Per time.Duration
}

func (r Rate) validate(field string) error {
	if r.N < 1 || r.N > maxAmount {
		return fmt.Errorf("%s.n: %d must be between 1 and %d", field, r.N, maxAmount)
	}
	if r.Per < 1 {
		return fmt.Errorf("%s.per: %v must be positive", field, r.Per)
	}
	return nil
}

// maxRefill bounds how long a bucket or queue takes to go from empty to full, so that its
// times stay far inside an int64 of nanoseconds (which ends in 2262).
const maxRefill = int64(100 * 365 * 24 * time.Hour)

// validateRefill checks amount at rate r: its units, and the time they take to refill.
func validateRefill(field string, r Rate, amount int64) error {
	if err := r.validate("rate"); err != nil {
		return err
	}
	if err := validateAmount(field, amount); err != nil {
		return err
	}
	if mulAddCeilDiv(amount, int64(r.Per), 0, r.N) > maxRefill {
		return fmt.Errorf("%s: %d at %d per %v takes more than 100 years to refill", field, amount, r.N, r.Per)
	}
	return nil
}

func validateAmount(field string, v int64) error {
	if v < 1 || v > maxAmount {
		return fmt.Errorf("%s: %d must be between 1 and %d", field, v, maxAmount)
	}
	return nil
}

func validateWindow(w time.Duration) error {
	if w < 1 {
		return fmt.Errorf("window: %v must be positive", w)
	}
	return nil
}

// Algorithm is the limit a Rule enforces: TokenBucket, GCRA, LeakyQueue, FixedWindow,
// SlidingLog, SlidingCounter, Concurrency or Quota.
type Algorithm interface {
	// Validate reports the first bad parameter, naming its field.
	Validate() error
	// newTable returns an empty keyed table holding at most maxKeys keys.
	newTable(maxKeys int) table
	// limit is the Limit of its Results.
	limit() int64
}
