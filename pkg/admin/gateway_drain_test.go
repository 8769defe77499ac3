package admin

import (
	"io"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	adminv1 "github.com/devgate/devgate/api/devgate/admin/v1"
)

// A drained gateway stays drained (not ready, refusing devices) once it is
// empty, and an undrain through another replica brings it back.
func TestUndrainGatewayThroughPeer(t *testing.T) {
	f := newFleet(t, 2, 1)
	g1, g2 := f.gateways[0], f.gateways[1]
	c, _ := login(t, g2.addr, "dev-1")
	evicted := make(chan struct{})
	go func() { defer close(evicted); io.Copy(io.Discard, c); c.Close() }()
	admin := f.client(g1, adminToken)
	if _, err := admin.DrainGateway(ctx5(t), &adminv1.DrainGatewayRequest{Id: "g2", EvictPerSecond: 100}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-evicted:
	case <-time.After(10 * time.Second):
		t.Fatal("g2 did not evict its connection")
	}
	time.Sleep(2 * drainRecheck) // empty, and still drained after a recheck
	if ok, why := g2.svc.Ready(); ok {
		t.Fatalf("g2 ready once empty: %s", why)
	}
	if conn, err := net.DialTimeout("tcp", g2.addr, time.Second); err == nil {
		conn.Close()
		t.Fatal("g2 accepts devices while drained")
	}

	if _, err := f.client(g1, readToken).UndrainGateway(ctx5(t), &adminv1.UndrainGatewayRequest{Id: "g2"}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("undrain with the read role: %v", err)
	}
	resp, err := admin.UndrainGateway(ctx5(t), &adminv1.UndrainGatewayRequest{Id: "g2"})
	if err != nil {
		t.Fatal(err)
	}
	if !resp.WasDraining || resp.Gateway.Draining || !resp.Gateway.Ready || resp.Gateway.Id != "g2" {
		t.Fatalf("undrain answer %v", resp)
	}
	c2, _ := login(t, g2.addr, "dev-2") // accepting again, on the same address
	c2.Close()
	resp, err = admin.UndrainGateway(ctx5(t), &adminv1.UndrainGatewayRequest{Id: "g2"})
	if err != nil || resp.WasDraining {
		t.Fatalf("second undrain: %v, was draining %v", err, resp.GetWasDraining())
	}
	if _, err := admin.UndrainGateway(ctx5(t), &adminv1.UndrainGatewayRequest{Id: "nope"}); status.Code(err) != codes.NotFound {
		t.Fatalf("unknown gateway: %v", err)
	}
	// Drained again, then the service stops (as on SIGTERM): nothing hangs.
	if _, err := admin.DrainGateway(ctx5(t), &adminv1.DrainGatewayRequest{Id: "g2"}); err != nil {
		t.Fatal(err)
	}
}
