// Package limiter decides whether a cost-weighted hit fits a limit: token bucket, GCRA,
// leaky queue, fixed window, sliding log and counter, concurrency caps and calendar quotas,
// plus a keyed rule Engine that charges every matching rule atomically, or none.
// It is pure: time is an argument (unix nanoseconds), state is integers, nothing reads the
// clock, allocates per decision, starts goroutines or does I/O, so replicas agree byte for byte.
package limiter
