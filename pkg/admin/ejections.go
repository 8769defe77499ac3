package admin

import (
	"google.golang.org/protobuf/types/known/durationpb"

	adminv1 "github.com/devgate/devgate/api/devgate/admin/v1"
)

// ejections is this replica's passive ejection state by backend id (the
// backends whose dials failed here).
func (s *Service) ejections() map[string]*adminv1.Ejection {
	out := map[string]*adminv1.Ejection{}
	for _, e := range s.Proxy.Ejections() {
		j := &adminv1.Ejection{Ejected: e.Ejected, Failures: uint32(e.Failures), Ejections: e.Ejections}
		if e.Ejected {
			j.Backoff, j.Remaining = durationpb.New(e.Backoff), durationpb.New(e.Remaining)
		}
		out[e.Backend] = j
	}
	return out
}

// addEjections sets b's ejection state per gateway from the fleet's answers.
func addEjections(b *adminv1.Backend, gws []*adminv1.Gateway) {
	for _, g := range gws {
		if e := g.GetEjections()[b.GetId()]; e != nil {
			if b.EjectionsByGateway == nil {
				b.EjectionsByGateway = map[string]*adminv1.Ejection{}
			}
			b.EjectionsByGateway[g.GetId()] = e
		}
	}
}
