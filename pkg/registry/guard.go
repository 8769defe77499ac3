package registry

import (
	"time"

	"github.com/devgate/devgate/pkg/ring"
)

// panicGuard holds back a mass disappearance of backends (a lease storm
// while etcd is slow, or a restored etcd): when more than Threshold of the
// weight leaves within Window, the departed stay in the ring for Hold, as
// Envoy's panic mode routes to all hosts rather than overload a few.
//
// A hold ends only when etcd confirms the departures (the watcher heard from
// it lately) and something routable is left: a ring emptied by a hold's end
// fails every login, while held members that really are gone cost a failed
// dial and a fallback. Until then the hold is extended, and counted.
type panicGuard struct {
	threshold float64
	window    time.Duration
	hold      time.Duration

	prev      map[string]ring.Backend // live backends at the last build
	departed  map[string]departure
	held      map[string]ring.Backend
	holdUntil time.Time
	holds     uint64 // times the threshold tripped
	extended  uint64 // times a hold was due to end and went on
}

type departure struct {
	b  ring.Backend
	at time.Time
}

// update takes the live backends now and returns the ones to hold.
// routable is how many live backends would be in the ring (not draining);
// confirmed says etcd answered lately, so its view can be trusted.
func (g *panicGuard) update(live map[string]ring.Backend, routable int, now time.Time, confirmed bool) map[string]ring.Backend {
	if g.departed == nil {
		g.departed = make(map[string]departure)
	}
	for id, b := range g.prev {
		if _, ok := live[id]; !ok {
			if _, seen := g.departed[id]; !seen {
				g.departed[id] = departure{b, now}
			}
		}
	}
	g.prev = live
	for id := range live {
		delete(g.departed, id)
		delete(g.held, id)
	}
	if len(g.held) == 0 {
		g.held = nil
	}
	if g.held != nil && !now.Before(g.holdUntil) {
		if confirmed && routable > 0 { // hold over: let them go
			for id := range g.held {
				delete(g.departed, id)
			}
			g.held = nil
		} else {
			g.holdUntil = now.Add(g.hold)
			g.extended++
		}
	}
	var recent, liveW float64
	for id, d := range g.departed {
		if now.Sub(d.at) > g.window {
			delete(g.departed, id)
			continue
		}
		recent += float64(d.b.Weight)
	}
	for _, b := range live {
		liveW += float64(b.Weight)
	}
	if g.threshold < 0 || recent == 0 {
		return g.held
	}
	if g.held != nil { // a storm in progress: hold newcomers to it too
		for id, d := range g.departed {
			g.held[id] = d.b
		}
		return g.held
	}
	if recent/(recent+liveW) > g.threshold {
		g.held = make(map[string]ring.Backend, len(g.departed))
		for id, d := range g.departed {
			g.held[id] = d.b
		}
		g.holdUntil = now.Add(g.hold)
		g.holds++
	}
	return g.held
}
