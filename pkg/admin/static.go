package admin

import (
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/devgate/devgate/pkg/registry"
	"github.com/devgate/devgate/pkg/ring"
)

// Fleet is what the Service reads backends, drains and gateways from: a
// *registry.Watcher, or a StaticFleet when the gateway has a static list.
type Fleet interface {
	Snapshot() *registry.Snapshot
	Stats() registry.WatcherStats
	// Changed is closed when the next snapshot is in (nil: never).
	Changed() <-chan struct{}
}

var (
	_ Fleet = (*registry.Watcher)(nil)
	_ Fleet = (*StaticFleet)(nil)
)

// StaticFleet is the fleet of a gateway routing on a static backend list:
// every backend of its ring active, itself the only gateway, revision 0.
// With it (and no Client) the Service lists, looks up and reports status;
// drains and rebalance need etcd and answer FailedPrecondition.
type StaticFleet struct{ snap *registry.Snapshot }

// NewStaticFleet describes r, served by the gateway self.
func NewStaticFleet(r ring.Ring, self registry.Gateway) *StaticFleet {
	snap := &registry.Snapshot{Ring: r, Gateways: []registry.Gateway{self}, Built: time.Now()}
	for _, b := range r.Backends() {
		snap.Members = append(snap.Members, registry.Member{Backend: b, State: registry.StateActive})
	}
	slices.SortFunc(snap.Members, func(a, b registry.Member) int { return strings.Compare(a.ID, b.ID) })
	return &StaticFleet{snap: snap}
}

// Snapshot is the same snapshot every time: the list changes on restart only.
func (f *StaticFleet) Snapshot() *registry.Snapshot { return f.snap }

// Changed never fires: the list changes on restart only.
func (f *StaticFleet) Changed() <-chan struct{} { return nil }

// Stats reports the one snapshot; there is no etcd to be connected to.
func (f *StaticFleet) Stats() registry.WatcherStats {
	return registry.WatcherStats{HasSnapshot: true}
}

// static reports whether the gateway runs without etcd.
func (s *Service) static() bool { return s.Client == nil }

// errStatic answers a call that needs etcd on a gateway without it.
func errStatic(what string) error {
	return status.Errorf(codes.FailedPrecondition,
		"this gateway routes on a static backend list, without etcd: %s; edit the backends in its config and restart it, or run the fleet with etcd", what)
}
