package registry

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/metadata"

	"github.com/devgate/devgate/internal/opt"
	"github.com/devgate/devgate/pkg/ring"
)

// Defaults of the Watcher's options.
const (
	DefaultProgressInterval = time.Second
	DefaultListTimeout      = 5 * time.Second
	DefaultSettle           = 100 * time.Millisecond
)

// Watcher mirrors one cluster's keys from etcd into immutable snapshots:
// it lists the prefix, then watches from the list's revision. It lists
// again when the watch is compacted, cancelled or silent, when the
// connection to etcd broke (a watch the client resumed by itself cannot
// vouch that etcd's history is the one we listed: etcd may have been
// restored and written past our revision meanwhile), or when etcd's
// revision or cluster goes backwards. While etcd is away it keeps the last
// snapshot: the ring never empties because a watch broke.
// Set the fields, then call Run; Ring makes it a proxy.RingSource.
type Watcher struct {
	Client *clientv3.Client // required
	Keys   Keys
	Mode   ring.Mode // default ring.ModeConsistent
	Logger *zap.Logger

	// PanicThreshold is the share of weight that may leave within
	// PanicWindow before departures are held in the ring for PanicHold.
	// A hold goes on past PanicHold while etcd cannot confirm or nothing
	// routable would be left. If zero, 0.5; if negative, never hold.
	PanicThreshold float64
	PanicWindow    time.Duration // if zero, 10s
	PanicHold      time.Duration // if zero, 60s

	// Settle batches events arriving together (a lease storm revokes many
	// keys in a row) into one ring build. If zero, DefaultSettle.
	Settle time.Duration

	// ProgressInterval is how often the watch asks etcd for a progress
	// notification; a stream silent for three intervals is re-opened
	// (a dead stream without FIN). If zero, DefaultProgressInterval.
	ProgressInterval time.Duration

	// ListTimeout bounds each list; the etcd client's dial timeout is a
	// good value. If zero, DefaultListTimeout.
	ListTimeout time.Duration

	// OnSnapshot, if set, is called after each new snapshot is stored.
	OnSnapshot func(*Snapshot)

	snap        atomic.Pointer[Snapshot]
	ready       chan struct{}
	changedMu   sync.Mutex
	changed     chan struct{} // closed and replaced when a snapshot is stored
	readyOnce   sync.Once
	initOnce    sync.Once
	lastContact atomic.Int64 // unix nanos of the last answer from etcd
	connected   atomic.Bool
	last        *view // the view the last watch left; owned by Run

	relists, badValues, builds, regressions, repairs atomic.Uint64
	mu                                               sync.Mutex
	guard                                            panicGuard
	reasons                                          map[string]uint64 // under mu
}

// WatcherStats counts what the watcher has been through.
type WatcherStats struct {
	Relists       uint64            // full lists (start, compaction, restore, broken watch)
	RelistReasons map[string]uint64 // relists by reason (Reason*)
	Regressions   uint64            // lists that found etcd's revision or cluster went back
	Repairs       uint64            // relists that found changes the watch had not delivered
	BadValues     uint64            // keys rejected as untrusted input
	Builds        uint64            // snapshots built
	PanicHolds    uint64            // times the panic threshold held departures
	PanicExtended uint64            // times a hold went on past PanicHold
	Held          int               // members held in the ring now
	Revision      int64             // revision of the current snapshot
	Connected     bool              // the watch is open and etcd answered recently
	Staleness     time.Duration     // time since etcd last answered
	HasSnapshot   bool
}

func (w *Watcher) init() {
	w.initOnce.Do(func() {
		w.ready = make(chan struct{})
		w.changed = make(chan struct{})
		if w.Logger == nil {
			w.Logger = zap.NewNop()
		}
		if w.Mode == "" {
			w.Mode = ring.ModeConsistent
		}
		w.guard = panicGuard{
			threshold: w.PanicThreshold,
			window:    opt.Or(w.PanicWindow, 10*time.Second),
			hold:      opt.Or(w.PanicHold, 60*time.Second),
		}
		if w.guard.threshold == 0 {
			w.guard.threshold = 0.5
		}
		w.reasons = make(map[string]uint64)
	})
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

// Changed returns a channel closed when the next snapshot is stored. Take
// it before reading Snapshot, so no change falls between the two.
func (w *Watcher) Changed() <-chan struct{} {
	w.init()
	w.changedMu.Lock()
	defer w.changedMu.Unlock()
	return w.changed
}

// Ready is closed once the first snapshot is in.
func (w *Watcher) Ready() <-chan struct{} {
	w.init()
	return w.ready
}

// Stats returns the watcher's counters and staleness.
func (w *Watcher) Stats() WatcherStats {
	w.init()
	s := WatcherStats{
		Relists: w.relists.Load(), BadValues: w.badValues.Load(), Builds: w.builds.Load(),
		Regressions: w.regressions.Load(), Repairs: w.repairs.Load(),
		RelistReasons: make(map[string]uint64),
		// Answered recently too: opening a watch waits while etcd is away,
		// and the flag is not cleared until the watch loop runs.
		Connected: w.connected.Load() && w.fresh(3*opt.Or(w.ProgressInterval, DefaultProgressInterval)),
	}
	w.mu.Lock()
	s.PanicHolds, s.PanicExtended = w.guard.holds, w.guard.extended
	for r, n := range w.reasons {
		s.RelistReasons[r] = n
	}
	w.mu.Unlock()
	if last := w.lastContact.Load(); last != 0 {
		s.Staleness = time.Since(time.Unix(0, last))
	}
	if snap := w.snap.Load(); snap != nil {
		s.Revision, s.HasSnapshot = snap.Revision, true
		for _, m := range snap.Members {
			if m.State == StateHeld {
				s.Held++
			}
		}
	}
	return s
}

// cycle is one list followed by one watch. It returns whether the watch
// was opened, and why the list failed or the watch ended.
func (w *Watcher) cycle(ctx context.Context, reason string) (bool, error) {
	// Its own gRPC watch stream: etcd answers a progress request for a
	// stream only when every watch on it has caught up, and others (a
	// Registration on the same client) watch from the revision after their
	// put, ahead of an idle etcd. Streams are keyed by outgoing metadata.
	ctx = metadata.AppendToOutgoingContext(clientv3.WithRequireLeader(ctx), streamKey, fmt.Sprintf("%p", w))
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	v, rev, cluster, err := w.list(ctx)
	if err != nil {
		return false, err
	}
	w.relists.Add(1)
	w.mu.Lock()
	w.reasons[reason]++
	w.mu.Unlock()
	if prev := w.snap.Load(); prev != nil && (rev < prev.Revision || cluster != prev.ClusterID) {
		w.regressions.Add(1)
		w.Logger.Warn("etcd went back in time or changed cluster; rebuilt from the list",
			zap.Int64("was", prev.Revision), zap.Int64("now", rev),
			zap.Uint64("clusterWas", prev.ClusterID), zap.Uint64("clusterNow", cluster))
	}
	if w.last != nil {
		if n := diffViews(w.last, v); n > 0 {
			w.repairs.Add(1)
			w.Logger.Warn("the list found changes the watch had not delivered (missed while away, or lost in a restore)",
				zap.Int("keys", n), zap.String("reason", reason), zap.Int64("revision", rev))
		}
	}
	w.last = v
	if err := w.publish(v, rev, cluster, true); err != nil {
		return false, err
	}
	w.connected.Store(true)
	return true, w.watch(ctx, v, rev, cluster)
}

func (w *Watcher) list(ctx context.Context) (*view, int64, uint64, error) {
	lctx, cancel := context.WithTimeout(ctx, opt.Or(w.ListTimeout, DefaultListTimeout))
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

// fresh reports whether etcd answered within d.
func (w *Watcher) fresh(d time.Duration) bool {
	last := w.lastContact.Load()
	return last != 0 && time.Since(time.Unix(0, last)) <= d
}

var errNoClient = errors.New("registry: Watcher.Client is nil")

// streamKey is the outgoing metadata that gives each Watcher its own watch
// stream; etcd ignores it.
const streamKey = "devgate-watcher"
