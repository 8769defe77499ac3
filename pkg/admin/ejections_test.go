package admin

import (
	"fmt"
	"testing"

	adminv1 "github.com/devgate/devgate/api/devgate/admin/v1"
)

// A backend ejected on one replica shows as ejected there, and only there,
// in ListBackends asked of another replica (which asks its peers).
func TestListBackendsEjectionPerGateway(t *testing.T) {
	f := newFleet(t, 2, 2)
	g1, g2 := f.gateways[0], f.gateways[1]
	f.backends["b1"].Close() // still registered; dials to it are refused
	r := g2.watcher.Snapshot().Ring
	n := 0
	for i := 0; n < 3 && i < 1000; i++ {
		d := fmt.Sprintf("dev-%d", i)
		if r.Backends()[r.Lookup([]byte(d))].ID != "b1" {
			continue
		}
		n++
		c, got := login(t, g2.addr, d)
		c.Close()
		if got != "b2" {
			t.Fatalf("%s reached %s, want its next owner b2", d, got)
		}
	}
	resp, err := f.client(g1, readToken).ListBackends(ctx5(t), &adminv1.ListBackendsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range resp.GetBackends() {
		e := b.GetEjectionsByGateway()
		switch b.GetId() {
		case "b1":
			if len(e) != 1 || !e["g2"].GetEjected() || e["g2"].GetFailures() != 3 || e["g2"].GetEjections() != 1 ||
				e["g2"].GetBackoff().AsDuration() <= 0 {
				t.Fatalf("b1 ejections %v, want ejected on g2 only", e)
			}
		default:
			if len(e) != 0 {
				t.Fatalf("%s ejections %v", b.GetId(), e)
			}
		}
	}
}

// A backend's login pacing over the fleet is the replicas' shares summed.
func TestAddAdmission(t *testing.T) {
	b := &adminv1.Backend{Id: "b1"}
	addAdmission(b, []*adminv1.Gateway{
		{Id: "gw1", Admission: map[string]*adminv1.Admission{"b1": {Admitted: 10, Waiting: 2, Rate: 50}, "b2": {Admitted: 99}}},
		{Id: "gw2", Admission: map[string]*adminv1.Admission{"b1": {Admitted: 5, Waiting: 1, Rate: 50}}},
		{Id: "gw3"}, // unpaced, or an older replica
	})
	if a := b.GetAdmission(); a.GetAdmitted() != 15 || a.GetWaiting() != 3 || a.GetRate() != 100 {
		t.Fatalf("admission %v: want 15 admitted, 3 waiting, 100/s", a)
	}
	unpaced := &adminv1.Backend{Id: "b3"}
	if addAdmission(unpaced, []*adminv1.Gateway{{Id: "gw1"}}); unpaced.Admission != nil {
		t.Fatalf("an unpaced backend got %v", unpaced.Admission)
	}
}
