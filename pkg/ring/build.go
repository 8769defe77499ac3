package ring

import (
	"runtime"
	"slices"
	"strings"
	"sync"

	"github.com/cespare/xxhash/v2"
)

// group is the backends of one weight, in ascending index order, so that a
// strict > keeps the smaller index (smaller ID) on equal draws.
type group struct {
	w     uint64
	idx   []int
	seeds []uint64 // seeds[k] belongs to idx[k]; contiguous for the hot loop
}

func (r *hrwRing) groups() []group {
	var gs []group
	for i, b := range r.backends {
		w := uint64(b.Weight)
		k := slices.IndexFunc(gs, func(g group) bool { return g.w == w })
		if k < 0 {
			gs = append(gs, group{w: w})
			k = len(gs) - 1
		}
		gs[k].idx = append(gs[k].idx, i)
		gs[k].seeds = append(gs[k].seeds, r.seeds[i])
	}
	return gs
}

// owner evaluates the placement rule for bucket b. Within a group the winner
// is the largest draw (see beats), so negLog2 runs once per weight group,
// not once per backend; with one weight it never runs.
func (r *hrwRing) owner(b uint64, gs []group) int {
	c := (b + 1) * gamma
	var best cand
	for gi := range gs {
		g := &gs[gi]
		k, bu := maxDraw(g.seeds, c)
		cd := cand{i: g.idx[k], w: g.w, u: bu}
		if gi == 0 || beats(&cd, &best) {
			best = cd
		}
	}
	return best.i
}

// maxDraw returns the position and value of the largest draw among seeds
// for the bucket whose increment is c = (b+1)*gamma; the first wins ties.
// It is a small leaf so the hot loop keeps its variables in registers: the
// build is O(M*N) of this. It only reads its arguments, so the race
// detector has nothing to check here and would slow builds tenfold.
//
//go:noinline
//go:norace
func maxDraw(seeds []uint64, c uint64) (k int, best uint64) {
	best = mix(seeds[0] + c)
	for j := 1; j < len(seeds); j++ {
		z := mix(seeds[j] + c)
		// Written for conditional moves: with few backends a branch here
		// mispredicts often enough to double the build time.
		better := z > best
		k = cmov(better, j, k)
		best = cmov(better, z, best)
	}
	return k, best
}

// parallel runs f over [0, numBuckets) split across GOMAXPROCS goroutines:
// every build visits all 2^20 buckets, which dwarfs starting a goroutine.
// Buckets are independent, so the result does not depend on the split.
func parallel(f func(lo, hi int)) {
	workers := min(runtime.GOMAXPROCS(0), 64)
	var wg sync.WaitGroup
	chunk := numBuckets / workers
	for w := range workers {
		lo, hi := w*chunk, (w+1)*chunk
		if w == workers-1 {
			hi = numBuckets
		}
		wg.Go(func() { f(lo, hi) })
	}
	wg.Wait()
}

func newHRW(bs []Backend, prev *hrwRing) *hrwRing {
	r := &hrwRing{backends: bs, seeds: make([]uint64, len(bs))}
	for i, b := range bs {
		r.seeds[i] = xxhash.Sum64String(b.ID)
	}
	if len(bs) == 0 {
		return r
	}
	keep, fresh := r.diff(prev)
	if keep != nil && len(fresh) == 0 && !slices.Contains(keep, -1) {
		r.table = prev.table // same IDs and weights: same placement; tables are never written after build
		return r
	}
	r.table = make([]uint16, numBuckets)
	gs := r.groups()
	if keep == nil {
		parallel(func(lo, hi int) {
			for b := lo; b < hi; b++ {
				r.table[b] = uint16(r.owner(uint64(b), gs))
			}
		})
		return r
	}
	parallel(func(lo, hi int) {
		for b := lo; b < hi; b++ {
			k := keep[prev.table[b]]
			switch {
			case k < 0: // owner gone or re-weighted: evaluate from scratch
				r.table[b] = uint16(r.owner(uint64(b), gs))
				continue
			case len(fresh) == 0:
				r.table[b] = uint16(k)
				continue
			}
			best := cand{i: k, w: uint64(bs[k].Weight), u: draw(uint64(b), r.seeds[k])}
			for _, f := range fresh {
				c := cand{i: f, w: uint64(bs[f].Weight), u: draw(uint64(b), r.seeds[f])}
				if beats(&c, &best) {
					best = c
				}
			}
			r.table[b] = uint16(best.i)
		}
	})
	return r
}

// diff maps prev's indexes to r's (-1: removed or re-weighted) and lists r's
// backends that prev did not have with the same weight. A nil keep means a
// full build is cheaper.
func (r *hrwRing) diff(prev *hrwRing) (keep, fresh []int) {
	if prev == nil || prev.table == nil {
		return nil, nil
	}
	keep = make([]int, len(prev.backends))
	i, j := 0, 0 // both sorted by ID: merge
	for i < len(prev.backends) || j < len(r.backends) {
		c := 1
		switch {
		case i == len(prev.backends):
		case j == len(r.backends):
			c = -1
		default:
			c = strings.Compare(prev.backends[i].ID, r.backends[j].ID)
		}
		switch {
		case c < 0:
			keep[i] = -1
			i++
		case c > 0:
			fresh = append(fresh, j)
			j++
		case prev.backends[i].Weight == r.backends[j].Weight:
			keep[i] = j
			i, j = i+1, j+1
		default:
			keep[i] = -1
			fresh = append(fresh, j)
			i, j = i+1, j+1
		}
	}
	if 2*(len(fresh)+1) > len(r.backends) {
		return nil, nil
	}
	return keep, fresh
}

func cmov[T int | uint64](c bool, a, b T) T {
	if c {
		return a
	}
	return b
}
