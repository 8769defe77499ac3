package admin

import (
	"context"
	"sync"
	"time"

	"go.uber.org/zap"

	adminv1 "github.com/devgate/devgate/api/devgate/admin/v1"
	"github.com/devgate/devgate/pkg/proxy"
	"github.com/devgate/devgate/pkg/registry"
)

// relocator is the part of the proxy a drain needs.
type relocator interface {
	Relocate(backend string, n int, cause proxy.Cause, tally *proxy.MoveTally) int
}

// drainer carries out, on this replica, the drains stored in etcd: after a
// drain's deadline it relocates the backend's connections here at this
// replica's share of the fleet-wide pace: each device moves live to its new
// owner where rehome allows, else is evicted and reconnects there, without
// a herd either way. An undrain stops it.
type drainer struct {
	proxy relocator
	log   *zap.Logger
	// share, if set, returns this replica's part of a fleet-wide pace for
	// a backend's connections at the deadline; nil: an equal split.
	share func(ctx context.Context, backend string, pace float64) (float64, bool)
	// moveWait bounds the wait for moves begun to end (relocatePaced).
	moveWait time.Duration

	mu   sync.Mutex
	ctx  context.Context
	jobs map[string]*drainJob
	wg   sync.WaitGroup
}

type drainJob struct {
	drain     registry.DrainValue
	share     float64 // this replica's pace
	cancel    context.CancelFunc
	tally     *proxy.MoveTally // how the relocated connections ended
	relocated int              // begun: what the pace counts
	started   bool             // the deadline passed
	done      bool
}

func newDrainer(ctx context.Context, p relocator, log *zap.Logger) *drainer {
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
	// A job restarted for the same drain (the fleet's size changed) keeps
	// counting where it was.
	tallies := map[string]*proxy.MoveTally{}
	for id, j := range d.jobs {
		dv, ok := s.Drains[id]
		if !ok || dv != j.drain || j.share != dv.EvictPerSecond/float64(gateways) {
			j.cancel()
			delete(d.jobs, id)
			if ok && dv == j.drain {
				tallies[id] = j.tally
			}
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
		tally := tallies[id]
		if tally == nil {
			tally = new(proxy.MoveTally)
		}
		j := &drainJob{drain: dv, share: rate / float64(gateways), cancel: cancel, tally: tally}
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
	d.mu.Lock()
	j.started = true
	d.mu.Unlock()
	d.log.Info("drain deadline reached; relocating", zap.String("backend", id), zap.Float64("perSecond", rate))
	n := relocatePaced(ctx, rate, func(n int) int { return d.proxy.Relocate(id, n, proxy.CauseDrain, j.tally) }, j.tally, d.moveWait,
		func(total int) {
			d.mu.Lock()
			j.relocated = total
			d.mu.Unlock()
		})
	d.mu.Lock()
	j.done = ctx.Err() == nil
	d.mu.Unlock()
	d.log.Info("drain relocations over", zap.String("backend", id), zap.Int("relocated", n),
		zap.Int64("moved", j.tally.Moved.Load()), zap.Int64("evicted", j.tally.Evicted.Load()),
		zap.Int64("gone", j.tally.Gone.Load()), zap.Bool("complete", ctx.Err() == nil))
}

// progress is, by backend, how the connections each drain relocated here
// since its deadline ended so far.
func (d *drainer) progress() map[string]*adminv1.MoveProgress {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := map[string]*adminv1.MoveProgress{}
	for id, j := range d.jobs {
		if j.started {
			out[id] = moveProgress(j.tally)
		}
	}
	return out
}

// active reports whether a drain owns connections on this replica: one is
// stored for a backend this replica still holds connections to, so they
// leave at the drain's deadline and pace, not before.
func (d *drainer) active(conns map[string]int) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	for id := range d.jobs {
		if conns[id] > 0 {
			return true
		}
	}
	return false
}

func moveProgress(t *proxy.MoveTally) *adminv1.MoveProgress {
	return &adminv1.MoveProgress{Moved: t.Moved.Load(), Evicted: t.Evicted.Load(), Gone: t.Gone.Load()}
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
