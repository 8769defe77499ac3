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

// Automatic rebalance (rebalance.auto). A device whose owner was away when
// it connected stays on its fallback until someone rebalances; with this,
// each replica does it by itself: after a backend joins the ring or comes
// back, it waits DefaultRebalanceSettle for every replica to route on the
// new ring, then relocates its misplaced connections (moved live where the
// owner takes moved devices, else evicted) at its share of the fleet-wide
// pace, until nothing is misplaced. A further join restarts the wait.
//
// It gives way on this replica to what an operator started: it waits while
// an operator's rebalance runs here (that one relocates the same
// connections), while this replica drains itself, and while a stored drain
// owns connections here (a drained backend's connections are misplaced
// too, but they leave at the drain's deadline and pace, not before); then
// it goes on.

// DefaultRebalanceSettle is how long an automatic rebalance waits after a
// join: every replica has the new ring by then (ring updates take
// milliseconds), so they share the pace.
const DefaultRebalanceSettle = 2 * time.Second

// autoBlockedPoll is how often a waiting automatic rebalance looks whether
// what it gives way to is over.
const autoBlockedPoll = time.Second

// joined lists the backends in cur's ring that were not routed to in prev:
// new ids, ids back after leaving (lease lost, undrained), and members
// back in etcd after the panic threshold held them. Nil for the first
// snapshot: at start nothing is connected.
func joined(prev, cur *registry.Snapshot) []string {
	if prev == nil {
		return nil
	}
	was := map[string]registry.State{}
	for _, m := range prev.Members {
		was[m.ID] = m.State
	}
	var out []string
	for _, m := range cur.Members {
		if m.State != registry.StateActive {
			continue
		}
		if st, ok := was[m.ID]; !ok || st != registry.StateActive {
			out = append(out, m.ID)
		}
	}
	return out
}

// autoRebalancer runs the automatic rebalances of one replica.
type autoRebalancer struct {
	s     *Service
	log   *zap.Logger
	kicks chan struct{}

	mu     sync.Mutex
	joined []string // since the last rebalance began, for its log line
}

func newAutoRebalancer(s *Service) *autoRebalancer {
	return &autoRebalancer{s: s, log: s.log().Named("rebalance"), kicks: make(chan struct{}, 1)}
}

// kick says backends joined; it never blocks (Run's loop calls it).
func (a *autoRebalancer) kick(ids []string) {
	a.mu.Lock()
	a.joined = append(a.joined, ids...)
	a.mu.Unlock()
	a.log.Info("backends joined; automatic rebalance after the settle time", zap.Strings("backends", ids),
		zap.Duration("settle", a.settle()))
	select {
	case a.kicks <- struct{}{}:
	default:
	}
}

func (a *autoRebalancer) settle() time.Duration {
	if a.s.RebalanceSettle > 0 {
		return a.s.RebalanceSettle
	}
	return DefaultRebalanceSettle
}

func (a *autoRebalancer) run(ctx context.Context) {
	pending := false
	for {
		if !pending {
			select {
			case <-ctx.Done():
				return
			case <-a.kicks:
			}
		}
		if !a.wait(ctx) {
			return
		}
		pending = a.rebalance(ctx)
	}
}

// wait sleeps the settle time, again from the start after each join; false
// if ctx ended.
func (a *autoRebalancer) wait(ctx context.Context) bool {
	t := time.NewTimer(a.settle())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-a.kicks:
			t.Reset(a.settle())
		case <-t.C:
			return true
		}
	}
}

// blocked names what the automatic rebalance gives way to, or "".
func (a *autoRebalancer) blocked() string {
	s := a.s
	switch {
	case s.rebalancing.Load() > 0:
		return "an operator's rebalance runs here"
	case s.draining.Load() || s.Proxy.Draining():
		return "this gateway is draining"
	case s.drains.active(s.Proxy.Conns()):
		return "a drain owns connections here"
	}
	return ""
}

// rebalance relocates the misplaced connections; true if it must run again
// (a backend joined meanwhile, or it gave way before it was done).
func (a *autoRebalancer) rebalance(ctx context.Context) bool {
	for why, logged := a.blocked(), false; why != ""; why = a.blocked() {
		if !logged {
			a.log.Info("automatic rebalance waits", zap.String("for", why))
			logged = true
		}
		select {
		case <-ctx.Done():
			return false
		case <-a.kicks:
			return true
		case <-time.After(autoBlockedPoll):
		}
	}
	a.mu.Lock()
	ids := a.joined
	a.joined = nil
	a.mu.Unlock()
	misplaced := a.s.Proxy.CountMisplaced()
	if misplaced == 0 {
		a.log.Info("automatic rebalance: nothing misplaced", zap.Strings("joined", ids))
		return false
	}
	rate := a.share(ctx)
	a.log.Info("automatic rebalance: relocating misplaced connections", zap.Strings("joined", ids),
		zap.Int("misplaced", misplaced), zap.Float64("perSecond", rate))

	// A join restarts it (after the settle time); what it gives way to
	// stops it until that is over.
	pctx, cancel := context.WithCancel(ctx)
	kicked := make(chan bool, 1)
	go func() {
		select {
		case <-a.kicks:
			kicked <- true
			cancel()
		case <-pctx.Done():
			kicked <- false
		}
	}()
	gaveWay := ""
	tally := new(proxy.MoveTally)
	status := func(done bool) {
		t := moveProgress(tally)
		a.s.reloc.set(&adminv1.GatewayProgress{Gateway: a.s.ID, Misplaced: int64(misplaced), Moved: t.Moved,
			Evicted: t.Evicted, Gone: t.Gone, Done: done, Automatic: true})
	}
	status(false)
	n := relocatePaced(pctx, rate, func(n int) int {
		if why := a.blocked(); why != "" {
			gaveWay = why
			return 0
		}
		return a.s.Proxy.RelocateMisplaced(n, proxy.CauseRebalance, tally)
	}, tally, a.s.moveWait(), func(int) { status(false) })
	status(true)
	cancel()
	again := <-kicked
	a.log.Info("automatic rebalance over", zap.Int("misplaced", misplaced), zap.Int("relocated", n),
		zap.Int64("moved", tally.Moved.Load()), zap.Int64("evicted", tally.Evicted.Load()), zap.Int64("gone", tally.Gone.Load()),
		zap.Bool("restarted", again), zap.String("gaveWayTo", gaveWay))
	return ctx.Err() == nil && (again || gaveWay != "")
}

// share is this replica's part of the fleet-wide pace: in proportion to
// the connections each replica would relocate, as an operator's rebalance
// splits it. The dry runs are asked of the peers as an admin call of this
// replica's own (they change nothing).
func (a *autoRebalancer) share(ctx context.Context) float64 {
	pace := a.s.RebalancePace
	if pace <= 0 {
		pace = DefaultPace
	}
	snap := a.s.Watcher.Snapshot()
	if snap == nil || len(snap.Gateways) == 0 {
		return pace
	}
	ctx = WithCaller(ctx, Caller{Role: RoleAdmin, Principal: "auto-rebalance@" + a.s.ID})
	if r, ok := a.s.rebalanceShares(ctx, snap.Gateways, pace, false)[a.s.ID]; ok {
		return r
	}
	return pace / float64(len(snap.Gateways)) // not registered yet
}
