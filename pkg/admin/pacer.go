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
	burst := max(1, perSecond/5)
	tokens, last := 1.0, time.Now() // the first connection goes at once
	timer := time.NewTimer(0)
	defer timer.Stop()
	<-timer.C
	total := 0
	for {
		now := time.Now()
		tokens = min(burst, tokens+perSecond*now.Sub(last).Seconds())
		last = now
		if allowed := int(tokens + 1e-9); allowed > 0 { // 1e-9: 0.3+0.7 may sum to 0.999...
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
		// Wake when the next whole token is due (at least 10ms apart, so
		// high paces evict in small batches), not on a fixed tick whose
		// rounding would slow low paces down.
		wait := max((1-tokens)/perSecond, 0.01)
		timer.Reset(time.Duration(wait * float64(time.Second)))
		select {
		case <-ctx.Done():
			return total
		case <-timer.C:
		}
	}
}
