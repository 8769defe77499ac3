package registry

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/connectivity"

	"github.com/devgate/devgate/internal/opt"
	"github.com/devgate/devgate/pkg/ring"
)

// watch follows changes after the list at listRev until something calls
// for a new list.
//
// It watches from listRev itself, not listRev+1: etcd answers progress
// requests only for a watch whose start revision it has reached
// (watchableStore.progressIfSync), so on an idle etcd a watch from
// listRev+1 would never hear from it and be called silent. Events of
// listRev are already in the list and are skipped.
func (w *Watcher) watch(ctx context.Context, v *view, listRev int64, cluster uint64) error {
	rev := listRev
	wch := w.Client.Watch(ctx, w.Keys.Root(), clientv3.WithPrefix(), clientv3.WithRev(listRev),
		clientv3.WithProgressNotify())
	interval := opt.Or(w.ProgressInterval, DefaultProgressInterval)
	progress := time.NewTicker(interval)
	defer progress.Stop()
	pctx, pcancel := context.WithCancel(ctx)
	var seen atomic.Int64
	seen.Store(rev)
	askProgress := make(chan struct{}, 1)
	stop := make(chan error, 2) // from the prober and the connection monitor
	done := make(chan struct{}, 2)
	defer func() { pcancel(); <-done; <-done }()
	go func() {
		defer func() { done <- struct{}{} }()
		w.probe(pctx, interval, cluster, &seen, askProgress, stop)
	}()
	go func() { defer func() { done <- struct{}{} }(); w.monitorConn(pctx, stop) }()

	var settle <-chan time.Time // armed while events wait for a build
	var holdTimer *time.Timer
	defer func() {
		if holdTimer != nil {
			holdTimer.Stop()
		}
	}()
	dirty := false
	for {
		if holdTimer == nil {
			if until := w.holdUntil(); !until.IsZero() {
				holdTimer = time.NewTimer(time.Until(until) + time.Millisecond)
			}
		}
		var holdC <-chan time.Time
		if holdTimer != nil {
			holdC = holdTimer.C
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-stop:
			w.connected.Store(false)
			return err
		case <-progress.C:
			if !w.fresh(3 * interval) {
				w.connected.Store(false) // now, not after the teardown below
				last := time.Unix(0, w.lastContact.Load())
				return fmt.Errorf("%w for %s", errSilent, time.Since(last).Round(time.Millisecond))
			}
			select { // answered on wch; silence is caught above
			case askProgress <- struct{}{}:
			default:
			}
		case <-settle:
			settle, dirty = nil, false
			if err := w.publish(v, rev, cluster, w.fresh(2*interval)); err != nil {
				return err
			}
		case <-holdC:
			holdTimer = nil
			if err := w.publish(v, rev, cluster, w.fresh(2*interval)); err != nil {
				return err
			}
		case resp, ok := <-wch:
			if !ok {
				return fmt.Errorf("%w: channel closed", errEnded)
			}
			if err := resp.Err(); err != nil {
				if errors.Is(err, rpctypes.ErrCompacted) || resp.CompactRevision != 0 {
					return fmt.Errorf("watch compacted at %d: %w", resp.CompactRevision, rpctypes.ErrCompacted)
				}
				return fmt.Errorf("watch: %w", err)
			}
			if resp.Canceled {
				return fmt.Errorf("%w: cancelled", errEnded)
			}
			if resp.Header.ClusterId != cluster {
				return fmt.Errorf("%w: cluster changed from %x to %x", errRegression, cluster, resp.Header.ClusterId)
			}
			if resp.Header.Revision < rev {
				return fmt.Errorf("%w: revision from %d to %d (restored?)", errRegression, rev, resp.Header.Revision)
			}
			w.touch()
			w.connected.Store(true)
			rev = resp.Header.Revision
			seen.Store(rev)
			for _, ev := range resp.Events {
				if ev.Kv.ModRevision <= listRev {
					continue // in the list already
				}
				var val []byte
				if ev.Type == mvccpb.PUT {
					val = ev.Kv.Value
				}
				w.applyOne(v, string(ev.Kv.Key), val)
				dirty = true
			}
			if dirty && settle == nil {
				settle = time.After(opt.Or(w.Settle, DefaultSettle))
			}
		}
	}
}

// probe asks for progress when told and reads etcd's current revision: a
// watch resumed against a restored etcd waits, silent, for a revision that
// is not coming, so a revision below ours or another cluster id is looked
// for directly. It runs apart because its calls block while etcd is away.
func (w *Watcher) probe(ctx context.Context, interval time.Duration, cluster uint64, seen *atomic.Int64, ask <-chan struct{}, stop chan<- error) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-ask:
			rctx, rcancel := context.WithTimeout(ctx, interval)
			_ = w.Client.RequestProgress(rctx) // same metadata as the watch: same stream
			r, err := w.Client.Get(rctx, w.Keys.Root()+"\x00probe", clientv3.WithCountOnly())
			rcancel()
			if err == nil && (r.Header.Revision < seen.Load() || r.Header.ClusterId != cluster) {
				select {
				case stop <- fmt.Errorf("%w: etcd at revision %d of cluster %x, we are at %d of %x (restored?)",
					errRegression, r.Header.Revision, r.Header.ClusterId, seen.Load(), cluster):
				default:
				}
				return
			}
		}
	}
}

// monitorConn reports the first time the client's connection leaves READY.
// The etcd client then resumes the watch by itself from the next revision,
// which is sound only if etcd kept its history; a restored etcd written
// past our revision would go unnoticed, so the watcher lists again.
func (w *Watcher) monitorConn(ctx context.Context, stop chan<- error) {
	conn := w.Client.ActiveConnection()
	if conn == nil {
		return
	}
	st := conn.GetState()
	for conn.WaitForStateChange(ctx, st) {
		st = conn.GetState()
		if st != connectivity.Ready {
			select {
			case stop <- fmt.Errorf("%w: connection %s", errReconnect, st):
			default:
			}
			return
		}
	}
}

func (w *Watcher) holdUntil() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.guard.held == nil {
		return time.Time{}
	}
	return w.guard.holdUntil
}

// publish builds a snapshot of v and makes it current. confirmed says etcd
// answered lately: a panic hold ends only then.
func (w *Watcher) publish(v *view, rev int64, cluster uint64, confirmed bool) error {
	now := time.Now()
	w.mu.Lock()
	live := make(map[string]ring.Backend, len(v.backends))
	routable := 0
	for id, b := range v.backends {
		live[id] = b
		if _, draining := v.drains[id]; !draining {
			routable++
		}
	}
	holds, extended := w.guard.holds, w.guard.extended
	held := w.guard.update(live, routable, now, confirmed)
	tripped, goesOn := w.guard.holds != holds, w.guard.extended != extended
	s, err := build(w.Ring(), v, held, w.Mode, rev, cluster, now)
	w.mu.Unlock()
	if err != nil {
		return fmt.Errorf("build ring at revision %d: %w", rev, err)
	}
	if tripped {
		w.Logger.Warn("panic threshold: holding departed backends in the ring",
			zap.Int("held", len(held)), zap.Int("live", len(live)))
	}
	if goesOn {
		w.Logger.Warn("panic hold goes on: etcd cannot confirm the departures, or nothing routable would be left",
			zap.Int("held", len(held)), zap.Int("routable", routable), zap.Bool("etcdConfirms", confirmed))
	}
	w.snap.Store(s)
	w.builds.Add(1)
	w.changedMu.Lock()
	close(w.changed)
	w.changed = make(chan struct{})
	w.changedMu.Unlock()
	w.readyOnce.Do(func() { close(w.ready) })
	if w.OnSnapshot != nil {
		w.OnSnapshot(s)
	}
	return nil
}
