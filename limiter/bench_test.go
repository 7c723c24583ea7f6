package limiter

import (
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/time/rate"
)

// Benchmarks, side by side with golang.org/x/time/rate (rate.Limiter.AllowN per key):
//
//	go test -run '^$' -bench . -benchmem -benchtime 1s ./limiter/
//
// BenchmarkState: one key, its state in hand (x/time/rate: one *rate.Limiter).
// BenchmarkKeyed/one-key and /1M-keys: a keyed table (Sharded; x/time/rate: a map of
// limiters behind a mutex, and a sync.Map), serial and with b.RunParallel.
// BenchmarkEngine: the state machine's path, a three-rule policy.
// BenchmarkMissFloor: the 1M-key row's bare memory cost, no algorithm (what no table can beat).
//
// Each op is one decision; time moves 1µs per op, so rates are set to keep most hits admitted.

const (
	benchKeys = 1 << 20
	benchStep = int64(time.Microsecond)
)

// benchAlgorithms are the algorithms at parameters where a hit per microsecond mostly fits.
var benchAlgorithms = []struct {
	name string
	alg  Algorithm
}{
	{"token-bucket", TokenBucket{Rate: Rate{N: 1_000_000, Per: time.Second}, Burst: 1000}},
	{"gcra", GCRA{Rate: Rate{N: 1_000_000, Per: time.Second}, Burst: 1000}},
	{"leaky-queue", LeakyQueue{Rate: Rate{N: 1_000_000, Per: time.Second}, Capacity: 1000}},
	{"fixed-window", FixedWindow{Limit: 1_000_000, Window: time.Second}},
	{"sliding-log", SlidingLog{Limit: 1000, Window: time.Millisecond}},
	{"sliding-counter", SlidingCounter{Limit: 1_000_000, Window: time.Second}},
	{"concurrency", Concurrency{Limit: 1 << 50}},
	{"quota", Quota{Limit: 1 << 50, Period: Daily, Location: time.UTC}},
}

func newXRate() *rate.Limiter { return rate.NewLimiter(rate.Limit(1_000_000), 1000) }

// benchState times Admit on a state in hand.
func benchState[S any](b *testing.B, admit func(*S, int64, int64) Result) {
	var s S
	now := epoch
	b.ReportAllocs()
	for b.Loop() {
		now += benchStep
		admit(&s, now, 1)
	}
}

func BenchmarkState(b *testing.B) {
	b.Run("x-time-rate", func(b *testing.B) {
		l := newXRate()
		t := time.Unix(0, epoch)
		b.ReportAllocs()
		for b.Loop() {
			t = t.Add(time.Microsecond)
			l.AllowN(t, 1)
		}
	})
	a := benchAlgorithms
	b.Run(a[0].name, func(b *testing.B) { benchState(b, a[0].alg.(TokenBucket).Admit) })
	b.Run(a[1].name, func(b *testing.B) { benchState(b, a[1].alg.(GCRA).Admit) })
	b.Run(a[2].name, func(b *testing.B) { benchState(b, a[2].alg.(LeakyQueue).Admit) })
	b.Run(a[3].name, func(b *testing.B) { benchState(b, a[3].alg.(FixedWindow).Admit) })
	b.Run(a[4].name, func(b *testing.B) { benchState(b, a[4].alg.(SlidingLog).Admit) })
	b.Run(a[5].name, func(b *testing.B) { benchState(b, a[5].alg.(SlidingCounter).Admit) })
	b.Run(a[6].name, func(b *testing.B) { benchState(b, a[6].alg.(Concurrency).Admit) })
	b.Run(a[7].name, func(b *testing.B) { benchState(b, a[7].alg.(Quota).Admit) })
}

// benchKeySet returns n keys twice over: one copy to create the keys, the other to look them
// up, as requests bring freshly decoded strings (no pointer-equality shortcut in the map).
func benchKeySet(n int) (insert, lookup []string) {
	insert, lookup = make([]string, n), make([]string, n)
	for i := range insert {
		insert[i] = fmt.Sprintf("tenant-%08d", i)
		lookup[i] = strings.Clone(insert[i])
	}
	return insert, lookup
}

// spread maps an op counter onto the keys in a cache-hostile order.
func spread(i uint64, n int) int { return int((i * 0x9E3779B97F4A7C15 >> 20) % uint64(n)) }

// keyStream returns the keys op 0, 1, 2, … look up (keys[spread(i)]), laid out one after the
// other in one fresh block of memory, so that reading op i's key is a sequential read that
// the CPU prefetches: the key is in cache, as a key just decoded from a request is.
func keyStream(keys []string) []string {
	var b strings.Builder
	for i := range keys {
		b.WriteString(keys[spread(uint64(i), len(keys))])
	}
	all, stream := b.String(), make([]string, len(keys))
	for i := range keys {
		k := keys[spread(uint64(i), len(keys))]
		stream[i], all = all[:len(k)], all[len(k):]
	}
	return stream
}

// keyed is what the keyed benchmarks drive: one decision on one key.
type keyedBench func(key string, now int64) bool

// runKeyed runs admit serially and in parallel on keys: keys[spread(i)] for op i when
// scattered (a cold key: the benchmark's own read of it misses the cache), keys[i] when the
// keys are a keyStream.
func runKeyed(b *testing.B, keys []string, scattered bool, admit keyedBench) {
	pick := func(i uint64) string {
		if scattered {
			return keys[spread(i, len(keys))]
		}
		return keys[i%uint64(len(keys))]
	}
	b.Run("serial", func(b *testing.B) {
		now := epoch
		i := uint64(0)
		b.ReportAllocs()
		for b.Loop() {
			now += benchStep
			i++
			admit(pick(i), now)
		}
	})
	b.Run("parallel", func(b *testing.B) {
		var seed atomic.Uint64
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := seed.Add(1) * uint64(len(keys)) / 7
			now := epoch
			for pb.Next() {
				now += benchStep
				i++
				admit(pick(i), now)
			}
		})
	})
}

// BenchmarkKeyed: one key; 1M keys looked up with a cold key (scattered); and 1M keys with
// the key in cache (in-cache), which is the limiter's own cost on a request just decoded.
func BenchmarkKeyed(b *testing.B) {
	for _, size := range []struct {
		name      string
		n         int
		scattered bool
	}{{"one-key", 1, true}, {"1M-keys", benchKeys, true}, {"1M-keys-in-cache", benchKeys, false}} {
		insert, lookup := benchKeySet(size.n)
		if !size.scattered {
			lookup = keyStream(lookup)
		}
		b.Run(size.name, func(b *testing.B) {
			// As x/time/rate's users write it (issue 25): a map under an RWMutex, read
			// locked, looked up with the very string objects it stored (no hashing of
			// a fresh copy can miss the cache). The Sluice rows below look up copies.
			b.Run("x-time-rate-rwmutex-map", func(b *testing.B) {
				same := insert
				if !size.scattered {
					same = keyStream(insert) // laid out in lookup order, as lookup is
				}
				var mu sync.RWMutex
				m := make(map[string]*rate.Limiter, len(same))
				for _, k := range same {
					m[k] = newXRate()
				}
				runKeyed(b, same, size.scattered, func(key string, now int64) bool {
					mu.RLock()
					l := m[key]
					mu.RUnlock()
					return l.AllowN(time.Unix(0, now), 1)
				})
			})
			runtime.GC()
			b.Run("x-time-rate-mutex-map", func(b *testing.B) {
				var mu sync.Mutex
				m := make(map[string]*rate.Limiter, len(insert))
				for _, k := range insert {
					m[k] = newXRate()
				}
				runKeyed(b, lookup, size.scattered, func(key string, now int64) bool {
					mu.Lock()
					l := m[key]
					mu.Unlock()
					return l.AllowN(time.Unix(0, now), 1)
				})
			})
			runtime.GC()
			b.Run("x-time-rate-sync-map", func(b *testing.B) {
				var m sync.Map
				for _, k := range insert {
					m.Store(k, newXRate())
				}
				runKeyed(b, lookup, size.scattered, func(key string, now int64) bool {
					l, _ := m.Load(key)
					return l.(*rate.Limiter).AllowN(time.Unix(0, now), 1)
				})
			})
			runtime.GC()
			for _, a := range benchAlgorithms {
				b.Run(a.name, func(b *testing.B) {
					s, err := NewSharded(a.alg, 2*len(insert))
					if err != nil {
						b.Fatal(err)
					}
					for _, k := range insert {
						s.Admit(k, epoch, 1)
					}
					runKeyed(b, lookup, size.scattered, func(key string, now int64) bool {
						return s.Admit(key, now, 1).Allowed
					})
				})
				runtime.GC()
			}
		})
	}
}

// BenchmarkEngine times the state machine's decision: a global GCRA, a per-tenant token
// bucket for the tier, and a per-tenant daily quota, all charged at once.
func BenchmarkEngine(b *testing.B) {
	rules := []Rule{
		{Name: "global", Algorithm: GCRA{Rate: Rate{N: 10_000_000, Per: time.Second}, Burst: 10_000}},
		{Name: "free-rps", Match: Match{Tier: "free"}, Scope: PerTenant, MaxKeys: 2 * benchKeys,
			Algorithm: TokenBucket{Rate: Rate{N: 1_000_000, Per: time.Second}, Burst: 1000}},
		{Name: "daily", Scope: PerTenant, MaxKeys: 2 * benchKeys,
			Algorithm: Quota{Limit: 1 << 50, Period: Daily, Location: time.UTC}},
	}
	for _, size := range []struct {
		name string
		n    int
	}{{"one-key", 1}, {"1M-keys", benchKeys}} {
		insert, lookup := benchKeySet(size.n)
		b.Run(size.name, func(b *testing.B) {
			e, err := NewEngine(rules)
			if err != nil {
				b.Fatal(err)
			}
			var d Decision
			now := epoch
			for _, k := range insert {
				now += benchStep
				if e.Admit(&Request{Tenant: k, Tier: "free", Cost: 1}, now, &d); !d.Allowed() {
					b.Fatalf("setup: %v by %s", d.Verdict, d.Rule)
				}
			}
			req := Request{Tier: "free", Cost: 1}
			i := uint64(0)
			b.ReportAllocs()
			for b.Loop() {
				now += benchStep
				i++
				req.Tenant = lookup[spread(i, len(lookup))]
				e.Admit(&req, now, &d)
			}
		})
		runtime.GC()
	}
}

// BenchmarkMissFloor is what no keyed table can beat at 1M keys: hash the key, lock one of 64
// shards, probe an open-addressing table of 64-byte lines holding the key in place, store
// into the line, unlock; no algorithm, no Result. Same keys, layout (64 × 32768 lines, half
// full) and lookups (copies, in cache) as BenchmarkKeyed/1M-keys-in-cache. /then-arithmetic
// adds four steps of arithmetic on the word read from the line (about 30 instructions), as
// any algorithm's update adds more: see bench/README.md, limiter, for what that costs.
func BenchmarkMissFloor(b *testing.B) {
	insert, lookup := benchKeySet(benchKeys)
	lookup = keyStream(lookup)
	type line struct {
		n, tag uint32
		key    [inlineKey]byte
		word   int64
		_      [2]int64
	}
	type floorShard struct {
		mu    sync.Mutex
		lines []line
		_     [64 - 32]byte
	}
	shards := make([]floorShard, shardCount)
	for i := range shards {
		shards[i].lines = make([]line, 2*benchKeys/shardCount)
	}
	// probe returns key's line in sh, or the empty line that ends its run.
	probe := func(sh *floorShard, key string, h uint64) *line {
		m := uint32(len(sh.lines) - 1)
		for i := uint32(h>>32) & m; ; i = (i + 1) & m {
			l := &sh.lines[i]
			if l.n == 0 || l.tag == uint32(h>>32) && int(l.n) == len(key)+1 && string(l.key[:len(key)]) == key {
				return l
			}
		}
	}
	for _, k := range insert {
		h := keyHash(k)
		l := probe(&shards[h%shardCount], k, h)
		l.n, l.tag = uint32(len(k))+1, uint32(h>>32)
		copy(l.key[:], k)
	}
	for _, steps := range []int{0, 4} {
		name := "one-line"
		if steps > 0 {
			name = "one-line-then-arithmetic"
		}
		b.Run(name, func(b *testing.B) {
			runKeyed(b, lookup, false, func(key string, now int64) bool {
				h := keyHash(key)
				sh := &shards[h%shardCount]
				sh.mu.Lock()
				l := probe(sh, key, h)
				x := l.word
				for range steps {
					x = x*3 + now ^ x>>7
				}
				l.word = x
				sh.mu.Unlock()
				return l.n != 0
			})
		})
	}
}

// BenchmarkFreeze is what a snapshot holds Apply for: copying a million GCRA keys
// (Engine.Freeze); the encoding runs later, beside Apply.
func BenchmarkFreeze(b *testing.B) {
	e, err := NewEngine([]Rule{{Name: "per-key", Scope: PerTenant, MaxKeys: 2 * benchKeys,
		Algorithm: GCRA{Rate: Rate{N: 1000, Per: time.Second}, Burst: 1000}}})
	if err != nil {
		b.Fatal(err)
	}
	insert, _ := benchKeySet(benchKeys)
	var d Decision
	for _, k := range insert {
		e.Admit(&Request{Tenant: k, Cost: 1}, epoch, &d)
	}
	for b.Loop() {
		e.Freeze()
	}
}
