package ring

import (
	"cmp"
	"errors"
	"hash/crc32"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
)

func TestNewValidation(t *testing.T) {
	many := make([]Backend, MaxBackends+1)
	for i := range many {
		many[i].ID = "b" + strconv.Itoa(i)
	}
	tests := []struct {
		name string
		mode Mode
		bs   []Backend
		want error
	}{
		{"empty id", "", []Backend{{ID: ""}}, ErrBadID},
		{"long id", "", []Backend{{ID: strings.Repeat("a", MaxIDLen+1)}}, ErrBadID},
		{"space", "", []Backend{{ID: "a b"}}, ErrBadID},
		{"control", "", []Backend{{ID: "a\nb"}}, ErrBadID},
		{"non-ascii", "", []Backend{{ID: "café"}}, ErrBadID},
		{"duplicate", "", []Backend{{ID: "a"}, {ID: "b"}, {ID: "a"}}, ErrDuplicateID},
		{"weight", "", []Backend{{ID: "a", Weight: MaxWeight + 1}}, ErrBadWeight},
		{"too many", "", many, ErrTooManyBackends},
		{"mode", "maglev", nil, ErrBadMode},
		{"duplicate crc", ModeCRC32Mod, []Backend{{ID: "a"}, {ID: "a"}}, ErrDuplicateID},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.mode, tc.bs)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
	r, err := New("", []Backend{{ID: strings.Repeat("~", MaxIDLen), Weight: MaxWeight}, {ID: "!", Weight: 0}})
	if err != nil {
		t.Fatal(err)
	}
	if r.Mode() != ModeConsistent || r.Backends()[0].Weight != DefaultWeight {
		t.Errorf("mode %q, weight %d: want consistent and DefaultWeight", r.Mode(), r.Backends()[0].Weight)
	}
}

func TestEmpty(t *testing.T) {
	for _, m := range []Mode{ModeConsistent, ModeCRC32Mod} {
		r := mustNew(t, m, nil)
		if r.Lookup([]byte("x")) != -1 || r.Len() != 0 || len(r.Owners([]byte("x"), 3, nil)) != 0 {
			t.Errorf("%s: empty ring must return -1 and no owners", m)
		}
	}
}

// Input order, input mutation and NewFrom history must not change placement.
func TestDeterministic(t *testing.T) {
	t.Parallel()
	bs := backendsN(12, 0)
	bs[2].Weight, bs[5].Weight = 300, 7
	bs[0].Meta = map[string]string{"k": "v"}
	a := mustNew(t, ModeConsistent, bs).(*hrwRing)
	shuffled := slices.Clone(bs)
	rand.New(rand.NewPCG(3, 4)).Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	b := mustNew(t, ModeConsistent, shuffled).(*hrwRing)
	bs[0].ID, bs[0].Meta["k"] = "changed", "changed"
	if !slices.Equal(a.table, b.table) {
		t.Fatal("input order changed the table")
	}
	if a.backends[0].ID != "netty-00" || a.backends[0].Meta["k"] != "v" {
		t.Fatal("ring shares memory with its input")
	}
	// Only the weight ratio matters: 1:2 places like 100:200.
	x := mustNew(t, ModeConsistent, []Backend{{ID: "a", Weight: 1}, {ID: "b", Weight: 2}}).(*hrwRing)
	y := mustNew(t, ModeConsistent, []Backend{{ID: "a", Weight: 100}, {ID: "b", Weight: 200}}).(*hrwRing)
	if !slices.Equal(x.table, y.table) {
		t.Fatal("weights 1:2 and 100:200 place differently")
	}
}

func TestNewFromMatchesNew(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(5, 6))
	pool := backendsN(14, 0)
	cur, next := slices.Clone(pool[:8]), 8
	prev := mustNew(t, ModeConsistent, cur)
	steps := []string{"add", "remove+reweight", "add+remove", "meta"}
	for _, step := range steps {
		if strings.Contains(step, "add") {
			cur = append(cur, pool[next])
			next++
		}
		if strings.Contains(step, "remove") {
			i := rng.IntN(len(cur))
			cur = slices.Delete(cur, i, i+1)
		}
		switch step {
		case "remove+reweight":
			cur[rng.IntN(len(cur))].Weight = 250
		case "meta":
			cur[0].Addr = "10.9.9.9:9000"
		}
		inc, err := NewFrom(prev, ModeConsistent, cur)
		if err != nil {
			t.Fatal(err)
		}
		full := mustNew(t, ModeConsistent, cur)
		if !slices.Equal(inc.(*hrwRing).table, full.(*hrwRing).table) {
			t.Fatalf("%s: NewFrom differs from New", step)
		}
		if step == "meta" && &inc.(*hrwRing).table[0] != &prev.(*hrwRing).table[0] {
			t.Error("NewFrom with only Addr changed should share the table")
		}
		if inc.Backends()[0].Addr != cur[0].Addr {
			t.Error("NewFrom kept stale backend fields")
		}
		prev = inc
	}
}

func TestOwners(t *testing.T) {
	t.Parallel()
	bs := backendsN(12, 0)
	bs[1].Weight, bs[4].Weight, bs[9].Weight = 1, 400, 10000
	r := mustNew(t, ModeConsistent, bs)
	dst := make([]int, 0, 16)
	forKeys(2000, func(k []byte) {
		all := r.Owners(k, 100, dst[:0])
		if len(all) != len(bs) || all[0] != r.Lookup(k) {
			t.Fatalf("Owners(%q) = %v, Lookup = %d", k, all, r.Lookup(k))
		}
		if s := slices.Sorted(slices.Values(all)); !slices.Equal(s, []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}) {
			t.Fatalf("Owners(%q) = %v is not a permutation", k, all)
		}
		for n := 0; n <= 9; n += 3 {
			if got := r.Owners(k, n, nil); !slices.Equal(got, all[:n]) && n > 0 {
				t.Fatalf("Owners(%q, %d) = %v, not a prefix of %v", k, n, got, all)
			}
		}
	})
	// Fallback order is removal order: without the owner, the second owner owns the key.
	without := mustNew(t, ModeConsistent, slices.Delete(slices.Clone(r.Backends()), 9, 10))
	forKeys(2000, func(k []byte) {
		o := r.Owners(k, 2, dst[:0])
		if o[0] == 9 && without.Backends()[without.Lookup(k)].ID != r.Backends()[o[1]].ID {
			t.Fatalf("key %q: second owner %d is not the owner once %d is gone", k, o[1], o[0])
		}
	})
}

func TestNegLog2(t *testing.T) {
	for _, tc := range []struct{ u, want uint64 }{
		{1 << 63, 1 << fracBits}, {1 << 62, 2 << fracBits}, {1, 64 << fracBits}, {0, 64 << fracBits}, {math.MaxUint64, 3}, // truncation: exact is ~0, and L stays >= 1
	} {
		if got := negLog2(tc.u); got != tc.want {
			t.Errorf("negLog2(%#x) = %#x, want %#x", tc.u, got, tc.want)
		}
	}
	rng := rand.New(rand.NewPCG(7, 8))
	for range 100000 {
		u, v := rng.Uint64()>>rng.UintN(64), rng.Uint64()>>rng.UintN(64)
		if u > v {
			u, v = v, u
		}
		lu, lv := negLog2(u), negLog2(v)
		if lu < lv {
			t.Fatalf("not monotone: negLog2(%#x)=%d < negLog2(%#x)=%d", u, lu, v, lv)
		}
		if u == 0 {
			continue
		}
		exact := 64 - math.Log2(float64(u))
		if d := math.Abs(float64(lu)/(1<<fracBits) - exact); d > 1e-7 {
			t.Fatalf("negLog2(%#x) off by %g", u, d)
		}
	}
}

// cmpLW stops early; it must agree with the full logarithms, ties included.
func TestCmpLW(t *testing.T) {
	sign := func(x, y uint64) int { return cmp.Compare(x, y) }
	check := func(ua, wa, ub, wb uint64) {
		want := sign(negLog2(ua)*wb, negLog2(ub)*wa)
		if got := cmpLW(ua, wa, ub, wb); got != want {
			t.Fatalf("cmpLW(%#x, %d, %#x, %d) = %d, want %d", ua, wa, ub, wb, got, want)
		}
	}
	check(1<<62, 200, 1<<63, 100) // exact tie: L = 2 and 1
	check(1<<62, 100, 1<<63, 200)
	check(0, 1, 1, 1)
	check(math.MaxUint64, MaxWeight, math.MaxUint64-1, 1)
	rng := rand.New(rand.NewPCG(11, 12))
	for range 200000 {
		ua, ub := rng.Uint64(), rng.Uint64()
		if rng.IntN(4) == 0 {
			ub = ua ^ rng.Uint64N(1<<rng.UintN(40)) // close values: long runs of equal bits
		}
		check(ua, 1+rng.Uint64N(MaxWeight), ub, 1+rng.Uint64N(MaxWeight))
	}
}

func TestCRC32Mod(t *testing.T) {
	bs := []Backend{{ID: "c"}, {ID: "a"}, {ID: "b"}}
	r := mustNew(t, ModeCRC32Mod, bs)
	if r.Backends()[0].ID != "c" || r.Mode() != ModeCRC32Mod {
		t.Fatal("crc32-mod must keep the configured order")
	}
	forKeys(1000, func(k []byte) {
		want := int(crc32.ChecksumIEEE(k) % 3)
		if got := r.Owners(k, 5, nil); !slices.Equal(got, []int{want, (want + 1) % 3, (want + 2) % 3}) {
			t.Fatalf("Owners(%q) = %v, want start %d and wrap", k, got, want)
		}
	})
	// "123456789" is the CRC-32 check string: 0xCBF43926 % 3 = 0.
	if got := r.Lookup([]byte("123456789")); got != 0xCBF43926%3 {
		t.Errorf("Lookup(check string) = %d", got)
	}
}

func TestLookupAllocs(t *testing.T) {
	r := mustNew(t, ModeConsistent, backendsN(10, 0))
	k := []byte("dev-0123456789abcdef")
	dst := make([]int, 0, 3)
	if a := testing.AllocsPerRun(100, func() { r.Lookup(k); dst = r.Owners(k, 3, dst[:0]) }); a != 0 {
		t.Errorf("Lookup+Owners allocate %v times", a)
	}
}

func TestShares(t *testing.T) {
	r, err := New(ModeConsistent, []Backend{{ID: "a", Weight: 100}, {ID: "b", Weight: 300}})
	if err != nil {
		t.Fatal(err)
	}
	s := r.Shares()
	if len(s) != 2 || s[0] < 0.24 || s[0] > 0.26 || s[1] < 0.74 || s[1] > 0.76 || s[0]+s[1] != 1 {
		t.Fatalf("shares %v, want about 0.25 / 0.75", s)
	}
	c, _ := New(ModeCRC32Mod, []Backend{{ID: "a"}, {ID: "b"}, {ID: "c"}, {ID: "d"}})
	if s := c.Shares(); len(s) != 4 || s[3] != 0.25 {
		t.Fatalf("crc32-mod shares %v", s)
	}
}
