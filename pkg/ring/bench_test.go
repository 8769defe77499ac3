package ring

import (
	"cmp"
	"fmt"
	"hash/crc32"
	"slices"
	"testing"
)

func benchKeys() [][]byte {
	var keys [][]byte
	forKeys(4096, func(k []byte) { keys = append(keys, append([]byte(nil), k...)) })
	return keys
}

// BenchmarkLookup is a lookup among 10 backends: impl=hrw is the ring
// devgate routes on, next to crc32-mod (the OpenResty setup it replaces,
// not consistent) and ketama (a sorted ring of 160 points per backend, the
// usual consistent hash), in one run for benchstat.
func BenchmarkLookup(b *testing.B) {
	keys := benchKeys()
	bench := func(name string, lookup func([]byte) int) {
		b.Run("impl="+name, func(b *testing.B) {
			b.ReportAllocs()
			sum := 0
			for i := 0; b.Loop(); i++ {
				sum += lookup(keys[i&4095])
			}
			_ = sum
		})
	}
	bench("hrw", mustNew(b, ModeConsistent, backendsN(10, 0)).Lookup)
	bench("crc32-mod", mustNew(b, ModeCRC32Mod, backendsN(10, 0)).Lookup)
	bench("ketama", newKetama(10, 160).lookup)
}

// ketama is the baseline consistent hash: crc32 points on a circle.
type ketama struct {
	points []uint32
	owner  []int
}

func newKetama(n, per int) *ketama {
	type pt struct {
		h     uint32
		owner int
	}
	var pts []pt
	for i := range n {
		for j := range per {
			pts = append(pts, pt{crc32.ChecksumIEEE(fmt.Appendf(nil, "backend-%d-%d", i, j)), i})
		}
	}
	slices.SortFunc(pts, func(a, b pt) int { return cmp.Compare(a.h, b.h) })
	k := &ketama{}
	for _, p := range pts {
		k.points, k.owner = append(k.points, p.h), append(k.owner, p.owner)
	}
	return k
}

func (k *ketama) lookup(key []byte) int {
	i, _ := slices.BinarySearch(k.points, crc32.ChecksumIEEE(key))
	if i == len(k.points) {
		i = 0
	}
	return k.owner[i]
}

func BenchmarkOwners(b *testing.B) {
	for _, n := range []int{10, 100} {
		b.Run(fmt.Sprintf("N=%d/n=3", n), func(b *testing.B) {
			r := mustNew(b, ModeConsistent, backendsN(n, 0))
			keys := benchKeys()
			dst := make([]int, 0, 3)
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				dst = r.Owners(keys[i&4095], 3, dst[:0])
			}
		})
	}
}

func BenchmarkBuild(b *testing.B) {
	for _, n := range []int{10, 100, 1000} {
		bs := backendsN(n, 0)
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) {
			for b.Loop() {
				mustNew(b, ModeConsistent, bs)
			}
		})
		if n == 1000 {
			continue // +1 weight costs the same absolute time at any N
		}
		mixed := backendsN(n, 0)
		mixed[0].Weight = 200
		b.Run(fmt.Sprintf("N=%d/2weights", n), func(b *testing.B) {
			for b.Loop() {
				mustNew(b, ModeConsistent, mixed)
			}
		})
	}
}

// BenchmarkNewFrom is one backend joining a ring of N: the incremental path.
func BenchmarkNewFrom(b *testing.B) {
	for _, n := range []int{100, 1000} {
		bs := backendsN(n+1, 0)
		prev := mustNew(b, ModeConsistent, bs[:n])
		b.Run(fmt.Sprintf("N=%d/add", n), func(b *testing.B) {
			for b.Loop() {
				if _, err := NewFrom(prev, ModeConsistent, bs); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("N=%d/remove", n), func(b *testing.B) {
			for b.Loop() {
				if _, err := NewFrom(prev, ModeConsistent, bs[1:n]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
