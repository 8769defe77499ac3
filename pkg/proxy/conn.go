package proxy

import (
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// conn is one proxied connection. The fields are ordered so the struct
// packs (one size class): the small ones share words.
type conn struct {
	client, backend net.Conn
	device          string
	backendID       string
	since           time.Time
	ev              *evPair          // set when an event loop copies for this connection
	finWait         [2]time.Duration // after direction d's FIN (Proxy.finTimeouts)
	n               [2]atomic.Uint64 // bytes copied by goroutines so far: client to backend, back
	lg              *session         // set before routing when moves are on; owned by whoever copies
	gm              *goMove          // copied by goroutines with lg: the move state (goroutine_move.go)
	reason          Reason

	once     sync.Once
	mu       sync.Mutex
	id       uint32         // the table's, in routing order; wraps (pages go by since, then id)
	remote   packedAddr     // the device's address, after a PROXY header (ConnInfo.Client)
	finArmed [2]atomic.Bool // direction d ended: the other runs under finWait[d]
	closing  atomic.Bool    // set by the first close: Evict must not pick it again
	moving   atomic.Bool    // a move is under way (rehome.go)
	// Whether this connection (or the one it fell back from) counted a move.
	moved bool
	tries uint8 // its owner's place in the device's owner order, from 1 (fallbacks+1)
	moves uint8 // times moved live to another backend (saturates)
	// The device cache no longer holds it (devices_find.go); under its mu.
	unindexed bool
}

// routedConn accounts for a connection just routed: counters, the table,
// the device cache (closing the device's older connection).
func (p *Proxy) routedConn(pc *conn) priorEntry {
	p.stats.routed.Add(1)
	return p.trackRouted(pc)
}

// trackRouted is routedConn without counting it as routed (a pair that
// fell back to another owner was counted once). It returns the device
// cache's entry before, which untrackRouted puts back (kept by the
// caller that may fall back, not in every conn).
func (p *Proxy) trackRouted(pc *conn) priorEntry {
	p.stats.proxied.Add(1)
	p.table.add(pc)
	old, moved, prior := p.devices.login(pc)
	if old != nil || moved {
		if moved && !pc.moved { // a fallback counts a device's move once
			pc.moved = true
			p.stats.moved.Add(1)
		}
		if old != nil && !p.KeepDuplicates {
			old.close(ReasonReplaced)
		}
	}
	if p.isClosing() { // Shutdown may have walked the table before add
		pc.close(ReasonShutdown)
	}
	return prior
}

// untrackRouted undoes trackRouted for a pair that falls back to another
// owner before any byte moved.
func (p *Proxy) untrackRouted(pc *conn, prior priorEntry) {
	p.devices.restore(pc, prior)
	p.table.remove(pc)
	p.stats.proxied.Add(-1)
}

// setReason records why the connection ends; the first reason wins.
func (c *conn) setReason(r Reason) {
	c.mu.Lock()
	if c.reason == "" {
		c.reason = r
	}
	c.mu.Unlock()
}

// finTimedOut records that the pair was closed a FIN timeout after
// direction d ended: it replaces the EOF reason that FIN left.
func (c *conn) finTimedOut(d int) {
	c.mu.Lock()
	if c.reason == "" || c.reason == ReasonClientClosed || c.reason == ReasonBackendClosed {
		c.reason = finReasons[d]
	}
	c.mu.Unlock()
}

// finReasons are the close reasons of a FIN timeout, by the direction
// that ended first (0: client to backend).
var finReasons = [2]Reason{ReasonClientFinTimeout, ReasonServerFinTimeout}

func (c *conn) endReason() Reason {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reason
}

// close ends both sides at once; the copy loops see the error and return.
// On an event loop it only asks the loop, which closes both sockets and
// accounts for the connection. It reports whether this call was the
// first to close it.
func (c *conn) close(reason Reason) bool {
	first := c.closing.CompareAndSwap(false, true)
	c.setReason(reason)
	if c.ev != nil {
		c.ev.kill()
		return first
	}
	if c.gm != nil { // its backend changes as it moves
		c.once.Do(c.gm.closeAll)
		return first
	}
	c.once.Do(func() {
		c.client.Close()
		c.backend.Close()
	})
	return first
}
