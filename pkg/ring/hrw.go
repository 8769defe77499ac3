package ring

import (
	"math/bits"

	"github.com/cespare/xxhash/v2"
)

// Placement constants; changing any of them moves devices (see doc.go).
const (
	bucketBits = 20                 // M = 2^20 buckets
	numBuckets = 1 << bucketBits    // table entries (2 MiB of uint16)
	gamma      = 0x9e3779b97f4a7c15 // SplitMix64 increment
	mixMul1    = 0xbf58476d1ce4e5b9 // SplitMix64 (Stafford variant 13) multiplier 1
	mixMul2    = 0x94d049bb133111eb // and 2
	fracBits   = 32                 // L is fixed point with 32 fractional bits
)

// hrwRing is weighted rendezvous hashing evaluated once per bucket at build
// time, so Lookup is one hash and one table load.
type hrwRing struct {
	backends []Backend // sorted by ID: index order is the tie-break order
	seeds    []uint64  // xxhash64(ID) per backend
	table    []uint16  // bucket -> owner index; nil when empty
}

func (r *hrwRing) Lookup(key []byte) int {
	if r.table == nil {
		return -1
	}
	return int(r.table[xxhash.Sum64(key)>>(64-bucketBits)])
}

func (r *hrwRing) Backends() []Backend { return r.backends }
func (r *hrwRing) Len() int            { return len(r.backends) }
func (r *hrwRing) Mode() Mode          { return ModeConsistent }

func (r *hrwRing) Shares() []float64 {
	out := make([]float64, len(r.backends))
	for _, owner := range r.table {
		out[owner]++
	}
	for i := range out {
		out[i] /= float64(len(r.table))
	}
	return out
}

// draw is the pseudo-random value u of backend seed s for bucket b: the
// (b+1)-th output of SplitMix64 seeded with s (Java: new SplittableRandom(s)).
func draw(b, s uint64) uint64 {
	return mix(s + (b+1)*gamma)
}

// mix is SplitMix64's output function (Java: SplittableRandom.mix64).
func mix(z uint64) uint64 {
	z = (z ^ z>>30) * mixMul1
	z = (z ^ z>>27) * mixMul2
	return z ^ z>>31
}

// negLog2 returns -log2(u / 2^64) in fixed point with fracBits fractional
// bits, by an integer-only algorithm a Java or Lua port reproduces exactly:
// leading-zero count for the integer part, then bit-by-bit squaring of a
// 31-bit mantissa (y*y < 2^62, so signed 64-bit arithmetic suffices).
// It is non-increasing in u and always >= 1.
func negLog2(u uint64) uint64 {
	e, y := mantissa(u) // u = 2^e * y/2^30
	var frac uint64
	for range fracBits {
		y = y * y >> 30 // in [2^30, 2^32): the square of the mantissa
		bit := y >> 31  // 1 when the square is >= 2 (branch-free: bits are random)
		frac = frac<<1 | bit
		y >>= bit
	}
	return uint64(64-e)<<fracBits - frac
}

// mantissa returns e = floor(log2 u) and u/2^e in [1,2) as Q30, with 0 read as 1.
func mantissa(u uint64) (e uint, y uint64) {
	if u == 0 {
		u = 1 // -log2(0) is infinite; the next worst value will do
	}
	e = uint(63 - bits.LeadingZeros64(u))
	if e >= 30 {
		return e, u >> (e - 30)
	}
	return e, u << (30 - e)
}

// cand is one backend's draw for a bucket.
type cand struct {
	i int
	w uint64
	u uint64
}

// beats reports whether a ranks before b: smaller L/w (the weighted
// exponential race), then larger u, then smaller index (smaller ID).
// For equal weights that is exactly "larger u, then smaller index", because
// L is non-increasing in u, so logarithms are needed only across weights.
func beats(a, b *cand) bool {
	if a.w != b.w {
		// Dominance needs no logarithm: L is non-increasing in u and >= 1.
		if a.w > b.w && a.u >= b.u {
			return true
		}
		if a.w < b.w && a.u <= b.u {
			return false
		}
		if c := cmpLW(a.u, a.w, b.u, b.w); c != 0 {
			return c < 0
		}
	}
	if a.u != b.u {
		return a.u > b.u
	}
	return a.i < b.i
}

// cmpLW returns the sign of negLog2(ua)*wb - negLog2(ub)*wa. negLog2 emits
// fraction bits most significant first, so after k bits each L is known to
// within 2^(fracBits-k); the loop stops as soon as the two products'
// intervals separate, typically after a few bits instead of fracBits.
// w < 2^14 and L <= 2^38: the products fit in 52 bits.
func cmpLW(ua, wa, ub, wb uint64) int {
	ea, ya := mantissa(ua)
	eb, yb := mantissa(ub)
	hiA, hiB := uint64(64-ea)<<fracBits, uint64(64-eb)<<fracBits // L = hi - frac
	var fa, fb uint64                                            // fraction bits so far
	for k := 0; ; k++ {
		s := uint(fracBits - k) // frac is in [f<<s, f<<s + 2^s - 1]
		maxA, maxB := (hiA-fa<<s)*wb, (hiB-fb<<s)*wa
		minA, minB := maxA-(1<<s-1)*wb, maxB-(1<<s-1)*wa
		switch {
		case maxA < minB:
			return -1
		case minA > maxB:
			return 1
		case k == fracBits:
			return 0
		}
		ya = ya * ya >> 30
		yb = yb * yb >> 30
		ba, bb := ya>>31, yb>>31
		fa, fb = fa<<1|ba, fb<<1|bb
		ya >>= ba
		yb >>= bb
	}
}

// Owners ranks every backend for the key's bucket by the placement order
// and appends the first n. It keeps the top n in a small array (no heap
// allocation for n <= 8 beyond growing dst).
func (r *hrwRing) Owners(key []byte, n int, dst []int) []int {
	n = min(n, len(r.backends))
	if n <= 0 {
		return dst
	}
	b := xxhash.Sum64(key) >> (64 - bucketBits)
	var buf [8]cand
	top := buf[:0]
	if n > len(buf) {
		top = make([]cand, 0, n)
	}
	for i, s := range r.seeds {
		c := cand{i: i, w: uint64(r.backends[i].Weight), u: draw(b, s)}
		if len(top) == n && !beats(&c, &top[n-1]) {
			continue
		}
		if len(top) < n {
			top = append(top, c)
		} else {
			top[n-1] = c
		}
		for k := len(top) - 1; k > 0 && beats(&top[k], &top[k-1]); k-- {
			top[k], top[k-1] = top[k-1], top[k]
		}
	}
	for _, c := range top {
		dst = append(dst, c.i)
	}
	return dst
}
