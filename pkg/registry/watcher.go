package registry

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/devgate/devgate/pkg/ring"
)

// Watcher mirrors one cluster's keys from etcd into immutable snapshots:
// it lists the prefix, then watches from the list's revision + 1. It lists
// again when the watch is compacted, cancelled, silent, or when etcd's
// revision goes backwards (restored from a backup). While etcd is away it
// keeps the last snapshot: the ring never empties because a watch broke.
// Set the fields, then call Run; Ring makes it a proxy.RingSource.
type Watcher struct {
	Client *clientv3.Client // required
	Keys   Keys
	Mode   ring.Mode // default ring.ModeConsistent
	Logger *zap.Logger

	// PanicThreshold is the share of weight that may leave within
	// PanicWindow before departures are held in the ring for PanicHold.
	// If zero, 0.5; if negative, never hold.
	PanicThreshold float64
	PanicWindow    time.Duration // if zero, 10s
	PanicHold      time.Duration // if zero, 60s

	// Settle batches events arriving together (a lease storm revokes many
	// keys in a row) into one ring build. If zero, 100ms.
	Settle time.Duration

	// ProgressInterval is how often the watch asks etcd for a progress
	// notification; a stream silent for three intervals is re-opened
	// (a dead stream without FIN). If zero, 5s.
	ProgressInterval time.Duration

	// OnSnapshot, if set, is called after each new snapshot is stored.
	OnSnapshot func(*Snapshot)

	snap        atomic.Pointer[Snapshot]
	ready       chan struct{}
	readyOnce   sync.Once
	initOnce    sync.Once
	lastContact atomic.Int64 // unix nanos of the last answer from etcd
	connected   atomic.Bool

	relists, badValues, builds atomic.Uint64
	mu                         sync.Mutex
	guard                      panicGuard
}

// WatcherStats counts what the watcher has been through.
type WatcherStats struct {
	Relists     uint64        // full lists (start, compaction, restore, broken watch)
	BadValues   uint64        // keys rejected as untrusted input
	Builds      uint64        // snapshots built
	PanicHolds  uint64        // times the panic threshold held departures
	Revision    int64         // revision of the current snapshot
	Connected   bool          // the watch is open and etcd answered recently
	Staleness   time.Duration // time since etcd last answered
	HasSnapshot bool
}

func (w *Watcher) init() {
	w.initOnce.Do(func() {
		w.ready = make(chan struct{})
		if w.Logger == nil {
			w.Logger = zap.NewNop()
		}
		if w.Mode == "" {
			w.Mode = ring.ModeConsistent
		}
		w.guard = panicGuard{
			threshold: w.PanicThreshold,
			window:    orDur(w.PanicWindow, 10*time.Second),
			hold:      orDur(w.PanicHold, 60*time.Second),
		}
		if w.guard.threshold == 0 {
			w.guard.threshold = 0.5
		}
	})
}

func orDur(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// Ring returns the ring of the current snapshot, or nil before the first.
func (w *Watcher) Ring() ring.Ring {
	if s := w.snap.Load(); s != nil {
		return s.Ring
	}
	return nil
}

// Snapshot returns the current snapshot, or nil before the first.
func (w *Watcher) Snapshot() *Snapshot { return w.snap.Load() }

// Ready is closed once the first snapshot is in.
func (w *Watcher) Ready() <-chan struct{} {
	w.init()
	return w.ready
}

// Stats returns the watcher's counters and staleness.
func (w *Watcher) Stats() WatcherStats {
	w.mu.Lock()
	holds := w.guard.holds
	w.mu.Unlock()
	s := WatcherStats{
		Relists: w.relists.Load(), BadValues: w.badValues.Load(), Builds: w.builds.Load(),
		PanicHolds: holds, Connected: w.connected.Load(),
	}
	if last := w.lastContact.Load(); last != 0 {
		s.Staleness = time.Since(time.Unix(0, last))
	}
	if snap := w.snap.Load(); snap != nil {
		s.Revision, s.HasSnapshot = snap.Revision, true
	}
	return s
}

// Run lists and watches until ctx ends; it returns nil then.
func (w *Watcher) Run(ctx context.Context) error {
	if w.Client == nil {
		return errors.New("registry: Watcher.Client is nil")
	}
	w.init()
	backoff := time.Duration(0)
	for ctx.Err() == nil {
		listed := w.relists.Load()
		err := w.cycle(ctx)
		w.connected.Store(false)
		if ctx.Err() != nil {
			break
		}
		if w.relists.Load() != listed { // it listed, so etcd was fine: retry soon
			backoff = 0
		}
		backoff = min(max(2*backoff, 100*time.Millisecond), 5*time.Second)
		w.Logger.Warn("etcd watch interrupted; listing again", zap.Error(err), zap.Duration("backoff", backoff))
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
	}
	return nil
}

// cycle is one list followed by one watch; it returns why the watch ended.
func (w *Watcher) cycle(ctx context.Context) error {
	ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	v, rev, cluster, err := w.list(ctx)
	if err != nil {
		return err
	}
	w.relists.Add(1)
	if prev := w.snap.Load(); prev != nil && (rev < prev.Revision || cluster != prev.ClusterID) {
		w.Logger.Warn("etcd went back in time or changed cluster; rebuilt from the list",
			zap.Int64("was", prev.Revision), zap.Int64("now", rev),
			zap.Uint64("clusterWas", prev.ClusterID), zap.Uint64("clusterNow", cluster))
	}
	if err := w.publish(v, rev, cluster); err != nil {
		return err
	}
	w.connected.Store(true)
	return w.watch(ctx, v, rev, cluster)
}

func (w *Watcher) list(ctx context.Context) (*view, int64, uint64, error) {
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	limit := int64(3*MaxMembers + 1)
	resp, err := w.Client.Get(lctx, w.Keys.Root(), clientv3.WithPrefix(), clientv3.WithLimit(limit))
	if err != nil {
		return nil, 0, 0, fmt.Errorf("list %s: %w", w.Keys.Root(), err)
	}
	if resp.More {
		return nil, 0, 0, fmt.Errorf("list %s: more than %d keys", w.Keys.Root(), limit-1)
	}
	w.touch()
	v := newView()
	for _, kv := range resp.Kvs {
		w.applyOne(v, string(kv.Key), kv.Value)
	}
	return v, resp.Header.Revision, resp.Header.ClusterId, nil
}

func (w *Watcher) applyOne(v *view, key string, val []byte) {
	if err := v.apply(w.Keys, key, val); err != nil {
		w.badValues.Add(1)
		w.Logger.Warn("ignored a bad value in etcd", zap.String("key", key), zap.Error(err))
	}
}

func (w *Watcher) touch() { w.lastContact.Store(time.Now().UnixNano()) }

// watch follows changes after rev until something calls for a new list.
func (w *Watcher) watch(ctx context.Context, v *view, rev int64, cluster uint64) error {
	wch := w.Client.Watch(ctx, w.Keys.Root(), clientv3.WithPrefix(), clientv3.WithRev(rev+1),
		clientv3.WithProgressNotify())
	interval := orDur(w.ProgressInterval, 5*time.Second)
	progress := time.NewTicker(interval)
	defer progress.Stop()
	// RequestProgress can block while etcd is unreachable, so it runs apart
	// from the loop that must notice the silence.
	// It also reads etcd's current revision: a watch resumed against a
	// restored etcd waits, silent, for a revision that is not coming, so a
	// revision below ours or another cluster id is looked for directly.
	askProgress := make(chan struct{}, 1)
	backwards := make(chan error, 1)
	var seen atomic.Int64
	seen.Store(rev)
	pctx, pcancel := context.WithCancel(ctx)
	pdone := make(chan struct{})
	defer func() { pcancel(); <-pdone }()
	go func() {
		defer close(pdone)
		for {
			select {
			case <-pctx.Done():
				return
			case <-askProgress:
				rctx, rcancel := context.WithTimeout(pctx, interval)
				_ = w.Client.RequestProgress(rctx)
				r, err := w.Client.Get(rctx, w.Keys.Root()+"\x00probe", clientv3.WithCountOnly())
				rcancel()
				if err == nil && (r.Header.Revision < seen.Load() || r.Header.ClusterId != cluster) {
					select {
					case backwards <- fmt.Errorf("etcd at revision %d of cluster %x, we are at %d of %x (restored?)",
						r.Header.Revision, r.Header.ClusterId, seen.Load(), cluster):
					default:
					}
				}
			}
		}
	}()
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
		case err := <-backwards:
			return err
		case <-progress.C:
			if last := time.Unix(0, w.lastContact.Load()); time.Since(last) > 3*interval {
				w.connected.Store(false) // now, not after the teardown below
				return fmt.Errorf("watch silent for %s", time.Since(last).Round(time.Millisecond))
			}
			select { // answered on wch; silence is caught above
			case askProgress <- struct{}{}:
			default:
			}
		case <-settle:
			settle, dirty = nil, false
			if err := w.publish(v, rev, cluster); err != nil {
				return err
			}
		case <-holdC:
			holdTimer = nil
			if err := w.publish(v, rev, cluster); err != nil {
				return err
			}
		case resp, ok := <-wch:
			if !ok {
				return errors.New("watch channel closed")
			}
			if err := resp.Err(); err != nil {
				if errors.Is(err, rpctypes.ErrCompacted) || resp.CompactRevision != 0 {
					return fmt.Errorf("watch compacted at %d: %w", resp.CompactRevision, err)
				}
				return fmt.Errorf("watch: %w", err)
			}
			if resp.Canceled {
				return errors.New("watch cancelled by etcd")
			}
			if resp.Header.ClusterId != cluster {
				return fmt.Errorf("etcd cluster changed from %x to %x", cluster, resp.Header.ClusterId)
			}
			if resp.Header.Revision < rev {
				return fmt.Errorf("etcd revision went back from %d to %d (restored?)", rev, resp.Header.Revision)
			}
			w.touch()
			rev = resp.Header.Revision
			seen.Store(rev)
			for _, ev := range resp.Events {
				var val []byte
				if ev.Type == mvccpb.PUT {
					val = ev.Kv.Value
				}
				w.applyOne(v, string(ev.Kv.Key), val)
				dirty = true
			}
			if dirty && settle == nil {
				settle = time.After(orDur(w.Settle, 100*time.Millisecond))
			}
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

// publish builds a snapshot of v and makes it current.
func (w *Watcher) publish(v *view, rev int64, cluster uint64) error {
	now := time.Now()
	w.mu.Lock()
	live := make(map[string]ring.Backend, len(v.backends))
	for id, b := range v.backends {
		live[id] = b
	}
	before := w.guard.holds
	held := w.guard.update(live, now)
	tripped := w.guard.holds != before
	s, err := build(w.Ring(), v, held, w.Mode, rev, cluster, now)
	w.mu.Unlock()
	if err != nil {
		return fmt.Errorf("build ring at revision %d: %w", rev, err)
	}
	if tripped {
		w.Logger.Warn("panic threshold: holding departed backends in the ring",
			zap.Int("held", len(held)), zap.Int("live", len(live)))
	}
	w.snap.Store(s)
	w.builds.Add(1)
	w.readyOnce.Do(func() { close(w.ready) })
	if w.OnSnapshot != nil {
		w.OnSnapshot(s)
	}
	return nil
}
