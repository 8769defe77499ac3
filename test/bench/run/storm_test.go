package main

import (
	"context"
	"testing"
	"time"

	"github.com/devgate/devgate/pkg/loadgen"
)

// The storm backends restart without a gap: every held device is dropped,
// logs in again, and each accept and login is counted where it lands.
func TestStormBackendsRestart(t *testing.T) {
	bs, err := startStormBackends(2, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer stopStormBackends(bs)
	const n = 40
	r, err := loadgen.Run(context.Background(), loadgen.Config{Mode: loadgen.Storm, Devices: n, Concurrency: 8,
		Targets: []string{bs[0].addr(), bs[1].addr()}, Timeout: 5 * time.Second, StormWait: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Release()
	if r.Ok != n {
		t.Fatalf("held %d of %d: %v", r.Ok, n, r.Errors)
	}
	for _, b := range bs {
		if l, a := b.take(); len(l) != n/2 || len(a) != n/2 {
			t.Fatalf("%s before the restart: %d logins, %d accepts; want %d each", b.id, len(l), len(a), n/2)
		}
	}
	t0 := time.Now()
	for _, b := range bs {
		if err := b.restart(); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st := r.AwaitStorm(ctx)
	if st.Dropped != n || st.Back != n || st.FailedTries != 0 {
		t.Fatalf("storm: %+v", st)
	}
	for _, b := range bs {
		l, a := b.take()
		if len(l) != n/2 || len(a) != n/2 {
			t.Errorf("%s after the restart: %d logins, %d accepts; want %d each", b.id, len(l), len(a), n/2)
		}
		sortTimes(l)
		if got := peakIn(l, time.Hour); got != n/2 {
			t.Errorf("peakIn over the whole run: %d, want %d", got, n/2)
		}
		sum := 0
		for _, c := range bins(l, t0, 100*time.Millisecond) {
			sum += c
		}
		if sum != n/2 {
			t.Errorf("bins hold %d logins, want %d", sum, n/2)
		}
	}
}

func TestPeakIn(t *testing.T) {
	at := func(ms ...int) []time.Time {
		var ts []time.Time
		for _, m := range ms {
			ts = append(ts, time.Unix(0, 0).Add(time.Duration(m)*time.Millisecond))
		}
		return ts
	}
	for _, c := range []struct {
		ms   []int
		w    time.Duration
		want int
	}{
		{nil, time.Second, 0},
		{[]int{0, 100, 999, 1000, 1500}, time.Second, 3},   // [0,1000) holds 0, 100, 999
		{[]int{0, 900, 1000, 1100, 1200}, time.Second, 4},  // 900..1899 (sliding: from 0 only 2)
		{[]int{0, 50, 99, 100}, 100 * time.Millisecond, 3}, // a window is half open
	} {
		if got := peakIn(at(c.ms...), c.w); got != c.want {
			t.Errorf("peakIn(%v, %s) = %d, want %d", c.ms, c.w, got, c.want)
		}
	}
}
