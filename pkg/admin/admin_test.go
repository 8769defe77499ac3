package admin

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	adminv1 "github.com/devgate/devgate/api/devgate/admin/v1"
	"github.com/devgate/devgate/pkg/proxy"
	"github.com/devgate/devgate/pkg/sim"
)

// login connects a device through a gateway and returns the connection
// and the backend that answered.
func login(t *testing.T, addr, devid string) (net.Conn, string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(sim.AppendFrame(nil, sim.TypeLogin, 1, 0, []byte(fmt.Sprintf(`{"devid":%q}`, devid)))); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(c)
	var h [6]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		t.Fatalf("%s: %v", devid, err)
	}
	body := make([]byte, binary.BigEndian.Uint16(h[4:]))
	if _, err := io.ReadFull(r, body); err != nil {
		t.Fatal(err)
	}
	var reply struct{ Backend string }
	if err := json.Unmarshal(body, &reply); err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Time{})
	return c, reply.Backend
}

func ctx5(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// A drain issued through replica A stops new connections to the backend
// on replica B, and undrain brings them back.
func TestDrainThroughOneReplicaActsOnAll(t *testing.T) {
	f := newFleet(t, 2, 3)
	a, b := f.gateways[0], f.gateways[1]
	// A device owned by b1.
	var dev string
	for i := 0; ; i++ {
		dev = fmt.Sprintf("dev-%d", i)
		if r := b.watcher.Ring(); r.Backends()[r.Lookup([]byte(dev))].ID == "b1" {
			break
		}
	}
	if _, err := f.client(a, adminToken).DrainBackend(ctx5(t), &adminv1.DrainBackendRequest{
		Id: "b1", Deadline: durationpb.New(time.Minute), EvictPerSecond: 10, Reason: "upgrade"}); err != nil {
		t.Fatal(err)
	}
	// DrainBackend returns once every replica routes on the drain.
	if m, _ := b.watcher.Snapshot().Member("b1"); m.State != "draining" {
		t.Fatalf("DrainBackend returned before replica B applied it: %s", m.State)
	}
	c, got := login(t, b.addr, dev)
	c.Close()
	if got == "b1" {
		t.Fatal("replica B sent a new connection to the drained backend")
	}
	resp, err := f.client(b, readToken).ListBackends(ctx5(t), &adminv1.ListBackendsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, be := range resp.Backends {
		if be.Id == "b1" && (be.State != adminv1.BackendState_BACKEND_STATE_DRAINING || be.Drain.GetReason() != "upgrade" || be.RingShare != 0) {
			t.Fatalf("b1 listed as %v", be)
		}
	}
	if _, err := f.client(b, adminToken).UndrainBackend(ctx5(t), &adminv1.UndrainBackendRequest{Id: "b1"}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "undrain seen by A", func() bool { m, _ := a.watcher.Snapshot().Member("b1"); return m.State == "active" })
	c, got = login(t, a.addr, dev)
	c.Close()
	if got != "b1" {
		t.Fatalf("after undrain the device landed on %s, want b1", got)
	}
}

// After the deadline the drained backend's connections are evicted at the
// fleet-wide pace, each replica taking a share in proportion to what it
// holds, so the fleet's rate is the pace.
func TestDrainEvictsAtPace(t *testing.T) {
	f := newFleet(t, 2, 2)
	const pacePerSec, perReplica = 20.0, 30
	var mu sync.Mutex
	var closes []time.Time
	var wg sync.WaitGroup
	held := 0
	for i := 0; held < 2*perReplica; i++ {
		dev := fmt.Sprintf("dev-%d", i)
		r := f.gateways[0].watcher.Ring()
		if r.Backends()[r.Lookup([]byte(dev))].ID != "b1" {
			continue
		}
		g := f.gateways[0] // unequal: 40 on g1, 20 on g2, so an even split would miss the pace
		if held%3 == 2 {
			g = f.gateways[1]
		}
		c, _ := login(t, g.addr, dev)
		held++
		wg.Add(1)
		go func() { // records when the gateway closes it
			defer wg.Done()
			defer c.Close()
			c.SetReadDeadline(time.Now().Add(20 * time.Second))
			io.Copy(io.Discard, c)
			mu.Lock()
			closes = append(closes, time.Now())
			mu.Unlock()
		}()
	}
	start := time.Now()
	if _, err := f.client(f.gateways[0], adminToken).DrainBackend(ctx5(t), &adminv1.DrainBackendRequest{
		Id: "b1", Deadline: durationpb.New(500 * time.Millisecond), EvictPerSecond: pacePerSec}); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	sort.Slice(closes, func(i, j int) bool { return closes[i].Before(closes[j]) })
	first, last := closes[0], closes[len(closes)-1]
	if first.Sub(start) < 450*time.Millisecond {
		t.Fatalf("first eviction %s after the drain, before its 500ms deadline", first.Sub(start))
	}
	rate := float64(len(closes)-2) / last.Sub(first).Seconds() // each replica closes its first at once
	t.Logf("evicted %d connections in %s: %.1f/s (pace %.0f/s)", len(closes), last.Sub(first).Round(time.Millisecond), rate, pacePerSec)
	if rate < pacePerSec*0.9 || rate > pacePerSec*1.1 {
		t.Fatalf("eviction rate %.1f/s outside %.0f/s +/-10%%", rate, pacePerSec)
	}
}

// Rebalance after a scale-out evicts exactly the devices the new backend
// now owns, and no other.
func TestRebalanceMovesOnlyMisplaced(t *testing.T) {
	f := newFleet(t, 2, 2)
	type dev struct {
		id, backend string
		closed      chan struct{}
	}
	var devs []*dev
	for i := 0; i < 60; i++ {
		d := &dev{id: fmt.Sprintf("dev-%d", i), closed: make(chan struct{})}
		c, b := login(t, f.gateways[i%2].addr, d.id)
		d.backend = b
		devs = append(devs, d)
		go func() { defer close(d.closed); defer c.Close(); io.Copy(io.Discard, c) }()
	}
	f.addBackend("b3")
	for _, g := range f.gateways {
		waitUntil(t, "b3 in every ring", func() bool { return g.watcher.Ring().Len() == 3 })
	}
	stream, err := f.client(f.gateways[1], adminToken).Rebalance(ctx5(t), &adminv1.RebalanceRequest{EvictPerSecond: 200})
	if err != nil {
		t.Fatal(err)
	}
	var last *adminv1.RebalanceProgress
	for {
		p, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		last = p
		if p.Done {
			break
		}
	}
	r := f.gateways[0].watcher.Ring()
	want := 0
	for _, d := range devs {
		owner := r.Backends()[r.Lookup([]byte(d.id))].ID
		moved := owner != d.backend
		if moved {
			want++
			if owner != "b3" {
				t.Fatalf("%s would move from %s to %s, not to the new backend", d.id, d.backend, owner)
			}
			select {
			case <-d.closed:
			case <-time.After(5 * time.Second):
				t.Fatalf("%s now belongs to b3 but was not evicted", d.id)
			}
		} else {
			select {
			case <-d.closed:
				t.Fatalf("%s stays on %s but was evicted", d.id, d.backend)
			default:
			}
		}
	}
	// Relocated: moved where the new owner takes moved devices, else
	// evicted (these demo backends do not opt in).
	if last.Misplaced != int64(want) || last.Moved+last.Evicted+last.Gone != int64(want) || last.Partial.GetPartial() || len(last.Gateways) != 2 {
		t.Fatalf("progress %v, want %d misplaced and relocated over 2 gateways", last, want)
	}
	if n := f.relocated(proxy.CauseRebalance); n != uint64(want) {
		t.Fatalf("devgate_rehome_total{cause=rebalance} sums to %d, want %d", n, want)
	}
	// Each replica's status reports its part, asked of either replica.
	gws, err := f.client(f.gateways[0], adminToken).ListGateways(ctx5(t), &adminv1.ListGatewaysRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var reported int64
	for _, g := range gws.GetGateways() {
		rb := g.GetRebalance()
		if rb == nil || !rb.GetDone() || rb.GetAutomatic() || rb.GetGateway() != g.GetId() {
			t.Fatalf("gateway %s reports rebalance %v, want its operator's rebalance, done", g.GetId(), rb)
		}
		reported += rb.GetMisplaced()
	}
	if len(gws.GetGateways()) != 2 || reported != int64(want) {
		t.Fatalf("%d gateways report %d misplaced, want 2 and %d", len(gws.GetGateways()), reported, want)
	}
	t.Logf("rebalance: %d of %d devices misplaced after adding b3, all evicted, none other", want, len(devs))
	f.cancel() // the rest close with the fleet
}

func TestAuth(t *testing.T) {
	f := newFleet(t, 1, 1)
	g := f.gateways[0]
	drain := &adminv1.DrainBackendRequest{Id: "b1", Deadline: durationpb.New(time.Hour)}
	if _, err := f.client(g, "").DrainBackend(ctx5(t), drain); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("no token: %v", err)
	}
	if _, err := f.client(g, "wrong").ListBackends(ctx5(t), &adminv1.ListBackendsRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("wrong token: %v", err)
	}
	if _, err := f.client(g, readToken).DrainBackend(ctx5(t), drain); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("read-only drain: %v", err)
	}
	if _, err := f.client(g, readToken).ListBackends(ctx5(t), &adminv1.ListBackendsRequest{}); err != nil {
		t.Fatalf("read-only list: %v", err)
	}
	if _, err := f.client(g, adminToken).DrainBackend(ctx5(t), drain); err != nil {
		t.Fatalf("admin drain: %v", err)
	}
	if _, err := f.client(g, adminToken).DrainBackend(ctx5(t), &adminv1.DrainBackendRequest{Id: "nope"}); status.Code(err) != codes.NotFound {
		t.Fatalf("unknown backend: %v", err)
	}
}

// Lookup agrees with where 10,000 devices actually land.
func TestLookupAgreesWithDataPath(t *testing.T) {
	f := newFleet(t, 2, 4)
	cfg := sim.Config{Target: f.gateways[0].addr, Devices: 10000, Reconnects: -1, Heartbeats: -1, Concurrency: 32}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute) // 10,000 logins under -race
	defer cancel()
	rep, err := sim.Run(ctx, cfg)
	if err != nil || rep.Failed != 0 {
		t.Fatalf("sim: %v %s", err, rep)
	}
	cl := f.client(f.gateways[1], readToken)
	count := map[string]int{}
	for i := 0; i < cfg.Devices; i++ {
		resp, err := cl.Lookup(ctx5(t), &adminv1.LookupRequest{Devid: cfg.DeviceID(i)})
		if err != nil {
			t.Fatal(err)
		}
		count[resp.Owner]++
		if len(resp.Order) != 3 || resp.Order[0] != resp.Owner {
			t.Fatalf("order %v", resp.Order)
		}
	}
	for id, n := range rep.PerBackend {
		if count[id] != n {
			t.Fatalf("landed %v, lookup says %v", rep.PerBackend, count)
		}
	}
	t.Logf("10,000 devices: landed %v; lookup through the other replica agrees", rep.PerBackend)
}

func TestListGatewaysAndPartial(t *testing.T) {
	f := newFleet(t, 2, 1)
	resp, err := f.client(f.gateways[0], readToken).ListGateways(ctx5(t), &adminv1.ListGatewaysRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Gateways) != 2 || !resp.Consistent || resp.Partial.GetPartial() {
		t.Fatalf("gateways %v", resp)
	}
	// A peer registered with an address nobody answers on: marked partial.
	if _, err := registryPutGateway(f, "ghost", "127.0.0.1:1"); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "ghost seen", func() bool { return len(f.gateways[0].watcher.Snapshot().Gateways) == 3 })
	resp, err = f.client(f.gateways[0], readToken).ListGateways(ctx5(t), &adminv1.ListGatewaysRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if !resp.Partial.GetPartial() || resp.Partial.Errors["ghost"] == "" || len(resp.Gateways) != 2 {
		t.Fatalf("with a dead peer: %v", resp)
	}
}

func registryPutGateway(f *fleet, id, admin string) (any, error) {
	return f.cli.Put(context.Background(), fleetKeys.Gateway(id), fmt.Sprintf(`{"admin":%q,"started":"2026-01-01T00:00:00Z"}`, admin))
}

// Draining a gateway through another replica: it stops accepting, fails
// readiness, and evicts its own connections at the pace asked.
func TestDrainGatewayThroughPeer(t *testing.T) {
	f := newFleet(t, 2, 2)
	g1, g2 := f.gateways[0], f.gateways[1]
	var closed sync.WaitGroup
	for i := 0; i < 10; i++ {
		c, _ := login(t, g2.addr, fmt.Sprintf("dev-%d", i))
		closed.Add(1)
		go func() {
			defer closed.Done()
			defer c.Close()
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			io.Copy(io.Discard, c)
		}()
	}
	start := time.Now()
	resp, err := f.client(g1, adminToken).DrainGateway(ctx5(t), &adminv1.DrainGatewayRequest{Id: "g2", EvictPerSecond: 10})
	if err != nil {
		t.Fatal(err)
	}
	if !resp.Gateway.Draining || resp.Gateway.Id != "g2" {
		t.Fatalf("answer %v", resp.Gateway)
	}
	if ok, why := g2.svc.Ready(); ok || !strings.HasPrefix(why, "draining") {
		t.Fatalf("g2 ready=%v (%s) while draining", ok, why)
	}
	if c, err := net.DialTimeout("tcp", g2.addr, time.Second); err == nil {
		c.Close()
		t.Fatal("g2 still accepts devices")
	}
	closed.Wait()
	took := time.Since(start)
	t.Logf("g2 evicted its 10 connections in %s at 10/s", took.Round(time.Millisecond))
	if took < 800*time.Millisecond {
		t.Fatalf("10 connections at 10/s evicted in %s: faster than the pace", took)
	}
	// The proxy counts a close just after the client sees it.
	waitUntil(t, "10 counted as evicted_gateway_drain", func() bool { return g2.proxy.Stats().Closed["evicted_gateway_drain"] == 10 })
	// g1 is untouched and still takes devices.
	c, _ := login(t, g1.addr, "dev-after")
	c.Close()
	if _, err := f.client(g1, adminToken).DrainGateway(ctx5(t), &adminv1.DrainGatewayRequest{Id: "nope"}); status.Code(err) != codes.NotFound {
		t.Fatalf("unknown gateway: %v", err)
	}
}
