package admin

import (
	"fmt"
	"io"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"google.golang.org/protobuf/types/known/durationpb"

	adminv1 "github.com/devgate/devgate/api/devgate/admin/v1"
	"github.com/devgate/devgate/internal/testkit"
	"github.com/devgate/devgate/pkg/proxy"
	"github.com/devgate/devgate/pkg/registry"
	"github.com/devgate/devgate/pkg/ring"
)

// device is one held connection through a gateway.
type device struct {
	id, backend string
	gw          *gateway
	closed      chan struct{}
}

// holdDevices logs n devices in, alternating over the gateways, and keeps
// each connection open until the gateway closes it.
func holdDevices(t *testing.T, f *fleet, n int) []*device {
	var devs []*device
	for i := 0; i < n; i++ {
		d := &device{id: fmt.Sprintf("dev-%d", i), gw: f.gateways[i%len(f.gateways)], closed: make(chan struct{})}
		c, b := login(t, d.gw.addr, d.id)
		d.backend = b
		devs = append(devs, d)
		go func() { defer close(d.closed); defer c.Close(); io.Copy(io.Discard, c) }()
	}
	return devs
}

func (d *device) isClosed() bool {
	select {
	case <-d.closed:
		return true
	default:
		return false
	}
}

// relocated sums, over the fleet, the moves ended for cause, whatever
// their result (today evictions; moves where rehome is on).
func (f *fleet) relocated(cause proxy.Cause) uint64 {
	var n uint64
	for _, g := range f.gateways {
		for k, v := range g.proxy.Stats().Rehomes {
			if k.Cause == cause {
				n += v
			}
		}
	}
	return n
}

func endedPB(p *adminv1.MoveProgress) int64 { return p.GetMoved() + p.GetEvicted() + p.GetGone() }

// A drain relocates the backend's connections after its deadline, and its
// progress (moved, evicted, gone) is summed over the fleet in ListBackends.
func TestDrainProgressCountsRelocations(t *testing.T) {
	f := newFleet(t, 2, 2)
	var onB1 []*device
	for _, d := range holdDevices(t, f, 24) {
		if d.backend == "b1" {
			onB1 = append(onB1, d)
		}
	}
	if len(onB1) < 2 {
		t.Fatalf("only %d devices on b1", len(onB1))
	}
	if _, err := f.client(f.gateways[0], adminToken).DrainBackend(ctx5(t), &adminv1.DrainBackendRequest{
		Id: "b1", EvictPerSecond: 200}); err != nil {
		t.Fatal(err)
	}
	for _, d := range onB1 {
		select {
		case <-d.closed:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s still on b1 after the drain", d.id)
		}
	}
	cl := f.client(f.gateways[1], readToken)
	waitUntil(t, "drain progress of every relocation", func() bool {
		resp, err := cl.ListBackends(ctx5(t), &adminv1.ListBackendsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range resp.Backends {
			if b.Id == "b1" {
				return endedPB(b.DrainProgress) == int64(len(onB1))
			}
		}
		return false
	})
	if got := f.relocated(proxy.CauseDrain); got != uint64(len(onB1)) {
		t.Fatalf("devgate_rehome_total{cause=drain} sums to %d, want %d", got, len(onB1))
	}
	gws, err := cl.ListGateways(ctx5(t), &adminv1.ListGatewaysRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var sum int64
	for _, g := range gws.Gateways {
		sum += endedPB(g.Drains["b1"])
	}
	if sum != int64(len(onB1)) {
		t.Fatalf("gateways report %d relocations of b1, want %d: %v", sum, len(onB1), gws.Gateways)
	}
}

// autoFleet is a fleet whose gateways rebalance by themselves, logging to logs.
func autoFleet(t *testing.T, gateways, backends int) (*fleet, *observer.ObservedLogs) {
	core, logs := observer.New(zapcore.InfoLevel)
	f := newFleetWith(t, gateways, backends, func(s *Service) {
		s.AutoRebalance, s.RebalancePace, s.RebalanceSettle = true, 200, 300*time.Millisecond
		s.Logger = zap.New(core).With(zap.String("gateway", s.ID))
	})
	return f, logs
}

// misplacedBy lists the devices the ring of g now gives another backend.
func misplacedBy(r ring.Ring, devs []*device) (moved, stay []*device) {
	for _, d := range devs {
		if r.Backends()[r.Lookup([]byte(d.id))].ID != d.backend {
			moved = append(moved, d)
		} else {
			stay = append(stay, d)
		}
	}
	return moved, stay
}

// After a backend joins, every replica relocates its misplaced devices by
// itself (rebalance.auto), and no other.
func TestAutoRebalanceAfterJoin(t *testing.T) {
	f, logs := autoFleet(t, 2, 2)
	devs := holdDevices(t, f, 60)
	f.addBackend("b3")
	for _, g := range f.gateways {
		waitUntil(t, "b3 in every ring", func() bool { return g.watcher.Ring().Len() == 3 })
	}
	moved, stay := misplacedBy(f.gateways[0].watcher.Ring(), devs)
	if len(moved) == 0 {
		t.Fatal("no device is misplaced after adding b3")
	}
	for _, d := range moved {
		select {
		case <-d.closed:
		case <-time.After(15 * time.Second):
			t.Fatalf("%s belongs to b3 now but was not relocated", d.id)
		}
	}
	testkit.WaitFor(t, 10*time.Second, 10*time.Millisecond, "every relocation counted", func() bool {
		return f.relocated(proxy.CauseRebalance) == uint64(len(moved))
	})
	for _, d := range stay {
		if d.isClosed() {
			t.Fatalf("%s stays on %s but was relocated", d.id, d.backend)
		}
	}
	for _, g := range f.gateways {
		if n := g.proxy.CountMisplaced(); n != 0 {
			t.Fatalf("%s still holds %d misplaced connections", g.id, n)
		}
	}
	waitUntil(t, "each gateway logged the end", func() bool {
		return logs.FilterMessage("automatic rebalance over").Len() == 2
	})
	var relocated int64
	for _, e := range logs.FilterMessage("automatic rebalance over").All() {
		relocated += e.ContextMap()["relocated"].(int64)
	}
	if relocated != int64(len(moved)) {
		t.Fatalf("logged %d relocations, want %d", relocated, len(moved))
	}
	t.Logf("auto rebalance: %d of %d devices misplaced after adding b3, all relocated, none other", len(moved), len(devs))
	f.cancel()
}

// The automatic rebalance gives way to a drain that owns connections on the
// replica, and goes on when the drain is over (here: undrained, which is
// itself a join).
func TestAutoRebalanceGivesWayToDrain(t *testing.T) {
	f, logs := autoFleet(t, 2, 2)
	devs := holdDevices(t, f, 40)
	if _, err := f.client(f.gateways[0], adminToken).DrainBackend(ctx5(t), &adminv1.DrainBackendRequest{
		Id: "b1", Deadline: durationpb.New(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	f.addBackend("b3")
	waitUntil(t, "both gateways wait for the drain", func() bool {
		return logs.FilterMessage("automatic rebalance waits").FilterField(zap.String("for", "a drain owns connections here")).Len() == 2
	})
	for _, d := range devs {
		if d.isClosed() {
			t.Fatalf("%s relocated while a drain owns the connections", d.id)
		}
	}
	if n := f.relocated(proxy.CauseRebalance); n != 0 {
		t.Fatalf("%d relocated while waiting", n)
	}
	if _, err := f.client(f.gateways[1], adminToken).UndrainBackend(ctx5(t), &adminv1.UndrainBackendRequest{Id: "b1"}); err != nil {
		t.Fatal(err)
	}
	for _, g := range f.gateways {
		waitUntil(t, "b1 back in every ring", func() bool {
			m, _ := g.watcher.Snapshot().Member("b1")
			return m.State == registry.StateActive && g.watcher.Ring().Len() == 3
		})
	}
	moved, stay := misplacedBy(f.gateways[0].watcher.Ring(), devs)
	for _, d := range moved {
		select {
		case <-d.closed:
		case <-time.After(15 * time.Second):
			t.Fatalf("%s belongs to b3 but was not relocated after the drain ended", d.id)
		}
	}
	testkit.WaitFor(t, 10*time.Second, 10*time.Millisecond, "every relocation counted", func() bool {
		return f.relocated(proxy.CauseRebalance) == uint64(len(moved))
	})
	for _, d := range stay {
		if d.isClosed() {
			t.Fatalf("%s stays on %s but was relocated", d.id, d.backend)
		}
	}
	f.cancel()
}

// joined names backends that start being routed to: new, back after
// leaving or a drain, back in etcd after a hold.
func TestJoined(t *testing.T) {
	snap := func(ms ...registry.Member) *registry.Snapshot { return &registry.Snapshot{Members: ms} }
	m := func(id string, st registry.State) registry.Member {
		return registry.Member{Backend: ring.Backend{ID: id}, State: st}
	}
	a, b := m("a", registry.StateActive), m("b", registry.StateActive)
	for _, tc := range []struct {
		name      string
		prev, cur *registry.Snapshot
		want      string
	}{
		{"first snapshot", nil, snap(a, b), "[]"},
		{"unchanged", snap(a, b), snap(a, b), "[]"},
		{"new", snap(a), snap(a, b), "[b]"},
		{"left", snap(a, b), snap(a), "[]"},
		{"undrained", snap(a, m("b", registry.StateDraining)), snap(a, b), "[b]"},
		{"drained", snap(a, b), snap(a, m("b", registry.StateDraining)), "[]"},
		{"back after a hold", snap(a, m("b", registry.StateHeld)), snap(a, b), "[b]"},
		{"held", snap(a, b), snap(a, m("b", registry.StateHeld)), "[]"},
	} {
		if got := fmt.Sprint(joined(tc.prev, tc.cur)); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, got, tc.want)
		}
	}
}

// The automatic rebalance waits while an operator's rebalance runs on the
// replica (stood in for by its counter), then goes on by itself.
func TestAutoRebalanceGivesWayToOperator(t *testing.T) {
	f, logs := autoFleet(t, 2, 2)
	devs := holdDevices(t, f, 40)
	for _, g := range f.gateways {
		g.svc.rebalancing.Add(1)
	}
	f.addBackend("b3")
	waitUntil(t, "both gateways wait for the operator", func() bool {
		return logs.FilterMessage("automatic rebalance waits").FilterField(zap.String("for", "an operator's rebalance runs here")).Len() == 2
	})
	if n := f.relocated(proxy.CauseRebalance); n != 0 {
		t.Fatalf("%d relocated while an operator's rebalance runs", n)
	}
	for _, g := range f.gateways {
		g.svc.rebalancing.Add(-1)
	}
	moved, stay := misplacedBy(f.gateways[0].watcher.Ring(), devs)
	testkit.WaitFor(t, 15*time.Second, 10*time.Millisecond, "every misplaced device relocated", func() bool {
		return f.relocated(proxy.CauseRebalance) == uint64(len(moved))
	})
	for _, d := range stay {
		if d.isClosed() {
			t.Fatalf("%s stays on %s but was relocated", d.id, d.backend)
		}
	}
	f.cancel()
}

// Two joins in a row (the second may restart the settle time or the
// rebalance under way): the fleet still converges to the ring.
func TestAutoRebalanceAfterTwoJoins(t *testing.T) {
	f, logs := autoFleet(t, 2, 2)
	devs := holdDevices(t, f, 60)
	f.addBackend("b3")
	f.addBackend("b4")
	for _, g := range f.gateways {
		waitUntil(t, "b3 and b4 in every ring", func() bool { return g.watcher.Ring().Len() == 4 })
	}
	moved, _ := misplacedBy(f.gateways[0].watcher.Ring(), devs)
	testkit.WaitFor(t, 15*time.Second, 10*time.Millisecond, "every misplaced device relocated", func() bool {
		return f.relocated(proxy.CauseRebalance) == uint64(len(moved))
	})
	waitUntil(t, "each gateway logged the end", func() bool {
		return logs.FilterMessage("automatic rebalance over").Len() >= 2
	})
	for _, g := range f.gateways {
		if n := g.proxy.CountMisplaced(); n != 0 {
			t.Fatalf("%s still holds %d misplaced connections", g.id, n)
		}
	}
	t.Logf("%d rebalances started for %d joins on 2 gateways", logs.FilterMessage("automatic rebalance: relocating misplaced connections").Len(), 2)
	f.cancel()
}
