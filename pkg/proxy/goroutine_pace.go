package proxy

import (
	"time"

	"github.com/devgate/devgate/pkg/ring"
)

// waitTurn takes a token of b before a dial on the goroutine path, waiting
// in the connection's goroutine for its turn, up to MaxWait from its first
// wait (*until, zero before). It returns the pacer holding the token (nil:
// unpaced), or the reason the connection is refused.
func (p *Proxy) waitTurn(b ring.Backend, until *time.Time) (*pacer, Reason) {
	pc := p.pacerFor(b)
	if pc == nil {
		return nil, ""
	}
	turn := make(chan struct{})
	w := &waiter{since: time.Now(), grant: func() { close(turn) }}
	if pc.take(w) {
		return pc, ""
	}
	if until.IsZero() {
		*until = w.since.Add(p.Admission.maxWait())
	}
	t := time.NewTimer(time.Until(*until))
	defer t.Stop()
	reason := ReasonAdmissionTimeout
	select {
	case <-turn:
		reason = ""
	case <-t.C:
	case <-p.closeCh: // shutting down: no new device for a backend now
		reason = ReasonShutdown
	}
	if reason != "" && w.cancel() {
		pc.left()
	} else {
		<-turn // it came meanwhile
		reason = ""
	}
	if p.OnAdmissionWait != nil {
		p.OnAdmissionWait(time.Since(w.since))
	}
	if reason != "" {
		return nil, reason
	}
	return pc, ""
}
