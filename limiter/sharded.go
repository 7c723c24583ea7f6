package limiter

import "sync"

const shardCount = 64

// Sharded is a keyed limiter for one algorithm that is safe for concurrent use, for callers
// outside the replicated state machine (an edge pre-limit per client IP, a load generator).
// Keys are spread over 64 lock-striped tables by a hash seeded at random per process (so
// that crafted keys cannot pile into one table); each table holds up to maxKeys/64 keys.
type Sharded struct {
	shards [shardCount]shard
	limit  int64
}

type shard struct {
	mu sync.Mutex
	t  table
	_  [64 - 24]byte // one cache line per shard: no false sharing between locks
}

// NewSharded returns an empty Sharded limiter holding up to about maxKeys keys
// (DefaultMaxKeys when 0), maxKeys/64 per shard; past that, new keys share each shard's
// overflow state as in an Engine rule.
func NewSharded(alg Algorithm, maxKeys int) (*Sharded, error) {
	if err := alg.Validate(); err != nil {
		return nil, err
	}
	if maxKeys <= 0 {
		maxKeys = DefaultMaxKeys
	}
	per := (maxKeys + shardCount - 1) / shardCount
	s := &Sharded{limit: alg.limit()}
	for i := range s.shards {
		s.shards[i].t = alg.newTable(per)
	}
	return s, nil
}

// shard returns key's shard and key hashed: shards are picked by the hash's low bits and a
// shard's table files keys by its upper 32, so one hash serves both.
func (s *Sharded) shard(key string) (*shard, hkey) {
	k := hashed(key)
	return &s.shards[k.h%shardCount], k
}

// Admit decides a hit of cost on key at now and charges it if allowed.
func (s *Sharded) Admit(key string, now, cost int64) (r Result) {
	sh, k := s.shard(key)
	sh.mu.Lock()
	v := sh.t.admit(k, now, cost)
	sh.mu.Unlock()
	v.fill(&r, s.limit, now)
	return r
}

// Check decides like Admit without charging.
func (s *Sharded) Check(key string, now, cost int64) (r Result) {
	sh, k := s.shard(key)
	sh.mu.Lock()
	v, _ := sh.t.evaluate(k, now, cost, false)
	sh.mu.Unlock()
	v.fill(&r, s.limit, now)
	return r
}

// Refund gives back cost units charged on key at time at; on a Concurrency cap it releases
// them.
func (s *Sharded) Refund(key string, now, at, cost int64) {
	sh, k := s.shard(key)
	sh.mu.Lock()
	sh.t.refund(k, now, at, cost)
	sh.mu.Unlock()
}

// Sweep drops idle keys (see Engine.Sweep) and returns how many.
func (s *Sharded) Sweep(now int64) int {
	n := 0
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		n += sh.t.sweep(now)
		sh.mu.Unlock()
	}
	return n
}

// Len returns how many keys are held.
func (s *Sharded) Len() int {
	n := 0
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		n += sh.t.len()
		sh.mu.Unlock()
	}
	return n
}
