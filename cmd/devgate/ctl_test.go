package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/devgate/devgate/api/devgate/admin/v1"
)

const (
	active   = adminv1.BackendState_BACKEND_STATE_ACTIVE
	draining = adminv1.BackendState_BACKEND_STATE_DRAINING
	held     = adminv1.BackendState_BACKEND_STATE_HELD
)

func backendsFixture(now time.Time) *adminv1.ListBackendsResponse {
	return &adminv1.ListBackendsResponse{
		Backends: []*adminv1.Backend{
			{Id: "b1", Addr: "10.0.0.1:9000", Weight: 100, Zone: "a", State: active, RingShare: 0.4, Connections: 1200,
				ConnectionsByGateway: map[string]int64{"gw1": 700, "gw2": 500},
				Admission:            &adminv1.Admission{Admitted: 5000, Waiting: 12, Rate: 250}},
			{Id: "b2", Addr: "10.0.0.2:9000", Weight: 100, Zone: "a", State: draining, Connections: 40,
				Drain: &adminv1.Drain{Deadline: timestamppb.New(now.Add(25 * time.Second)), EvictPerSecond: 50, Reason: "kernel update"}},
			{Id: "b3", Addr: "10.0.0.3:9000", Addrs: []string{"10.0.0.3:9000", "10.0.0.3:9001", "10.0.0.3:9002"},
				Weight: 50, State: held, RingShare: 0.6, Connections: 7},
		},
		Revision: 42,
		Partial:  &adminv1.Partial{Partial: true, Errors: map[string]string{"gw3": "context deadline exceeded"}},
	}
}

func TestCtlBackendsTable(t *testing.T) {
	f := &fakeAdmin{backends: []*adminv1.ListBackendsResponse{backendsFixture(time.Now())}}
	addr := startFake(t, f)
	out, _, code := ctl(t, "--addr", addr, "--token", "s3cret", "backends")
	want := `ID  ADDR                WEIGHT  ZONE  STATE     SHARE  CONNS
b1  10.0.0.1:9000       100     a     active    40.0%  1200
b2  10.0.0.2:9000       100     a     draining  0.0%   40
b3  10.0.0.3:9000 (+2)  50      -     held      60.0%  7
revision 42
addresses of b3: 10.0.0.3:9000 10.0.0.3:9001 10.0.0.3:9002
draining b2: 40 connections left (deadline in 25s) reason "kernel update"
pacing b1: 250.0 logins/s, 12 waiting devices, 5000 admitted
PARTIAL: gateways gw3 did not answer: gw3: context deadline exceeded
`
	if code != 0 || out != want {
		t.Fatalf("exit %d, output:\n%s\nwant:\n%s", code, out, want)
	}
	// The token from the environment, global flags after the verb.
	t.Setenv("DEVGATE_TOKEN", "from-env")
	if _, _, code := ctl(t, "backends", "--addr", addr); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if got := f.auth; len(got) != 2 || got[0] != "Bearer s3cret" || got[1] != "Bearer from-env" {
		t.Fatalf("authorization sent: %q", got)
	}
}

func TestCtlBackendsJSON(t *testing.T) {
	want := backendsFixture(time.Now())
	addr := startFake(t, &fakeAdmin{backends: []*adminv1.ListBackendsResponse{want}})
	out, _, code := ctl(t, "--addr", addr, "backends", "--json")
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	var got adminv1.ListBackendsResponse
	if err := protojson.Unmarshal([]byte(out), &got); err != nil || !proto.Equal(&got, want) {
		t.Fatalf("JSON does not round-trip (%v):\n%s", err, out)
	}
	var doc struct {
		Backends []map[string]any `json:"backends"`
		Partial  map[string]any   `json:"partial"`
		Revision any              `json:"revision"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatal(err)
	}
	// int64 fields are numbers, at the top, nested and in maps.
	b1 := doc.Backends[0]
	if doc.Revision != 42.0 || b1["connections"] != 1200.0 || b1["connections_by_gateway"].(map[string]any)["gw1"] != 700.0 {
		t.Errorf("int64 fields not numbers: revision %#v, connections %#v, by gateway %#v",
			doc.Revision, b1["connections"], b1["connections_by_gateway"])
	}
	b3 := doc.Backends[2]
	for _, k := range []string{"ring_share", "connections_by_gateway", "drain", "meta"} { // unpopulated fields too
		if _, ok := b3[k]; !ok {
			t.Errorf("backend b3 lacks %q: %v", k, b3)
		}
	}
	if doc.Partial["partial"] != true || b3["state"] != "BACKEND_STATE_HELD" {
		t.Errorf("partial %v, state %v", doc.Partial, b3["state"])
	}
	if again, _, _ := ctl(t, "--addr", addr, "--json", "backends"); again != out {
		t.Errorf("JSON differs between runs:\n%s\n%s", out, again)
	}
}

func TestCtlDrain(t *testing.T) {
	f := &fakeAdmin{drain: &adminv1.Drain{Deadline: timestamppb.New(time.Now().Add(2 * time.Minute)), EvictPerSecond: 20, Reason: "kernel update"}}
	addr := startFake(t, f)
	out, _, code := ctl(t, "--addr", addr, "drain", "b2", "--deadline", "2m", "--pace", "20", "--reason", "kernel update")
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, s := range []string{"draining b2: out of the ring on every gateway now\n", "(in 2m0s), then are moved or evicted at 20/s across the fleet\n", "reason: kernel update\n"} {
		if !strings.Contains(out, s) {
			t.Errorf("output lacks %q:\n%s", s, out)
		}
	}
	// Defaults: 30s to go, the server's pace.
	if _, _, code := ctl(t, "--addr", addr, "drain", "b2"); code != 0 {
		t.Fatalf("exit %d", code)
	}
	want := []proto.Message{
		&adminv1.DrainBackendRequest{Id: "b2", Deadline: durationpb.New(2 * time.Minute), EvictPerSecond: 20, Reason: "kernel update"},
		&adminv1.DrainBackendRequest{Id: "b2", Deadline: durationpb.New(30 * time.Second)},
	}
	assertRequests(t, f, want...)
}

func TestCtlDrainWait(t *testing.T) {
	fastPoll(t)
	now := time.Now()
	step := func(conns int64, deadline time.Time) *adminv1.ListBackendsResponse {
		return &adminv1.ListBackendsResponse{Backends: []*adminv1.Backend{{Id: "b2", State: draining, Connections: conns,
			Drain: &adminv1.Drain{Deadline: timestamppb.New(deadline), EvictPerSecond: 50}}}}
	}
	f := &fakeAdmin{
		drain:    &adminv1.Drain{Deadline: timestamppb.New(now), EvictPerSecond: 50},
		backends: []*adminv1.ListBackendsResponse{step(40, now.Add(time.Hour)), step(12, now), step(1, now), step(0, now)},
	}
	f.backends[2].Partial = &adminv1.Partial{Partial: true, Errors: map[string]string{"gw3": "unreachable"}}
	addr := startFake(t, f)
	out, _, code := ctl(t, "--addr", addr, "drain", "--deadline", "0", "b2", "--wait")
	want := `draining b2: out of the ring on every gateway now
connections are moved or evicted now at 50/s across the fleet
draining b2: 40 connections left (deadline in 1h0m)
draining b2: 12 connections left (moving or evicting at 50/s)
draining b2: 1 connection left (moving or evicting at 50/s) [partial: gw3 did not answer]
draining b2: 0 connections left (moving or evicting at 50/s)
drained b2: no connections left; it stays out of the ring until 'devgate ctl undrain b2'
`
	if code != 0 || out != want {
		t.Fatalf("exit %d, output:\n%s\nwant:\n%s", code, out, want)
	}
}

// A count that does not change is not repeated every poll.
func TestCtlDrainWaitQuiet(t *testing.T) {
	fastPoll(t)
	old := ctlProgressEvery
	ctlProgressEvery = time.Hour // no repeats however slow the polls
	t.Cleanup(func() { ctlProgressEvery = old })
	now := time.Now()
	step := func(conns int64) *adminv1.ListBackendsResponse {
		return &adminv1.ListBackendsResponse{Backends: []*adminv1.Backend{{Id: "b2", State: draining, Connections: conns,
			Drain: &adminv1.Drain{Deadline: timestamppb.New(now), EvictPerSecond: 50}}}}
	}
	f := &fakeAdmin{drain: &adminv1.Drain{Deadline: timestamppb.New(now), EvictPerSecond: 50}}
	for range 30 {
		f.backends = append(f.backends, step(7))
	}
	f.backends = append(f.backends, step(3), step(3), step(0))
	addr := startFake(t, f)
	out, _, code := ctl(t, "--addr", addr, "drain", "--deadline", "0", "b2", "--wait")
	want := `draining b2: out of the ring on every gateway now
connections are moved or evicted now at 50/s across the fleet
draining b2: 7 connections left (moving or evicting at 50/s)
draining b2: 3 connections left (moving or evicting at 50/s)
draining b2: 0 connections left (moving or evicting at 50/s)
drained b2: no connections left; it stays out of the ring until 'devgate ctl undrain b2'
`
	if code != 0 || out != want {
		t.Fatalf("exit %d, output:\n%s\nwant:\n%s", code, out, want)
	}
}

func TestCtlDrainWaitInterrupted(t *testing.T) {
	fastPoll(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f := &fakeAdmin{
		drain:    &adminv1.Drain{EvictPerSecond: 50},
		backends: []*adminv1.ListBackendsResponse{{Backends: []*adminv1.Backend{{Id: "b2", State: draining, Connections: 9}}}},
		onPoll: func(n int) {
			if n == 2 {
				cancel() // ctrl-C
			}
		},
	}
	addr := startFake(t, f)
	_, errOut, code := ctlCtx(t, ctx, "--addr", addr, "drain", "b2", "--wait")
	if code != 130 || !strings.Contains(errOut, "stopped waiting; the drain goes on ('devgate ctl undrain b2' ends it)") {
		t.Fatalf("exit %d, stderr:\n%s", code, errOut)
	}
}

func TestCtlUndrainAndLookup(t *testing.T) {
	f := &fakeAdmin{undrain: true, lookup: &adminv1.LookupResponse{Owner: "b2", Order: []string{"b2", "b1", "b3"}, Revision: 42, Gateway: "gw1"}}
	addr := startFake(t, f)
	if out, _, code := ctl(t, "--addr", addr, "undrain", "b2"); code != 0 || out != "undrained b2: it is back in the ring on every gateway\n" {
		t.Fatalf("exit %d, output %q", code, out)
	}
	out, _, code := ctl(t, "--addr", addr, "lookup", "dev-42", "--fallbacks", "2")
	want := `device    dev-42
owner     b2
fallbacks b1, b3
revision  42
gateway   gw1
`
	if code != 0 || out != want {
		t.Fatalf("exit %d, output:\n%s\nwant:\n%s", code, out, want)
	}
	assertRequests(t, f, &adminv1.UndrainBackendRequest{Id: "b2"}, &adminv1.LookupRequest{Devid: "dev-42", Fallbacks: 2})
}

func TestCtlGateways(t *testing.T) {
	gw := func(id string, rev int64, stale time.Duration, connected bool) *adminv1.Gateway {
		return &adminv1.Gateway{Id: id, Admin: "10.0.1." + id[2:] + ":9090", Version: "v1.4.0", Uptime: durationpb.New(3*time.Hour + 12*time.Minute + 7*time.Second),
			Connections: 5210, RingRevision: rev, EtcdStaleness: durationpb.New(stale), EtcdConnected: connected, Ready: true}
	}
	resp := &adminv1.ListGatewaysResponse{
		Gateways: []*adminv1.Gateway{gw("gw1", 42, 120*time.Millisecond, true), gw("gw2", 41, 95*time.Second, false), gw("gw3", 42, 80*time.Millisecond, true)},
		Partial:  &adminv1.Partial{Partial: true, Errors: map[string]string{"gw4": "connection refused"}},
	}
	resp.Gateways[2].Draining, resp.Gateways[2].Ready, resp.Gateways[2].Uptime = true, false, durationpb.New(42*time.Second)
	addr := startFake(t, &fakeAdmin{gateways: []*adminv1.ListGatewaysResponse{resp}})
	out, _, code := ctl(t, "--addr", addr, "gateways")
	want := `ID   ADMIN          VERSION  UPTIME  CONNS  REVISION  STALENESS          READY  DRAINING
gw1  10.0.1.1:9090  v1.4.0   3h12m   5210   42        120ms              yes    no
gw2  10.0.1.2:9090  v1.4.0   3h12m   5210   41        1m35s (etcd down)  yes    no
gw3  10.0.1.3:9090  v1.4.0   42s     5210   42        80ms               no     yes
consistent: no (revisions 41: gw2; 42: gw1,gw3)
PARTIAL: gateways gw4 did not answer: gw4: connection refused
`
	if code != 0 || out != want {
		t.Fatalf("exit %d, output:\n%s\nwant:\n%s", code, out, want)
	}
}

func TestCtlDrainGatewayWait(t *testing.T) {
	fastPoll(t)
	list := func(conns int64, missing bool) *adminv1.ListGatewaysResponse {
		if missing {
			return &adminv1.ListGatewaysResponse{Partial: &adminv1.Partial{Partial: true, Errors: map[string]string{"gw2": "deadline exceeded"}}}
		}
		return &adminv1.ListGatewaysResponse{Gateways: []*adminv1.Gateway{{Id: "gw2", Connections: conns, Draining: true}}}
	}
	f := &fakeAdmin{
		gateway:  &adminv1.Gateway{Id: "gw2", Connections: 300, Draining: true},
		gateways: []*adminv1.ListGatewaysResponse{list(300, false), list(0, true), list(120, false), list(0, false)},
	}
	addr := startFake(t, f)
	out, _, code := ctl(t, "--addr", addr, "drain-gateway", "gw2", "--pace", "100", "--wait")
	want := `gateway gw2 is draining: not ready, accepting no devices; evicting 300 connections at 100/s
draining gateway gw2: 300 connections left
draining gateway gw2: did not answer: deadline exceeded
draining gateway gw2: 120 connections left
draining gateway gw2: 0 connections left
gateway gw2 drained; it stays up, not ready, until 'devgate ctl undrain-gateway gw2' or SIGTERM
`
	if code != 0 || out != want {
		t.Fatalf("exit %d, output:\n%s\nwant:\n%s", code, out, want)
	}
	if r := f.requests()[0]; !proto.Equal(r, &adminv1.DrainGatewayRequest{Id: "gw2", EvictPerSecond: 100}) {
		t.Errorf("request %v", r)
	}
}

// assertRequests checks the requests f got, in order.
func assertRequests(t *testing.T, f *fakeAdmin, want ...proto.Message) {
	t.Helper()
	got := f.requests()
	if len(got) != len(want) {
		t.Fatalf("got %d requests, want %d: %v", len(got), len(want), got)
	}
	for i := range want {
		if !proto.Equal(got[i], want[i]) {
			t.Errorf("request %d: got %v, want %v", i, got[i], want[i])
		}
	}
}
