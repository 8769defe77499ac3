package ring

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"testing"

	"github.com/cespare/xxhash/v2"
)

const figureKeys = 1_000_000

// forKeys calls fn with n device ids from a fixed-seed PRNG, so every run
// sees the same ids. The slice is reused: fn must not keep it.
func forKeys(n int, fn func(key []byte)) {
	rng := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 0, 32)
	for range n {
		buf = append(buf[:0], "dev-"...)
		buf = strconv.AppendUint(buf, rng.Uint64(), 16)
		fn(buf)
	}
}

func backendsN(n, weight int) []Backend {
	bs := make([]Backend, n)
	for i := range bs {
		bs[i] = Backend{ID: fmt.Sprintf("netty-%02d", i), Addr: fmt.Sprintf("10.0.0.%d:9000", i+1), Weight: uint32(weight)}
	}
	return bs
}

func mustNew(t testing.TB, mode Mode, bs []Backend) Ring {
	t.Helper()
	r, err := New(mode, bs)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// keyBuckets is how many of the figureKeys ids fall in each bucket. A
// consistent ring's Lookup is table[bucket] (TestFiguresBalance checks it
// once), so the other figures need one pass over the ids, not one per ring.
var keyBuckets = sync.OnceValue(func() []uint32 {
	h := make([]uint32, numBuckets)
	forKeys(figureKeys, func(k []byte) { h[xxhash.Sum64(k)>>(64-bucketBits)]++ })
	return h
})

// counts is the number of figureKeys ids each backend of r owns.
func counts(r Ring) []int {
	c := make([]int, r.Len())
	for b, n := range keyBuckets() {
		c[r.(*hrwRing).table[b]] += int(n)
	}
	return c
}

func maxOverMean(c []int) float64 {
	sum := 0
	for _, v := range c {
		sum += v
	}
	return float64(slices.Max(c)) * float64(len(c)) / float64(sum)
}

func TestFiguresBalance(t *testing.T) {
	t.Parallel()
	r := mustNew(t, ModeConsistent, backendsN(10, 0))
	c := make([]int, r.Len())
	forKeys(figureKeys, func(k []byte) { c[r.Lookup(k)]++ })
	if !slices.Equal(c, counts(r)) {
		t.Fatal("Lookup disagrees with table[bucket]")
	}
	got := maxOverMean(c)
	t.Logf("balance: 10 backends, %d keys: max/mean %.4f (min %d, max %d)", figureKeys, got, slices.Min(c), slices.Max(c))
	if got > 1.05 {
		t.Errorf("max/mean = %.4f, want <= 1.05", got)
	}
	if raceEnabled || testing.Short() {
		return
	}
	// Bucket share bounds the imbalance with unlimited devices.
	for _, n := range []int{10, 100} {
		h := mustNew(t, ModeConsistent, backendsN(n, 0)).(*hrwRing)
		bc := make([]int, n)
		for _, o := range h.table {
			bc[o]++
		}
		t.Logf("balance: %d backends: buckets per backend max/mean %.4f", n, maxOverMean(bc))
	}
}

func TestFiguresDisruption(t *testing.T) {
	t.Parallel()
	bs := backendsN(11, 0)
	r10 := mustNew(t, ModeConsistent, bs[:10])
	r11 := mustNew(t, ModeConsistent, bs)
	const gone = 3
	r9 := mustNew(t, ModeConsistent, slices.Delete(slices.Clone(bs[:10]), gone, gone+1))
	removed, added := bs[gone].ID, bs[10].ID
	id := func(r Ring, b int) string { return r.Backends()[r.(*hrwRing).table[b]].ID }

	var removedOwn, removedMoved, otherMoved, moved, movedElsewhere int
	for b, n := range keyBuckets() {
		n := int(n)
		before := id(r10, b)
		if after := id(r9, b); before == removed {
			removedOwn += n
			if after != before {
				removedMoved += n
			}
		} else if after != before {
			otherMoved += n
		}
		if after := id(r11, b); after != before {
			moved += n
			if after != added {
				movedElsewhere += n
			}
		}
	}
	t.Logf("disruption: remove 1 of 10: %d keys of the removed backend moved, %d others moved", removedMoved, otherMoved)
	t.Logf("disruption: add 11th: %d of %d keys moved (%.4f, ideal 1/11 = %.4f), %d not to the new backend",
		moved, figureKeys, float64(moved)/figureKeys, 1.0/11, movedElsewhere)
	if otherMoved != 0 || removedMoved != removedOwn {
		t.Errorf("removal moved %d keys not owned by the removed backend", otherMoved)
	}
	if limit := 1.1 * figureKeys / 11; float64(moved) > limit {
		t.Errorf("addition moved %d keys, want <= %.0f", moved, limit)
	}
	if movedElsewhere != 0 {
		t.Errorf("addition moved %d keys between old backends", movedElsewhere)
	}
}

func TestFiguresWeights(t *testing.T) {
	t.Parallel()
	bs := backendsN(10, 1)
	bs[7].Weight = 2
	r := mustNew(t, ModeConsistent, bs)
	c := counts(r)
	var one int
	for i, v := range c {
		if i != 7 {
			one += v
		}
	}
	ratio := float64(c[7]) / (float64(one) / 9)
	t.Logf("weights: weight 2 vs mean of nine weight 1: ratio %.4f (want 2 +/- 5%%)", ratio)
	if ratio < 1.9 || ratio > 2.1 {
		t.Errorf("ratio = %.4f, want 2 +/- 5%%", ratio)
	}

	// Mixed weights: each share within 5% of weight/sum.
	ws := []uint32{1, 2, 3, 50, 100, 100, 250, 500}
	mixed := backendsN(len(ws), 0)
	var sum uint32
	for i := range mixed {
		mixed[i].Weight = ws[i]
		sum += ws[i]
	}
	c = counts(mustNew(t, ModeConsistent, mixed))
	for i, w := range ws[3:] {
		want := float64(w) / float64(sum) * figureKeys
		got := float64(c[i+3])
		t.Logf("weights: weight %3d: %6.0f keys, expected %6.0f (%.4f)", w, got, want, got/want)
		if got/want < 0.95 || got/want > 1.05 {
			t.Errorf("weight %d got %.0f keys, want %.0f +/- 5%%", w, got, want)
		}
	}
}

func TestFiguresCRC32Mod(t *testing.T) {
	t.Parallel()
	bs := backendsN(11, 0)
	r10 := mustNew(t, ModeCRC32Mod, bs[:10])
	r11 := mustNew(t, ModeCRC32Mod, bs)
	moved := 0
	forKeys(figureKeys, func(k []byte) {
		if r10.Lookup(k) != r11.Lookup(k) {
			moved++
		}
	})
	frac := float64(moved) / figureKeys
	t.Logf("crc32-mod: adding an 11th backend moved %.4f of keys (N/(N+1) = %.4f; consistent: ~1/11)", frac, 10.0/11)
	if frac < 0.85 {
		t.Errorf("crc32-mod moved only %.4f; the doc claims ~N/(N+1)", frac)
	}
}
