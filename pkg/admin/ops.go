package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"sync"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	adminv1 "github.com/devgate/devgate/api/devgate/admin/v1"
	"github.com/devgate/devgate/pkg/proxy"
	"github.com/devgate/devgate/pkg/registry"
)

func sortGateways(gs []*adminv1.Gateway) {
	sort.Slice(gs, func(i, j int) bool { return gs[i].Id < gs[j].Id })
}

// DrainBackend stores the drain in etcd; every replica's drainer acts on it.
func (s *Service) DrainBackend(ctx context.Context, req *adminv1.DrainBackendRequest) (*adminv1.DrainBackendResponse, error) {
	if s.static() {
		return nil, errStatic("drains are stored in etcd")
	}
	snap, err := s.snapshot()
	if err != nil {
		return nil, err
	}
	if _, ok := snap.Member(req.Id); !ok {
		return nil, status.Errorf(codes.NotFound, "backend %q is not registered", req.Id)
	}
	if req.EvictPerSecond < 0 || req.EvictPerSecond > 1e6 || len(req.Reason) > 256 {
		return nil, status.Error(codes.InvalidArgument, "evict_per_second 0..1e6, reason up to 256 bytes")
	}
	var wait time.Duration
	if req.Deadline != nil {
		if err := req.Deadline.CheckValid(); err != nil || req.Deadline.AsDuration() < 0 {
			return nil, status.Error(codes.InvalidArgument, "deadline: a duration from now, not negative")
		}
		wait = req.Deadline.AsDuration()
	}
	d := registry.DrainValue{Deadline: time.Now().Add(wait).UTC().Round(time.Millisecond), EvictPerSecond: req.EvictPerSecond, Reason: req.Reason}
	if d.EvictPerSecond == 0 {
		d.EvictPerSecond = DefaultPace
	}
	val, err := json.Marshal(d)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	wctx, cancel := context.WithTimeout(ctx, s.etcdTimeout())
	put, err := s.Client.Put(wctx, s.Keys.Drain(req.Id), string(val))
	cancel()
	if err != nil {
		return nil, s.etcdError(wctx, "store the drain of "+req.Id, err)
	}
	unconfirmed := s.awaitRevision(ctx, put.Header.Revision)
	s.log().Info("backend drained", zap.String("backend", req.Id), zap.Time("deadline", d.Deadline),
		zap.Float64("perSecond", d.EvictPerSecond), zap.String("reason", d.Reason), zap.Any("unconfirmed", unconfirmed))
	return &adminv1.DrainBackendResponse{Drain: drainPB(d), Unconfirmed: unconfirmed}, nil
}

// etcdTimeout bounds each admin write to etcd.
func (s *Service) etcdTimeout() time.Duration {
	if s.EtcdTimeout > 0 {
		return s.EtcdTimeout
	}
	return DefaultEtcdTimeout
}

// etcdError is a failed etcd write as the caller should see it:
// Unavailable, saying it is etcd that did not answer, not this gateway.
func (s *Service) etcdError(wctx context.Context, what string, err error) error {
	reason := err.Error()
	if wctx.Err() != nil {
		reason = fmt.Sprintf("no answer within %s (etcd down, unreachable from this gateway, or without a leader)", s.etcdTimeout())
	}
	return status.Errorf(codes.Unavailable, "etcd: %s: %s", what, reason)
}

// awaitRevision waits, up to the confirm wait, until every registered
// replica (this one too) routes on rev, so a caller reads its own write
// and a drain that returned is in force where it says. It returns the
// replicas that did not confirm, with why: behind etcd (a watcher cut off
// cannot see the change) or no answer. Replicas that left gateways/
// recently (a lease lost while cut off) are asked too, and named if they
// answer behind. A replica confirms once; the last answer of the others
// is what is reported.
func (s *Service) awaitRevision(ctx context.Context, rev int64) map[string]string {
	ctx, cancel := context.WithTimeout(ctx, s.confirmWait())
	defer cancel()
	confirmed := map[string]bool{}
	pending := map[string]string{}
	for {
		gws, partial := s.fleet(ctx)
		gws = append(gws, s.askDeparted(ctx)...)
		for _, g := range gws {
			switch {
			case confirmed[g.Id]:
			case g.RingRevision >= rev:
				confirmed[g.Id] = true
				delete(pending, g.Id)
			case !g.EtcdConnected:
				pending[g.Id] = fmt.Sprintf("routes on revision %d, not %d: etcd unreachable from it for %s",
					g.RingRevision, rev, g.EtcdStaleness.AsDuration().Round(100*time.Millisecond))
			default:
				pending[g.Id] = fmt.Sprintf("routes on revision %d, not %d: etcd last answered it %s ago",
					g.RingRevision, rev, g.EtcdStaleness.AsDuration().Round(100*time.Millisecond))
			}
		}
		for id, e := range partial.GetErrors() {
			if !confirmed[id] && (pending[id] == "" || ctx.Err() == nil) {
				pending[id] = "did not answer: " + e
			}
		}
		if len(pending) == 0 || ctx.Err() != nil {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(confirmPoll):
		}
	}
	if len(pending) == 0 {
		return nil
	}
	return pending
}

// confirmPoll is how often a drain asks the replicas again while some
// have not confirmed it.
const confirmPoll = 50 * time.Millisecond

func (s *Service) confirmWait() time.Duration {
	if s.ConfirmWait > 0 {
		return s.ConfirmWait
	}
	return DefaultConfirmWait
}

// UndrainBackend removes the drain; the backend rejoins the ring everywhere.
func (s *Service) UndrainBackend(ctx context.Context, req *adminv1.UndrainBackendRequest) (*adminv1.UndrainBackendResponse, error) {
	if s.static() {
		return nil, errStatic("drains are stored in etcd")
	}
	if err := registry.ValidID(req.Id); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	wctx, cancel := context.WithTimeout(ctx, s.etcdTimeout())
	r, err := s.Client.Delete(wctx, s.Keys.Drain(req.Id))
	cancel()
	if err != nil {
		return nil, s.etcdError(wctx, "delete the drain of "+req.Id, err)
	}
	unconfirmed := s.awaitRevision(ctx, r.Header.Revision)
	s.log().Info("backend undrained", zap.String("backend", req.Id), zap.Bool("wasDraining", r.Deleted > 0), zap.Any("unconfirmed", unconfirmed))
	return &adminv1.UndrainBackendResponse{WasDraining: r.Deleted > 0, Unconfirmed: unconfirmed}, nil
}

// Rebalance runs LocalRebalance on every replica, each at its share of the
// pace, and streams the merged progress.
func (s *Service) Rebalance(req *adminv1.RebalanceRequest, stream adminv1.Admin_RebalanceServer) error {
	if s.static() {
		return errStatic("its ring changes only on restart, so no connection is misplaced")
	}
	snap, err := s.snapshot()
	if err != nil {
		return err
	}
	rate := req.EvictPerSecond
	if rate <= 0 {
		rate = DefaultPace
	}
	gws := snap.Gateways
	if len(gws) == 0 { // not registered (static mode): this replica alone
		gws = []registry.Gateway{{ID: s.ID}}
	}
	shares := s.rebalanceShares(stream.Context(), gws, rate, req.DryRun)

	var mu sync.Mutex
	progress := map[string]*adminv1.GatewayProgress{}
	partial := &adminv1.Partial{Errors: map[string]string{}}
	changed := make(chan struct{}, 1)
	record := func(p *adminv1.GatewayProgress) {
		mu.Lock()
		progress[p.Gateway] = p
		mu.Unlock()
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	ctx := stream.Context()
	var wg sync.WaitGroup
	for _, gw := range gws {
		record(&adminv1.GatewayProgress{Gateway: gw.ID})
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			share := &adminv1.RebalanceRequest{EvictPerSecond: shares[gw.ID], DryRun: req.DryRun}
			if gw.ID == s.ID {
				err = s.localRebalance(ctx, share, record)
			} else {
				err = s.peerRebalance(ctx, gw, share, record)
			}
			if err != nil {
				mu.Lock()
				partial.Partial = true
				partial.Errors[gw.ID] = err.Error()
				p := progress[gw.ID]
				p.Done, p.Error = true, err.Error()
				mu.Unlock()
			}
		}()
	}
	all := make(chan struct{})
	go func() { wg.Wait(); close(all) }()
	send := func(done bool) error {
		mu.Lock()
		msg := &adminv1.RebalanceProgress{Done: done, Partial: partial}
		for _, p := range progress {
			msg.Misplaced += p.Misplaced
			msg.Moved += p.Moved
			msg.Evicted += p.Evicted
			msg.Gone += p.Gone
			msg.Gateways = append(msg.Gateways, &adminv1.GatewayProgress{Gateway: p.Gateway, Misplaced: p.Misplaced,
				Moved: p.Moved, Evicted: p.Evicted, Gone: p.Gone, Done: p.Done, Error: p.Error})
		}
		mu.Unlock()
		sort.Slice(msg.Gateways, func(i, j int) bool { return msg.Gateways[i].Gateway < msg.Gateways[j].Gateway })
		return stream.Send(msg)
	}
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-all:
			return send(true)
		case <-tick.C:
			if err := send(false); err != nil {
				<-all // ctx is done with the stream; the workers follow
				return err
			}
		case <-changed:
		}
	}
}

// rebalanceShares splits rate over gws by the connections each would
// evict (a dry run on each first), so the replicas finish together and the
// fleet keeps the pace; evenly when a replica cannot say, or has none.
func (s *Service) rebalanceShares(ctx context.Context, gws []registry.Gateway, rate float64, dryRun bool) map[string]float64 {
	shares := make(map[string]float64, len(gws))
	for _, gw := range gws {
		shares[gw.ID] = rate / float64(len(gws))
	}
	if dryRun || len(gws) < 2 {
		return shares
	}
	counts := make(map[string]int64, len(gws))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, gw := range gws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var n int64
			var err error
			if gw.ID == s.ID {
				n = int64(s.Proxy.CountMisplaced())
			} else {
				err = s.peerRebalance(ctx, gw, &adminv1.RebalanceRequest{DryRun: true},
					func(p *adminv1.GatewayProgress) { n = p.Misplaced })
			}
			if err == nil {
				mu.Lock()
				counts[gw.ID] = n
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	var total int64
	for _, n := range counts {
		total += n
	}
	if len(counts) < len(gws) || total == 0 {
		return shares
	}
	for id, n := range counts {
		if n > 0 {
			shares[id] = rate * float64(n) / float64(total)
		}
	}
	return shares
}

func (s *Service) peerRebalance(ctx context.Context, gw registry.Gateway, req *adminv1.RebalanceRequest, record func(*adminv1.GatewayProgress)) error {
	if gw.Admin == "" || s.DialPeer == nil {
		return status.Error(codes.Unavailable, "peer has no admin address")
	}
	conn, err := s.DialPeer(gw.Admin)
	if err != nil {
		return err
	}
	defer conn.Close()
	st, err := adminv1.NewAdminClient(conn).LocalRebalance(ctx, req)
	if err != nil {
		return err
	}
	for {
		p, err := st.Recv()
		if err != nil {
			return err
		}
		for _, g := range p.Gateways {
			record(g)
		}
		if p.Done {
			return nil
		}
	}
}

// LocalRebalance evicts this replica's misplaced connections at the pace asked.
func (s *Service) LocalRebalance(req *adminv1.RebalanceRequest, stream adminv1.Admin_LocalRebalanceServer) error {
	var mu sync.Mutex
	var last *adminv1.GatewayProgress
	errc := make(chan error, 1)
	go func() {
		errc <- s.localRebalance(stream.Context(), req, func(p *adminv1.GatewayProgress) {
			mu.Lock()
			last = p
			mu.Unlock()
		})
	}()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-errc:
			if err != nil {
				return err
			}
			mu.Lock()
			defer mu.Unlock()
			return stream.Send(&adminv1.RebalanceProgress{Misplaced: last.Misplaced, Moved: last.Moved, Evicted: last.Evicted,
				Gone: last.Gone, Done: true, Gateways: []*adminv1.GatewayProgress{last}})
		case <-tick.C:
			mu.Lock()
			p := last
			mu.Unlock()
			if p != nil {
				if err := stream.Send(&adminv1.RebalanceProgress{Misplaced: p.Misplaced, Moved: p.Moved, Evicted: p.Evicted,
					Gone: p.Gone, Gateways: []*adminv1.GatewayProgress{p}}); err != nil {
					return err
				}
			}
		}
	}
}

func (s *Service) localRebalance(ctx context.Context, req *adminv1.RebalanceRequest, record func(*adminv1.GatewayProgress)) error {
	misplaced := int64(s.Proxy.CountMisplaced())
	p := &adminv1.GatewayProgress{Gateway: s.ID, Misplaced: misplaced}
	record(p)
	if req.DryRun || misplaced == 0 {
		record(&adminv1.GatewayProgress{Gateway: s.ID, Misplaced: misplaced, Done: true})
		return nil
	}
	// An automatic rebalance here gives way while this one runs.
	s.rebalancing.Add(1)
	defer s.rebalancing.Add(-1)
	s.log().Info("rebalance: relocating misplaced connections", zap.Int64("misplaced", misplaced), zap.Float64("perSecond", req.EvictPerSecond))
	tally := new(proxy.MoveTally)
	progress := func(done bool) *adminv1.GatewayProgress {
		t := moveProgress(tally)
		p := &adminv1.GatewayProgress{Gateway: s.ID, Misplaced: misplaced, Moved: t.Moved, Evicted: t.Evicted, Gone: t.Gone, Done: done}
		s.reloc.set(p)
		return p
	}
	n := relocatePaced(ctx, req.EvictPerSecond, func(n int) int { return s.Proxy.RelocateMisplaced(n, proxy.CauseRebalance, tally) },
		tally, s.moveWait(), func(int) { record(progress(false)) })
	p = progress(true)
	record(p)
	s.log().Info("rebalance over", zap.Int("relocated", n), zap.Int64("moved", p.Moved), zap.Int64("evicted", p.Evicted), zap.Int64("gone", p.Gone))
	return ctx.Err()
}

// DrainGateway drains this replica, or forwards to the one named.
func (s *Service) DrainGateway(ctx context.Context, req *adminv1.DrainGatewayRequest) (*adminv1.DrainGatewayResponse, error) {
	if req.Id == "" || req.Id == s.ID {
		s.DrainSelf(req.EvictPerSecond)
		return &adminv1.DrainGatewayResponse{Gateway: s.localStatus()}, nil
	}
	var resp *adminv1.DrainGatewayResponse
	err := s.forwardToGateway(ctx, req.Id, func(ctx context.Context, c adminv1.AdminClient) error {
		var err error
		resp, err = c.DrainGateway(ctx, req)
		return err
	})
	return resp, err
}

// DrainSelf fails readiness, stops accepting, and evicts this replica's
// connections at perSecond (zero: DefaultPace). It returns at once; the
// eviction runs until UndrainSelf or until Run's ctx ends, and the replica
// stays up, not ready, meanwhile.
func (s *Service) DrainSelf(perSecond float64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.draining.Swap(true) {
		return
	}
	s.Proxy.StopAccepting()
	s.log().Info("draining this gateway", zap.Float64("perSecond", perSecond), zap.Int64("connections", s.Proxy.Proxied()))
	if s.runCtx == nil || s.stopped { // not running: Shutdown closes the rest
		return
	}
	ctx, cancel := context.WithCancel(s.runCtx)
	s.undrain = cancel
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.evictSelf(ctx, perSecond)
	}()
}
