package admin

import (
	"fmt"
	"testing"
	"time"
)

// The sampler keeps Size samples, oldest first, with the rates of change
// between them, and names at most maxHistoryBackends backends a sample.
func TestHistoryRingAndRates(t *testing.T) {
	h := &History{Size: 4}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 6 { // two more than it keeps
		h.Record(t0.Add(time.Duration(i)*10*time.Second), uint64(100*i), uint64(50*i), map[string]int{"b1": i})
	}
	s := h.Samples()
	if len(s) != 4 {
		t.Fatalf("%d samples, want 4", len(s))
	}
	for i, x := range s {
		if want := t0.Add(time.Duration(i+2) * 10 * time.Second); !x.At.Equal(want) || x.Connections["b1"] != int64(i+2) {
			t.Fatalf("sample %d: %+v, want at %s", i, x, want)
		}
		if x.AcceptsPerSecond != 10 || x.ClosesPerSecond != 5 {
			t.Fatalf("sample %d rates: %+v", i, x)
		}
	}
	// A counter that went back (a restart of the proxy's counters) gives
	// a zero rate, not a huge one.
	h.Record(t0.Add(time.Minute), 0, 0, nil)
	if s := h.Samples(); s[len(s)-1].AcceptsPerSecond != 0 {
		t.Fatalf("rate after a reset: %+v", s[len(s)-1])
	}

	many := map[string]int{}
	for i := range maxHistoryBackends + 10 {
		many[fmt.Sprintf("b%03d", i)] = i + 1
	}
	h.Record(t0.Add(2*time.Minute), 0, 0, many)
	last := h.Samples()[3]
	if len(last.Connections) != maxHistoryBackends+1 || last.Connections[HistoryOther] != 1+2+3+4+5+6+7+8+9+10 {
		t.Fatalf("%d backends, other %d", len(last.Connections), last.Connections[HistoryOther])
	}
}
