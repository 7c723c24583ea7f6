package limiter

import (
	"math/bits"
	"sync"
)

const shardCount = 64

// Sharded is a keyed limiter for one algorithm that is safe for concurrent use, for callers
// outside the replicated state machine (an edge pre-limit per client IP, a load generator).
// Keys are spread over 64 lock-striped tables by a fixed hash, so which keys share a table,
// and when a table is full, does not depend on the process.
type Sharded struct {
	shards [shardCount]shard
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
	s := &Sharded{}
	for i := range s.shards {
		s.shards[i].t = alg.newTable(per)
	}
	return s, nil
}

func (s *Sharded) shard(key string) *shard {
	return &s.shards[shardHash(key)%shardCount]
}

// shardHash is a fixed multiply-mix hash, 8 bytes at a time: the same in every process, and
// a few nanoseconds for a typical key.
func shardHash(key string) uint64 {
	const m = 0x9E3779B97F4A7C15
	h := uint64(len(key)) * m
	for ; len(key) >= 8; key = key[8:] {
		v := uint64(key[0]) | uint64(key[1])<<8 | uint64(key[2])<<16 | uint64(key[3])<<24 |
			uint64(key[4])<<32 | uint64(key[5])<<40 | uint64(key[6])<<48 | uint64(key[7])<<56
		hi, lo := bits.Mul64(h^v, m)
		h = hi ^ lo
	}
	var v uint64
	for i := 0; i < len(key); i++ {
		v |= uint64(key[i]) << (8 * i)
	}
	hi, lo := bits.Mul64(h^v, m)
	return hi ^ lo ^ (hi >> 29)
}

// Admit decides a hit of cost on key at now and charges it if allowed.
func (s *Sharded) Admit(key string, now, cost int64) Result {
	sh := s.shard(key)
	sh.mu.Lock()
	res := sh.t.admit(key, now, cost)
	sh.mu.Unlock()
	return res
}

// Check decides like Admit without charging.
func (s *Sharded) Check(key string, now, cost int64) Result {
	sh := s.shard(key)
	sh.mu.Lock()
	res, _ := sh.t.evaluate(key, now, cost, false)
	sh.mu.Unlock()
	return res
}

// Refund gives back cost units charged on key at time at; on a Concurrency cap it releases
// them.
func (s *Sharded) Refund(key string, now, at, cost int64) {
	sh := s.shard(key)
	sh.mu.Lock()
	sh.t.refund(key, now, at, cost)
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
