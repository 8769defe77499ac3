package admin

import (
	"context"
	"sync"
	"time"

	adminv1 "github.com/devgate/devgate/api/devgate/admin/v1"
	"github.com/devgate/devgate/pkg/registry"
)

// DefaultDepartedMemory is how long a replica that left gateways/ is
// still asked to confirm a change: a replica cut off from etcd loses its
// lease but may keep routing on its old ring all along.
const DefaultDepartedMemory = 5 * time.Minute

// departed remembers the replicas that left gateways/ recently.
type departed struct {
	mu   sync.Mutex
	last map[string]registry.Gateway // in the last snapshot seen
	gone map[string]departedGateway
}

type departedGateway struct {
	gw registry.Gateway
	at time.Time
}

// update records who left and who came back since the last snapshot.
func (d *departed) update(snap *registry.Snapshot, self string, now time.Time, memory time.Duration) {
	d.mu.Lock()
	defer d.mu.Unlock()
	cur := make(map[string]registry.Gateway, len(snap.Gateways))
	for _, g := range snap.Gateways {
		if g.ID != self {
			cur[g.ID] = g
		}
	}
	if d.gone == nil {
		d.gone = map[string]departedGateway{}
	}
	for id, g := range d.last {
		if _, ok := cur[id]; !ok {
			d.gone[id] = departedGateway{g, now}
		}
	}
	for id, g := range d.gone {
		if _, back := cur[id]; back || now.Sub(g.at) > memory {
			delete(d.gone, id)
		}
	}
	d.last = cur
}

func (d *departed) list() []departedGateway {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]departedGateway, 0, len(d.gone))
	for _, g := range d.gone {
		out = append(out, g)
	}
	return out
}

// askDeparted returns the status of the replicas that left gateways/
// recently and still answer: one that answers may still be routing.
func (s *Service) askDeparted(ctx context.Context) []*adminv1.Gateway {
	gone := s.departed.list()
	var mu sync.Mutex
	var wg sync.WaitGroup
	var out []*adminv1.Gateway
	for _, g := range gone {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if st, err := s.peerStatus(ctx, g.gw); err == nil && st.GetId() == g.gw.ID {
				mu.Lock()
				out = append(out, st)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return out
}

func (s *Service) departedMemory() time.Duration {
	if s.DepartedMemory > 0 {
		return s.DepartedMemory
	}
	return DefaultDepartedMemory
}
