package admin

import (
	"context"
	"testing"
	"time"
)

// After a stall the pacer resumes at the pace: it never makes up for lost
// time in a burst.
func TestPaceDoesNotBurstAfterStall(t *testing.T) {
	var stamps []time.Time
	left := 60
	stalled := false
	evict := func(n int) int {
		if !stalled && len(stamps) == 5 {
			stalled = true
			time.Sleep(600 * time.Millisecond) // a stall worth 12 evictions at 20/s
		}
		n = min(n, left)
		for i := 0; i < n; i++ {
			stamps = append(stamps, time.Now())
		}
		left -= n
		return n
	}
	Pace(context.Background(), 20, evict, nil)
	// In any 500ms window at most 20*0.5 + the burst of 4 (+1 for the edge).
	for i := range stamps {
		j := i
		for j < len(stamps) && stamps[j].Sub(stamps[i]) < 500*time.Millisecond {
			j++
		}
		if j-i > 15 {
			t.Fatalf("%d evictions within 500ms from #%d: a burst", j-i, i)
		}
	}
}
