package admin

import (
	"context"

	"github.com/devgate/devgate/pkg/registry"
)

// AdmissionSetter is the part of the proxy login pacing needs to know of
// the fleet; *proxy.Proxy is one.
type AdmissionSetter interface {
	SetAdmissionFleet(replicas int, joined []string)
}

// FollowAdmission keeps p's login pacing in line with the fleet until ctx
// ends: on each snapshot, the number of live replicas (gateways/) that
// split each backend's pace, as a drain's pace is split, and the backends
// that joined the ring since the last one (new ids, back after leaving or
// a drain: joined), which ramp up over their slow start. The first
// snapshot joins nobody: a gateway that starts must not slow the whole
// fleet down.
func FollowAdmission(ctx context.Context, f Fleet, p AdmissionSetter) {
	var seen *registry.Snapshot
	for {
		changed := f.Changed()
		if snap := f.Snapshot(); snap != nil && snap != seen {
			p.SetAdmissionFleet(max(len(snap.Gateways), 1), joined(seen, snap))
			seen = snap
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
	}
}
