package proxy

import (
	"fmt"

	"go.uber.org/zap"
)

// The end of every connection, on both data paths: the last file of a
// connection's life.

// ending is what a connection leaves to account for once its sockets are
// closed; end takes it on both data paths.
type ending struct {
	pc      *conn        // routed: the connection, whose own reason stands; nil before routing
	reason  Reason       // refused after the key was read (pc and err nil)
	err     error        // refused in the steps before the key: the reason is prereadReason(err, n)
	n       int          // bytes read before routing
	device  string       // the key, once read
	client  fmt.Stringer // the device's address, for the log
	release func()       // gives back the per-address slot; nil when none was taken
}

// end is the one teardown of a connection that startConn admitted: a
// routed one leaves the table and the device cache (its bytes were counted
// as they were copied), a refused one is logged, each is counted once, and
// what startConn and the admission took is given back.
func (p *Proxy) end(e ending) {
	var reason Reason
	switch {
	case e.pc != nil:
		e.pc.setReason(ReasonClientClosed) // no-op when a reason was set
		p.devices.logout(e.pc)
		p.table.remove(e.pc)
		p.stats.proxied.Add(-1)
		reason = e.pc.endReason()
		if e.pc.ev == nil && p.EvictNotice.on() && noticeFor(reason) {
			p.notices.skipped.Add(1) // goroutines write no notice (notice.go)
		}
	case e.err != nil:
		reason = prereadReason(e.err, e.n)
		if reason != ReasonEmpty && reason != ReasonShutdown {
			p.badLog.Info("bad first frame", zap.String("reason", string(reason)), zap.Int("bytes", e.n),
				zap.Stringer("client", e.client), zap.Error(e.err))
		}
	default:
		reason = e.reason
		if reason != ReasonShutdown && reason != ReasonClientGone {
			p.badLog.Warn("connection refused", zap.String("reason", string(reason)),
				zap.String("device", sanitize(e.device)), zap.Stringer("client", e.client))
		}
	}
	p.count(reason)
	p.access(&e, reason)
	if e.release != nil {
		e.release()
	}
	p.stats.active.Add(-1)
	p.wg.Done()
}

// count is the one place a close reason is counted.
func (p *Proxy) count(r Reason) { p.stats.count(r) }
