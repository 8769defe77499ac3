package ring

import (
	"fmt"
	"testing"
)

func benchKeys() [][]byte {
	var keys [][]byte
	forKeys(4096, func(k []byte) { keys = append(keys, append([]byte(nil), k...)) })
	return keys
}

func BenchmarkLookup(b *testing.B) {
	for _, m := range []Mode{ModeConsistent, ModeCRC32Mod} {
		b.Run(string(m), func(b *testing.B) {
			r := mustNew(b, m, backendsN(10, 0))
			keys := benchKeys()
			b.ReportAllocs()
			sum := 0
			for i := 0; b.Loop(); i++ {
				sum += r.Lookup(keys[i&4095])
			}
			_ = sum
		})
	}
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
