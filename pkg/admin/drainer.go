package admin

import (
	"context"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/devgate/devgate/pkg/proxy"
	"github.com/devgate/devgate/pkg/registry"
)

// evicter is the part of the proxy a drain needs.
type evicter interface {
	Evict(backend string, n int, cause proxy.Cause) int
}

// drainer carries out, on this replica, the drains stored in etcd: after a
// drain's deadline it evicts the backend's connections here at this
// replica's share of the fleet-wide pace, so devices reconnect to their new
// owners without a herd. An undrain stops it.
type drainer struct {
	proxy evicter
	log   *zap.Logger
	// share, if set, returns this replica's part of a fleet-wide pace for
	// a backend's connections at the deadline; nil: an equal split.
	share func(ctx context.Context, backend string, pace float64) (float64, bool)

	mu   sync.Mutex
	ctx  context.Context
	jobs map[string]*drainJob
	wg   sync.WaitGroup
}

type drainJob struct {
	drain   registry.DrainValue
	share   float64 // this replica's pace
	cancel  context.CancelFunc
	evicted int
	done    bool
}

func newDrainer(ctx context.Context, p evicter, log *zap.Logger) *drainer {
	return &drainer{proxy: p, log: log, ctx: ctx, jobs: make(map[string]*drainJob)}
}

// update starts, changes or stops jobs to match a snapshot's drains.
func (d *drainer) update(s *registry.Snapshot) {
	gateways := max(len(s.Gateways), 1)
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ctx.Err() != nil {
		return
	}
	for id, j := range d.jobs {
		dv, ok := s.Drains[id]
		if !ok || dv != j.drain || j.share != dv.EvictPerSecond/float64(gateways) {
			j.cancel()
			delete(d.jobs, id)
		}
	}
	for id, dv := range s.Drains {
		if _, ok := d.jobs[id]; ok {
			continue
		}
		rate := dv.EvictPerSecond
		if rate <= 0 {
			rate = DefaultPace
		}
		ctx, cancel := context.WithCancel(d.ctx)
		j := &drainJob{drain: dv, share: rate / float64(gateways), cancel: cancel}
		d.jobs[id] = j
		d.wg.Add(1)
		go d.run(ctx, id, j)
	}
}

func (d *drainer) run(ctx context.Context, id string, j *drainJob) {
	defer d.wg.Done()
	// The share is asked of the peers up to a second before the deadline,
	// so every replica starts evicting at the deadline itself rather than
	// after a round of peer calls.
	if !sleepUntil(ctx, j.drain.Deadline.Add(-time.Second)) {
		return
	}
	rate := j.share
	if d.share != nil { // in proportion to what this replica holds, so the fleet ends together
		if r, ok := d.share(ctx, id, j.drain.EvictPerSecond); ok {
			rate = r
		}
	}
	if !sleepUntil(ctx, j.drain.Deadline) {
		return
	}
	d.log.Info("drain deadline reached; evicting", zap.String("backend", id), zap.Float64("perSecond", rate))
	n := Pace(ctx, rate, func(n int) int { return d.proxy.Evict(id, n, proxy.CauseDrain) }, func(total int) {
		d.mu.Lock()
		j.evicted = total
		d.mu.Unlock()
	})
	d.mu.Lock()
	j.done = ctx.Err() == nil
	d.mu.Unlock()
	d.log.Info("drain evictions over", zap.String("backend", id), zap.Int("evicted", n), zap.Bool("complete", ctx.Err() == nil))
}

// sleepUntil waits for t; false if ctx ended first.
func sleepUntil(ctx context.Context, t time.Time) bool {
	wait := time.Until(t)
	if wait <= 0 {
		return ctx.Err() == nil
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-timer.C:
		return true
	}
}

// wait stops every job (its ctx must be done) and waits for them.
func (d *drainer) wait() { d.wg.Wait() }
