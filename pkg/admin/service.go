// Package admin serves the admin API (api/devgate/admin/v1) of one gateway
// replica: it reads the registry's snapshots and the proxy's connection
// table, writes drains to etcd, evicts paced, and answers fleet-wide calls
// by asking the peers registered under gateways/.
package admin

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/devgate/devgate/api/devgate/admin/v1"
	"github.com/devgate/devgate/pkg/proxy"
	"github.com/devgate/devgate/pkg/registry"
)

// Defaults of Service's timeouts.
const (
	DefaultEtcdTimeout = 2 * time.Second
	DefaultConfirmWait = 3 * time.Second
)

// Service implements adminv1.AdminServer for one replica. Set the fields,
// call Run in a goroutine, and register it on a gRPC server.
type Service struct {
	adminv1.UnimplementedAdminServer

	ID      string // this gateway's id under gateways/
	Version string
	Started time.Time

	Proxy   *proxy.Proxy
	Watcher Fleet            // snapshots: backends, drains, gateways
	Client  *clientv3.Client // writes drains; nil with a static list (StaticFleet)
	Keys    registry.Keys

	// DialPeer opens a client connection to a peer's admin address with
	// this replica's credentials. Required for fleet-wide answers.
	DialPeer func(addr string) (*grpc.ClientConn, error)

	// PeerTimeout bounds each peer's answer. If zero, 2s.
	PeerTimeout time.Duration

	// EtcdTimeout bounds each write to etcd (drain, undrain), so a call
	// during etcd trouble answers Unavailable with the reason before the
	// client gives up. If zero, DefaultEtcdTimeout.
	EtcdTimeout time.Duration

	// ConfirmWait bounds how long a drain or undrain waits for every
	// replica to route on it before naming those that did not. If zero,
	// DefaultConfirmWait.
	ConfirmWait time.Duration

	// DepartedMemory is how long a replica that left gateways/ is still
	// asked to confirm a drain. If zero, DefaultDepartedMemory.
	DepartedMemory time.Duration

	// LookupFallbacks is the fallback order length Lookup reports by
	// default: the data path's tries minus one. If zero, 2.
	LookupFallbacks int

	// AutoRebalance relocates this replica's misplaced connections after a
	// backend joins the ring or comes back (rebalance.auto; autorebalance.go).
	AutoRebalance bool
	// RebalancePace is the fleet-wide pace of automatic rebalances, split
	// over the replicas as an operator's is. If zero, DefaultPace.
	RebalancePace float64
	// RebalanceSettle is how long an automatic rebalance waits after the
	// last join, so every replica routes on the new ring. If zero,
	// DefaultRebalanceSettle.
	RebalanceSettle time.Duration

	Logger *zap.Logger

	draining    atomic.Bool
	rebalancing atomic.Int32 // operators' rebalances running here
	reloc       relocStatus  // the latest relocation of misplaced connections here
	runOnce     sync.Once
	drains      *drainer
	auto        *autoRebalancer
	departed    departed

	mu      sync.Mutex
	runCtx  context.Context // set by Run; DrainSelf's eviction runs under it
	stopped bool
	undrain context.CancelFunc // ends DrainSelf's eviction
	wg      sync.WaitGroup     // DrainSelf's eviction
}

func (s *Service) log() *zap.Logger {
	if s.Logger == nil {
		return zap.NewNop()
	}
	return s.Logger
}

// Run carries out drains stored in etcd on this replica until ctx ends.
func (s *Service) Run(ctx context.Context) {
	s.runOnce.Do(func() {
		d := newDrainer(ctx, s.Proxy, s.log().Named("drain"))
		d.share, d.moveWait = s.paceShare, s.moveWait()
		s.mu.Lock()
		s.runCtx, s.drains = ctx, d
		s.mu.Unlock()
		if s.AutoRebalance && !s.static() {
			s.auto = newAutoRebalancer(s)
			s.wg.Add(1)
			go func() { defer s.wg.Done(); s.auto.run(ctx) }()
		}
	})
	var seen *registry.Snapshot
	for {
		changed := s.Watcher.Changed()
		if snap := s.Watcher.Snapshot(); snap != nil && snap != seen {
			s.drains.update(snap)
			s.departed.update(snap, s.ID, time.Now(), s.departedMemory())
			if ids := joined(seen, snap); len(ids) > 0 && s.auto != nil {
				s.auto.kick(ids)
			}
			seen = snap
		}
		select {
		case <-ctx.Done():
			s.drains.wait()
			s.mu.Lock()
			s.stopped = true
			s.mu.Unlock()
			s.wg.Wait()
			return
		case <-changed:
		}
	}
}

// paceShare splits a fleet-wide pace by the replicas' connections to a
// backend: a replica holding a third of them evicts at a third of the pace,
// so all finish together and the fleet's rate is the pace. It reports false
// when the peers cannot be asked (the caller splits evenly then).
func (s *Service) paceShare(ctx context.Context, backend string, pace float64) (float64, bool) {
	if pace <= 0 {
		pace = DefaultPace
	}
	mine := int64(s.Proxy.Conns()[backend])
	gws, partial := s.fleet(ctx)
	if partial.GetPartial() {
		return 0, false
	}
	var total int64
	for _, g := range gws {
		total += g.ConnectionsByBackend[backend]
	}
	if total == 0 || mine == 0 {
		return pace, true // nothing to split: whatever is here goes at the pace
	}
	return pace * float64(mine) / float64(total), true
}

// Ready reports whether this replica should get new devices, and why not.
func (s *Service) Ready() (bool, string) {
	snap := s.Watcher.Snapshot()
	switch {
	case s.draining.Load() || s.Proxy.Draining():
		return false, fmt.Sprintf("draining: accepting no devices, %d connections left", s.Proxy.Proxied())
	case snap == nil:
		return false, "no ring yet"
	case s.static():
		return true, fmt.Sprintf("ok: static list, %d backends in the ring", snap.Ring.Len())
	}
	st := s.Watcher.Stats()
	held := ""
	if st.Held > 0 {
		held = fmt.Sprintf("; holding %d backends gone from etcd (panic threshold)", st.Held)
	}
	if !st.Connected {
		return true, fmt.Sprintf("etcd unreachable for %s; routing on revision %d%s", st.Staleness.Round(time.Second), snap.Revision, held)
	}
	return true, fmt.Sprintf("ok: revision %d, %d backends in the ring%s", snap.Revision, snap.Ring.Len(), held)
}

func (s *Service) snapshot() (*registry.Snapshot, error) {
	snap := s.Watcher.Snapshot()
	if snap == nil {
		return nil, status.Error(codes.Unavailable, "no ring yet: waiting for etcd")
	}
	return snap, nil
}

// LocalStatus is this replica's own state.
func (s *Service) LocalStatus(context.Context, *adminv1.LocalStatusRequest) (*adminv1.Gateway, error) {
	return s.localStatus(), nil
}

func (s *Service) localStatus() *adminv1.Gateway {
	g := &adminv1.Gateway{
		Id: s.ID, Version: s.Version, Uptime: durationpb.New(time.Since(s.Started)),
		Connections: s.Proxy.Proxied(), Draining: s.draining.Load() || s.Proxy.Draining(),
		ConnectionsByBackend: map[string]int64{}, Ejections: s.ejections(), Admission: s.admission(),
		Rebalance: s.reloc.get(),
	}
	g.Ready, _ = s.Ready()
	for id, n := range s.Proxy.Conns() {
		g.ConnectionsByBackend[id] = int64(n)
	}
	s.mu.Lock()
	d := s.drains
	s.mu.Unlock()
	if d != nil {
		g.Drains = d.progress()
	}
	if !s.static() { // without etcd, no staleness to report
		st := s.Watcher.Stats()
		g.EtcdConnected = st.Connected
		g.EtcdStaleness = durationpb.New(st.Staleness)
	}
	if snap := s.Watcher.Snapshot(); snap != nil {
		g.RingRevision, g.RingSize = snap.Revision, int32(snap.Ring.Len())
		for _, gw := range snap.Gateways {
			if gw.ID == s.ID {
				g.Admin = gw.Admin
			}
		}
	}
	return g
}

// fleet asks every registered gateway for its status (this one locally).
func (s *Service) fleet(ctx context.Context) ([]*adminv1.Gateway, *adminv1.Partial) {
	snap := s.Watcher.Snapshot()
	partial := &adminv1.Partial{Errors: map[string]string{}}
	out := []*adminv1.Gateway{s.localStatus()}
	if snap == nil {
		return out, partial
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, gw := range snap.Gateways {
		if gw.ID == s.ID {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := s.peerStatus(ctx, gw)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				partial.Partial = true
				partial.Errors[gw.ID] = err.Error()
				return
			}
			out = append(out, st)
		}()
	}
	wg.Wait()
	sortGateways(out)
	return out, partial
}

func (s *Service) peerStatus(ctx context.Context, gw registry.Gateway) (*adminv1.Gateway, error) {
	var st *adminv1.Gateway
	err := s.withPeer(ctx, gw, func(ctx context.Context, c adminv1.AdminClient) error {
		var err error
		st, err = c.LocalStatus(ctx, &adminv1.LocalStatusRequest{})
		return err
	})
	return st, err
}

// withPeer calls f on gw's admin API under the peer timeout.
func (s *Service) withPeer(ctx context.Context, gw registry.Gateway, f func(context.Context, adminv1.AdminClient) error) error {
	if gw.Admin == "" {
		return errors.New("registered without an admin address")
	}
	if s.DialPeer == nil {
		return errors.New("peer calls are not configured")
	}
	conn, err := s.DialPeer(gw.Admin)
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, s.peerTimeout())
	defer cancel()
	return f(ctx, adminv1.NewAdminClient(conn))
}

func (s *Service) peerTimeout() time.Duration {
	if s.PeerTimeout > 0 {
		return s.PeerTimeout
	}
	return 2 * time.Second
}

// ListGateways answers for the fleet; consistent says whether every
// answering replica routes on the same ring revision.
func (s *Service) ListGateways(ctx context.Context, _ *adminv1.ListGatewaysRequest) (*adminv1.ListGatewaysResponse, error) {
	gws, partial := s.fleet(ctx)
	resp := &adminv1.ListGatewaysResponse{Gateways: gws, Partial: partial, Consistent: true}
	for _, g := range gws {
		if g.RingRevision != gws[0].RingRevision {
			resp.Consistent = false
		}
	}
	return resp, nil
}

// ListBackends lists the backends with their fleet-wide connections.
func (s *Service) ListBackends(ctx context.Context, _ *adminv1.ListBackendsRequest) (*adminv1.ListBackendsResponse, error) {
	snap, err := s.snapshot()
	if err != nil {
		return nil, err
	}
	gws, partial := s.fleet(ctx)
	shares := map[string]float64{}
	for i, sh := range snap.Ring.Shares() {
		shares[snap.Ring.Backends()[i].ID] = sh
	}
	resp := &adminv1.ListBackendsResponse{Revision: snap.Revision, Partial: partial}
	for _, m := range snap.Members {
		b := &adminv1.Backend{
			Id: m.ID, Addr: m.Addr, Addrs: m.Addrs, Weight: m.Weight, Zone: m.Zone, Meta: m.Meta,
			State: backendState(m.State), RingShare: shares[m.ID],
			ConnectionsByGateway: map[string]int64{},
		}
		if m.Drain != nil {
			b.Drain = drainPB(*m.Drain)
		}
		for _, g := range gws {
			if n := g.ConnectionsByBackend[m.ID]; n > 0 {
				b.ConnectionsByGateway[g.Id] = n
				b.Connections += n
			}
			if dp := g.Drains[m.ID]; dp != nil {
				if b.DrainProgress == nil {
					b.DrainProgress = &adminv1.MoveProgress{}
				}
				b.DrainProgress.Moved += dp.Moved
				b.DrainProgress.Evicted += dp.Evicted
				b.DrainProgress.Gone += dp.Gone
			}
		}
		addEjections(b, gws)
		addAdmission(b, gws)
		resp.Backends = append(resp.Backends, b)
	}
	return resp, nil
}

func backendState(st registry.State) adminv1.BackendState {
	switch st {
	case registry.StateActive:
		return adminv1.BackendState_BACKEND_STATE_ACTIVE
	case registry.StateDraining:
		return adminv1.BackendState_BACKEND_STATE_DRAINING
	case registry.StateHeld:
		return adminv1.BackendState_BACKEND_STATE_HELD
	}
	return adminv1.BackendState_BACKEND_STATE_UNSPECIFIED
}

func drainPB(d registry.DrainValue) *adminv1.Drain {
	return &adminv1.Drain{Deadline: timestamppb.New(d.Deadline), EvictPerSecond: d.EvictPerSecond, Reason: d.Reason}
}

// Lookup answers with the ring the data path routes on.
func (s *Service) Lookup(_ context.Context, req *adminv1.LookupRequest) (*adminv1.LookupResponse, error) {
	if req.Devid == "" || len(req.Devid) > 1024 {
		return nil, status.Error(codes.InvalidArgument, "devid: 1..1024 bytes")
	}
	snap, err := s.snapshot()
	if err != nil {
		return nil, err
	}
	n := int(req.Fallbacks)
	if n == 0 {
		n = s.LookupFallbacks
		if n == 0 {
			n = 2
		}
	}
	resp := &adminv1.LookupResponse{Revision: snap.Revision, Gateway: s.ID}
	bs := snap.Ring.Backends()
	for _, i := range snap.Ring.Owners([]byte(req.Devid), min(n+1, len(bs)), nil) {
		resp.Order = append(resp.Order, bs[i].ID)
	}
	if len(resp.Order) > 0 {
		resp.Owner = resp.Order[0]
	}
	return resp, nil
}
