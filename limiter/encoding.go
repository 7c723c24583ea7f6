package limiter

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// States and snapshots are encoded as varints in a fixed field order: deterministic, compact,
// and identical on every replica for an identical state.

// State tags open every exported state encoding, so that a state is never decoded as another
// algorithm's.
const (
	tagTokenBucket byte = iota + 1
	tagGCRA
	tagLeakyQueue
	tagFixedWindow
	tagSlidingLog
	tagSlidingCounter
	tagConcurrency
	tagQuota
)

func appendInts(b []byte, vs ...int64) []byte {
	for _, v := range vs {
		b = binary.AppendVarint(b, v)
	}
	return b
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

var errTruncated = errors.New("truncated input")

// decoder reads what append* wrote; the first error sticks and later reads return zeros.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(err error) {
	if d.err == nil {
		d.err = err
	}
}

func (d *decoder) int() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail(errTruncated)
		return 0
	}
	d.b = d.b[n:]
	return v
}

// count reads a length that must be at most limit and at most the bytes left divided by
// minSize, so a corrupt length never makes the decoder allocate more than the input justifies.
func (d *decoder) count(limit int, minSize int) int {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail(errTruncated)
		return 0
	}
	d.b = d.b[n:]
	if v > uint64(limit) || v > uint64(len(d.b)/minSize) {
		d.fail(fmt.Errorf("count %d exceeds the limit %d or the %d bytes left", v, limit, len(d.b)))
		return 0
	}
	return int(v)
}

func (d *decoder) string() string {
	n := d.count(len(d.b), 1)
	if d.err != nil {
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

func (d *decoder) tag(want byte) {
	if d.err != nil {
		return
	}
	if len(d.b) == 0 {
		d.fail(errTruncated)
		return
	}
	if d.b[0] != want {
		d.fail(fmt.Errorf("state tag %d, want %d", d.b[0], want))
		return
	}
	d.b = d.b[1:]
}

// finish returns the first error, or one for trailing bytes.
func (d *decoder) finish() error {
	if d.err == nil && len(d.b) != 0 {
		d.err = fmt.Errorf("%d trailing bytes", len(d.b))
	}
	return d.err
}

// check fails the decoder with msg unless ok.
func (d *decoder) check(ok bool, format string, args ...any) {
	if !ok && d.err == nil {
		d.err = fmt.Errorf(format, args...)
	}
}
