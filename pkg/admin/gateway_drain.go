package admin

import (
	"context"
	"errors"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	adminv1 "github.com/devgate/devgate/api/devgate/admin/v1"
	"github.com/devgate/devgate/pkg/proxy"
)

// drainRecheck is how often a drained replica looks again for connections
// to evict: a device that was sending its login as accepting stopped is
// routed after the first pass emptied the table.
const drainRecheck = time.Second

// UndrainGateway ends the drain of this replica, or forwards to the one named.
func (s *Service) UndrainGateway(ctx context.Context, req *adminv1.UndrainGatewayRequest) (*adminv1.UndrainGatewayResponse, error) {
	if req.Id == "" || req.Id == s.ID {
		was, err := s.UndrainSelf(ctx)
		if err != nil {
			return nil, status.Errorf(codes.FailedPrecondition, "undrain gateway %s: %v", s.ID, err)
		}
		return &adminv1.UndrainGatewayResponse{WasDraining: was, Gateway: s.localStatus()}, nil
	}
	var resp *adminv1.UndrainGatewayResponse
	err := s.forwardToGateway(ctx, req.Id, func(ctx context.Context, c adminv1.AdminClient) error {
		var err error
		resp, err = c.UndrainGateway(ctx, req)
		return err
	})
	return resp, err
}

// UndrainSelf ends DrainSelf: the eviction stops, the proxy listens again
// on its addresses, and readiness follows. It reports whether this replica
// was draining. When the proxy cannot listen again (the address is taken,
// or it is shutting down) the replica stays drained and the error says why.
func (s *Service) UndrainSelf(ctx context.Context) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.draining.Load() {
		return false, nil
	}
	if err := s.Proxy.ResumeAccepting(ctx); err != nil {
		if errors.Is(err, proxy.ErrServerClosed) {
			err = errors.New("shutting down")
		}
		return true, err
	}
	if s.undrain != nil {
		s.undrain()
		s.undrain = nil
	}
	s.draining.Store(false)
	s.log().Info("gateway undrained: accepting devices again", zap.Int64("connections", s.Proxy.Proxied()))
	return true, nil
}

// evictSelf evicts this replica's connections at perSecond until ctx ends
// (undrain, or Run's end), looking again now and then for late ones.
func (s *Service) evictSelf(ctx context.Context, perSecond float64) {
	total := 0
	evict := func(n int) int { return s.Proxy.Evict("", n, proxy.CauseGatewayDrain) }
	for first := true; ; first = false {
		if n := Pace(ctx, perSecond, evict, nil); (n > 0 || first) && ctx.Err() == nil {
			total += n
			s.log().Info("gateway drained: no connections left; not ready until undrain-gateway or SIGTERM",
				zap.Int("evicted", total))
		}
		t := time.NewTimer(drainRecheck)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// forwardToGateway calls f on the admin API of gateway id. Errors of the
// call itself come back with their code; a peer that cannot be reached is
// Unavailable; an id not under gateways/ is NotFound.
func (s *Service) forwardToGateway(ctx context.Context, id string, f func(context.Context, adminv1.AdminClient) error) error {
	snap, err := s.snapshot()
	if err != nil {
		return err
	}
	for _, gw := range snap.Gateways {
		if gw.ID != id {
			continue
		}
		err := s.withPeer(ctx, gw, f)
		if st, ok := status.FromError(err); ok && err != nil && st.Code() != codes.Unavailable && st.Code() != codes.DeadlineExceeded {
			return status.Errorf(st.Code(), "gateway %s: %s", id, st.Message())
		}
		if err != nil {
			return status.Errorf(codes.Unavailable, "gateway %s: %v", id, err)
		}
		return nil
	}
	return status.Errorf(codes.NotFound, "gateway %q is not registered", id)
}
