package admin

import (
	"testing"
	"time"

	"github.com/devgate/devgate/pkg/registry"
)

func TestDepartedRemembersWhoLeft(t *testing.T) {
	gw := func(ids ...string) *registry.Snapshot {
		s := &registry.Snapshot{}
		for _, id := range ids {
			s.Gateways = append(s.Gateways, registry.Gateway{ID: id})
		}
		return s
	}
	ids := func(d *departed) map[string]bool {
		m := map[string]bool{}
		for _, g := range d.list() {
			m[g.gw.ID] = true
		}
		return m
	}
	var d departed
	t0 := time.Now()
	d.update(gw("self", "a", "b"), "self", t0, time.Minute)
	d.update(gw("self", "b"), "self", t0.Add(time.Second), time.Minute) // a left
	if got := ids(&d); len(got) != 1 || !got["a"] {
		t.Fatalf("after a left: %v", got)
	}
	d.update(gw("self", "a"), "self", t0.Add(2*time.Second), time.Minute) // a back, b left
	if got := ids(&d); len(got) != 1 || !got["b"] {
		t.Fatalf("after a came back and b left: %v", got)
	}
	d.update(gw("a"), "self", t0.Add(2*time.Minute), time.Minute) // b forgotten; self never listed
	if got := ids(&d); len(got) != 0 {
		t.Fatalf("after the memory: %v", got)
	}
}
