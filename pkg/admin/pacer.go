package admin

import (
	"context"
	"time"
)

// DefaultPace is the eviction pace, connections per second across the
// fleet, when a request gives none.
const DefaultPace = 50

// Pace calls evict(n) so that connections close at perSecond on average,
// until evict closes fewer than it was asked (nothing left) or ctx ends.
// It returns how many were closed. Budgets are computed from the start
// time, not per tick, so timer jitter does not drift the rate.
func Pace(ctx context.Context, perSecond float64, evict func(n int) int, progress func(total int)) int {
	if perSecond <= 0 {
		perSecond = DefaultPace
	}
	step := min(max(time.Duration(float64(time.Second)/perSecond), 10*time.Millisecond), 100*time.Millisecond)
	tick := time.NewTicker(step)
	defer tick.Stop()
	start := time.Now()
	total := 0
	for {
		// The first connection goes at once; then perSecond.
		allowed := 1 + int(perSecond*time.Since(start).Seconds()) - total
		if allowed > 0 {
			n := evict(allowed)
			total += n
			if progress != nil && n > 0 {
				progress(total)
			}
			if n < allowed {
				return total
			}
		}
		select {
		case <-ctx.Done():
			return total
		case <-tick.C:
		}
	}
}
