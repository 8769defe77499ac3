package admin

import (
	"context"
	"time"
)

// DefaultPace is the eviction pace, connections per second across the
// fleet, when a request gives none.
const DefaultPace = 50

// Pace calls evict(n) so that connections close at perSecond, until evict
// closes fewer than it was asked (nothing left) or ctx ends. It returns how
// many were closed. It is a token bucket holding at most a fifth of a
// second's worth: after a stall (a paused process, a slow tick) it resumes
// at the pace instead of catching up in a burst, because a burst is the
// herd the pace exists to prevent.
func Pace(ctx context.Context, perSecond float64, evict func(n int) int, progress func(total int)) int {
	if perSecond <= 0 {
		perSecond = DefaultPace
	}
	step := min(max(time.Duration(float64(time.Second)/perSecond), 10*time.Millisecond), 100*time.Millisecond)
	tick := time.NewTicker(step)
	defer tick.Stop()
	burst := max(1, perSecond/5)
	tokens, last := 1.0, time.Now() // the first connection goes at once
	total := 0
	for {
		now := time.Now()
		tokens = min(burst, tokens+perSecond*now.Sub(last).Seconds())
		last = now
		if allowed := int(tokens); allowed > 0 {
			n := evict(allowed)
			tokens -= float64(n)
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
