package admin

import (
	"fmt"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	adminv1 "github.com/devgate/devgate/api/devgate/admin/v1"
)

// ListConnections through one replica pages over both, each connection
// once, in (gateway, since, id) order, and filters by gateway, backend
// and age; FindDevice and KickDevice act on the peer's device.
func TestConnectionsAcrossReplicas(t *testing.T) {
	f := newFleet(t, 2, 2)
	a, b := f.gateways[0], f.gateways[1]
	const perGateway = 5
	byGateway := map[string][]net.Conn{}
	for _, g := range []*gateway{a, b} {
		for i := range perGateway {
			c, _ := login(t, g.addr, fmt.Sprintf("%s-dev-%d", g.id, i))
			t.Cleanup(func() { c.Close() })
			byGateway[g.id] = append(byGateway[g.id], c)
		}
	}
	waitUntil(t, "all routed", func() bool { return a.proxy.Proxied() == perGateway && b.proxy.Proxied() == perGateway })
	api := f.client(a, readToken)

	var all []*adminv1.Connection
	req := &adminv1.ListConnectionsRequest{PageSize: 3}
	for pages := 0; ; pages++ {
		if pages > 2*perGateway {
			t.Fatal("paging does not end")
		}
		resp, err := api.ListConnections(ctx5(t), req)
		if err != nil || resp.GetPartial().GetPartial() {
			t.Fatalf("ListConnections: %v %v", resp.GetPartial(), err)
		}
		if len(resp.Connections) > 3 {
			t.Fatalf("page of %d, asked 3", len(resp.Connections))
		}
		all = append(all, resp.Connections...)
		if resp.NextPageToken == "" {
			break
		}
		req.PageToken = resp.NextPageToken
	}
	if len(all) != 2*perGateway {
		t.Fatalf("pages listed %d connections, want %d", len(all), 2*perGateway)
	}
	for i, c := range all {
		g := "g1"
		if i >= perGateway {
			g = "g2"
		}
		if want := fmt.Sprintf("%s-dev-%d", g, i%perGateway); c.Gateway != g || c.Devid != want {
			t.Fatalf("row %d: %s on %s, want %s on %s", i, c.Devid, c.Gateway, want, g)
		}
	}

	resp, err := api.ListConnections(ctx5(t), &adminv1.ListConnectionsRequest{Gateway: "g2", Backend: "b1"})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range resp.Connections {
		if c.Gateway != "g2" || c.Backend != "b1" {
			t.Fatalf("filtered list has %v", c)
		}
	}
	if _, err := api.ListConnections(ctx5(t), &adminv1.ListConnectionsRequest{Gateway: "g9"}); status.Code(err) != codes.NotFound {
		t.Fatalf("ListConnections of an unknown gateway: %v, want NotFound", err)
	}
	resp, err = api.ListConnections(ctx5(t), &adminv1.ListConnectionsRequest{MinAge: durationpb.New(time.Hour)})
	if err != nil || len(resp.Connections) != 0 {
		t.Fatalf("min age 1h: %v %v", resp, err)
	}
	for _, bad := range []*adminv1.ListConnectionsRequest{{PageToken: "garbage"}, {PageSize: -1}, {MinAge: durationpb.New(-time.Second)}} {
		if _, err := api.ListConnections(ctx5(t), bad); status.Code(err) != codes.InvalidArgument {
			t.Fatalf("ListConnections(%v) = %v, want InvalidArgument", bad, err)
		}
	}

	found, err := api.FindDevice(ctx5(t), &adminv1.FindDeviceRequest{Devid: "g2-dev-3"})
	if err != nil || len(found.Connections) != 1 || found.Connections[0].Gateway != "g2" ||
		found.Connections[0].ClientAddr != byGateway["g2"][3].LocalAddr().String() {
		t.Fatalf("FindDevice through g1: %v %v", found, err)
	}
	if _, err := api.KickDevice(ctx5(t), &adminv1.KickDeviceRequest{Devid: "g2-dev-3"}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("KickDevice with a read token: %v, want PermissionDenied", err)
	}
	kicked, err := f.client(a, adminToken).KickDevice(ctx5(t), &adminv1.KickDeviceRequest{Devid: "g2-dev-3", Reason: "test"})
	if err != nil || len(kicked.Kicked) != 1 || kicked.Kicked[0].Gateway != "g2" {
		t.Fatalf("KickDevice: %v %v", kicked, err)
	}
	waitUntil(t, "kicked on g2", func() bool { return b.proxy.Stats().Closed["kicked"] == 1 })
	if found, err = api.FindDevice(ctx5(t), &adminv1.FindDeviceRequest{Devid: "g2-dev-3"}); err != nil || len(found.Connections) != 0 {
		t.Fatalf("after the kick: %v %v", found, err)
	}
	if _, err := api.FindDevice(ctx5(t), &adminv1.FindDeviceRequest{}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("FindDevice without a devid: %v", err)
	}
}

// A page token from a client is only ever parsed: garbage is
// InvalidArgument, never a panic.
func FuzzPageToken(f *testing.F) {
	f.Add(pageToken{G: "g1", S: 1, ID: 2}.String())
	f.Add("")
	f.Add("e30")
	f.Fuzz(func(t *testing.T, v string) {
		tok, err := parsePageToken(v)
		if err != nil {
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("%q: %v", v, err)
			}
			return
		}
		if v != "" && tok.G == "" {
			t.Fatalf("%q parsed without a gateway", v)
		}
	})
}
