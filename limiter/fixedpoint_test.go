package limiter

import (
	"math"
	"math/big"
	"testing"

	"pgregory.net/rapid"
)

func TestFixedPointMatchesBigIntegers(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		a := rapid.Int64Range(0, math.MaxInt64).Draw(t, "a")
		b := rapid.Int64Range(0, math.MaxInt64).Draw(t, "b")
		c := rapid.Int64Range(0, math.MaxInt64).Draw(t, "c")
		d := rapid.Int64Range(1, math.MaxInt64).Draw(t, "d")
		prod := new(big.Int).Mul(big.NewInt(a), big.NewInt(b))
		maxI := big.NewInt(math.MaxInt64)
		check := func(name string, num *big.Int, q, r int64, ok bool) {
			wq, wr := new(big.Int).DivMod(num, big.NewInt(d), new(big.Int))
			if wantOK := wq.Cmp(maxI) <= 0; ok != wantOK || ok && (q != wq.Int64() || r != wr.Int64()) {
				t.Fatalf("%s(%d, %d, %d, %d) = %d, %d, %v; want %v, %v", name, a, b, c, d, q, r, ok, wq, wr)
			}
		}
		q, r, ok := mulAddDivMod(a, b, c, d)
		check("mulAddDivMod", new(big.Int).Add(prod, big.NewInt(c)), q, r, ok)
		if prod.Cmp(big.NewInt(c)) >= 0 {
			q, r, ok = mulSubDivMod(a, b, c, d)
			check("mulSubDivMod", new(big.Int).Sub(prod, big.NewInt(c)), q, r, ok)
		}
		if got, want := mulGE(a, b, c), prod.Cmp(big.NewInt(c)) >= 0; got != want {
			t.Fatalf("mulGE(%d, %d, %d) = %v", a, b, c, got)
		}
		x := rapid.Int64Range(0, math.MaxInt64).Draw(t, "x")
		xd := new(big.Int).Mul(big.NewInt(x), big.NewInt(d))
		if got, want := mulAddGEMul(a, b, c, x, d), new(big.Int).Add(prod, big.NewInt(c)).Cmp(xd) >= 0; got != want {
			t.Fatalf("mulAddGEMul(%d, %d, %d, %d, %d) = %v", a, b, c, x, d, got)
		}
	})
}
