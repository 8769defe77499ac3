package admin

import (
	"context"

	adminv1 "github.com/devgate/devgate/api/devgate/admin/v1"
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

// admission is this replica's login pacing by backend id (those with a pace).
func (s *Service) admission() map[string]*adminv1.Admission {
	out := map[string]*adminv1.Admission{}
	for id, a := range s.Proxy.AdmissionStats() {
		out[id] = &adminv1.Admission{Admitted: a.Admitted, Waiting: a.Waiting, Rate: a.Rate}
	}
	return out
}

// addAdmission sums b's login pacing over the fleet's answers.
func addAdmission(b *adminv1.Backend, gws []*adminv1.Gateway) {
	for _, g := range gws {
		if a := g.GetAdmission()[b.GetId()]; a != nil {
			if b.Admission == nil {
				b.Admission = &adminv1.Admission{}
			}
			b.Admission.Admitted += a.GetAdmitted()
			b.Admission.Waiting += a.GetWaiting()
			b.Admission.Rate += a.GetRate()
		}
	}
}
