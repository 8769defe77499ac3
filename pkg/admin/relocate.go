package admin

import (
	"context"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	adminv1 "github.com/devgate/devgate/api/devgate/admin/v1"
	"github.com/devgate/devgate/pkg/proxy"
)

// movePoll is how often a paced relocation looks whether its moves ended.
const movePoll = 20 * time.Millisecond

// relocatePaced calls relocate(n) through Pace at perSecond and returns how
// many connections it began to move or evicted. A Pace round ends when
// relocate gives fewer than asked, which also happens while moves begun
// earlier are on their way (not closing, not done, still counted where they
// were); so each round waits, up to wait, for its moves to end and looks
// again, until a round relocates nothing. progress gets the running total,
// also while waiting.
func relocatePaced(ctx context.Context, perSecond float64, relocate func(n int) int, tally *proxy.MoveTally,
	wait time.Duration, progress func(total int)) int {
	base := ended(tally)
	total := 0
	for {
		n := Pace(ctx, perSecond, relocate, func(t int) { progress(total + t) })
		total += n
		waitMoves(ctx, tally, base+int64(total), wait, func() { progress(total) })
		if n == 0 || ctx.Err() != nil {
			return total
		}
	}
}

func ended(t *proxy.MoveTally) int64 { return t.Moved.Load() + t.Evicted.Load() + t.Gone.Load() }

// waitMoves waits until tally counts want ended moves, wait passes or ctx ends.
func waitMoves(ctx context.Context, tally *proxy.MoveTally, want int64, wait time.Duration, tick func()) {
	deadline := time.Now().Add(wait)
	t := time.NewTicker(movePoll)
	defer t.Stop()
	for ended(tally) < want && time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			tick()
		}
	}
	tick()
}

// moveWait bounds how long a paced relocation waits for its moves to end:
// a move ends within the proxy's rehome timeout.
func (s *Service) moveWait() time.Duration {
	t := s.Proxy.Rehome.Timeout
	if t <= 0 {
		t = proxy.DefaultRehomeTimeout
	}
	return t + time.Second
}

// relocShown is how long an ended relocation stays in the replica's status.
const relocShown = time.Minute

// relocStatus is the latest relocation of misplaced connections on this
// replica (an operator's rebalance or an automatic one), for the status
// every replica reports: the dashboard shows it whoever started it.
type relocStatus struct {
	mu  sync.Mutex
	p   *adminv1.GatewayProgress
	end time.Time // when p ended (p.Done)
}

func (r *relocStatus) set(p *adminv1.GatewayProgress) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.p = p
	if p.Done {
		r.end = time.Now()
	}
}

// get is the running relocation, or the last one within relocShown of its end.
func (r *relocStatus) get() *adminv1.GatewayProgress {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.p == nil || r.p.Done && time.Since(r.end) > relocShown {
		return nil
	}
	return proto.Clone(r.p).(*adminv1.GatewayProgress)
}
