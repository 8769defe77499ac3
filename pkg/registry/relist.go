package registry

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.uber.org/zap"
)

// Why the watcher listed the keys, as counted in WatcherStats.RelistReasons.
const (
	ReasonStart      = "start"      // the first list
	ReasonCompacted  = "compacted"  // the watch's revision was compacted away
	ReasonRegression = "regression" // etcd's revision or cluster went back (restored)
	ReasonReconnect  = "reconnect"  // the connection to etcd broke: a resumed watch cannot vouch for the revision
	ReasonSilent     = "silent"     // no answer for three progress intervals: a dead stream
	ReasonEnded      = "ended"      // etcd cancelled or closed the watch
	ReasonError      = "error"      // anything else
)

// Why a watch ended; reasonOf maps them to the Reason* names.
var (
	errRegression = errors.New("etcd went back in time")
	errReconnect  = errors.New("etcd connection interrupted")
	errSilent     = errors.New("watch silent")
	errEnded      = errors.New("watch ended by etcd")
)

func reasonOf(err error) string {
	switch {
	case errors.Is(err, rpctypes.ErrCompacted):
		return ReasonCompacted
	case errors.Is(err, errRegression):
		return ReasonRegression
	case errors.Is(err, errReconnect):
		return ReasonReconnect
	case errors.Is(err, errSilent):
		return ReasonSilent
	case errors.Is(err, errEnded):
		return ReasonEnded
	}
	return ReasonError
}

// Retry pacing of Run: jittered so that replicas that lost etcd together do
// not come back to it together, and capped low so that a replica is back
// within about a second of etcd.
const (
	retryMin = 100 * time.Millisecond
	retryMax = time.Second
	// waitLogEvery spaces the "waiting for etcd" lines of a long outage.
	waitLogEvery = 5 * time.Second
)

// jitterBackoff doubles from min to max; each wait is drawn from [d/2, d].
type jitterBackoff struct {
	min, max time.Duration
	rnd      *rand.Rand // nil: the global source
	d        time.Duration
}

func (b *jitterBackoff) next() time.Duration {
	if b.d == 0 {
		b.d = b.min
	}
	d := b.d
	b.d = min(2*b.d, b.max)
	half := int64(d / 2)
	if b.rnd != nil {
		return time.Duration(half + b.rnd.Int64N(half+1))
	}
	return time.Duration(half + rand.Int64N(half+1))
}

func (b *jitterBackoff) reset() { b.d = 0 }

// Run lists and watches until ctx ends; it returns nil then.
func (w *Watcher) Run(ctx context.Context) error {
	if w.Client == nil {
		return errNoClient
	}
	w.init()
	bo := jitterBackoff{min: retryMin, max: retryMax}
	reason := ReasonStart
	var waitingSince, lastLog time.Time
	attempts := 0
	for ctx.Err() == nil {
		watched, err := w.cycle(ctx, reason)
		w.connected.Store(false)
		if ctx.Err() != nil {
			break
		}
		d := bo.next()
		if watched {
			bo.reset()
			d = bo.next()
			reason = reasonOf(err)
			waitingSince, attempts = time.Time{}, 0
			w.Logger.Warn("etcd watch interrupted; listing again",
				zap.String("reason", reason), zap.Error(err), zap.Duration("retryIn", d))
		} else {
			attempts++
			if waitingSince.IsZero() {
				waitingSince = time.Now()
			}
			if attempts == 1 || time.Since(lastLog) >= waitLogEvery {
				lastLog = time.Now()
				w.Logger.Warn("waiting for etcd", zap.Strings("endpoints", w.Client.Endpoints()),
					zap.Error(err), zap.Duration("retryIn", d), zap.Int("attempt", attempts),
					zap.Duration("waited", time.Since(waitingSince).Round(time.Millisecond)),
					zap.Bool("haveRing", w.snap.Load() != nil))
			}
		}
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
		}
	}
	return nil
}
