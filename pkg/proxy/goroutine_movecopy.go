package proxy

import (
	"errors"
	"io"
	"net"
	"os"
	"time"
)

// pipeMove, the device to backend direction of a movable connection and
// the deadlines both directions read under (goroutine_move.go says who
// does what; goroutine_movedown.go has the other direction).

// pipeMove is pipe for a connection that may be moved: it copies through
// buffers (idleReader) that feed the frame trackers, honours half-close, FIN and idle
// timeouts as pipe and pipeIdle do, and counts a move the close cut short.
func (p *Proxy) pipeMove(c *conn) (in, out int64) {
	g := c.gm
	done := make(chan struct{})
	go func() { defer close(done); copyMoveDown(g) }()
	copyMoveUp(g)
	<-done
	c.close(ReasonClientClosed) // no-op for the reason if one was set
	g.mu.Lock()
	mv := g.mv
	if mv != nil {
		g.dropMoveLocked()
	}
	g.mu.Unlock()
	if mv != nil {
		r := MoveClosed
		if c.endReason() == ReasonClientClosed {
			r = MoveDeviceGone
		}
		p.finishMove(c, mv, r)
	}
	g.failing.Wait()
	return int64(c.n[0].Load()), int64(c.n[1].Load())
}

type closeWriter interface{ CloseWrite() error }

// copyMoveUp copies device bytes to the backend (named for stack dumps).
func copyMoveUp(g *goMove) {
	c := g.c
	var rd idleReader
	defer rd.release()
	var b []byte   // read and not yet taken
	var rerr error // the read's error, acted on once b is taken
	for {
		g.mu.Lock()
		for len(b) > 0 && !g.closed && g.mv != nil && g.mv.phase == mvCheck {
			g.cond.Wait() // bytes read during a backend check wait for its answer
		}
		if g.closed {
			g.mu.Unlock()
			return
		}
		mv := g.mv
		var w []byte
		if len(b) > 0 {
			g.last[0] = time.Now()
			pass, r := g.takeUpLocked(b)
			b = nil
			if r != "" {
				g.mu.Unlock()
				g.fail(mv, r, "", -1)
				return
			}
			w = pass
		}
		if mv == nil || mv.phase == mvCut { // cur takes device bytes
			if len(g.out) > 0 {
				w = append(g.out, w...)
				g.out = nil
			}
			if len(w) > 0 {
				dst := g.cur
				g.mu.Unlock()
				n, err := dst.Write(w)
				c.n[0].Add(uint64(n))
				if err != nil && !g.upWriteFailed(dst, err) {
					return
				}
				continue
			}
			if mv != nil && mv.cutAt { // the old owner has every byte up to a frame end
				g.cutLocked(mv)
				dst := g.cur
				g.mu.Unlock()
				if cw, ok := dst.(closeWriter); ok {
					cw.CloseWrite() // if it fails, copyDown sees the old owner go
				}
				continue
			}
		}
		if rerr != nil {
			err := rerr
			rerr = nil
			if !g.upReadFailed(err) {
				return
			}
			continue
		}
		g.woken = false // a wake from now on ends the read
		g.armReadLocked(0, c.client)
		g.mu.Unlock()
		b, rerr = rd.read(c.client)
	}
}

// takeUpLocked feeds b, read from the device, to its tracker and returns
// what goes to the current backend now; the rest is held for the new
// owner, or dropped as the rest of a frame the lost owner had begun.
func (g *goMove) takeUpLocked(b []byte) (pass []byte, r MoveResult) {
	lg, mv := g.c.lg, g.mv
	first, _ := lg.feed(g.p, 0, b)
	if g.skip { // outlives the move: the device may send the rest after it
		if first < 0 || lg.broken {
			return nil, ""
		}
		b, first, g.skip = b[first:], 0, false
	}
	if mv == nil {
		return b, ""
	}
	if lg.broken {
		return nil, MoveNotMovable
	}
	if !mv.cutAt {
		if first < 0 {
			return b, ""
		}
		pass, b, mv.cutAt = b[:first], b[first:], true
	}
	if len(mv.held)+len(b) > g.p.Rehome.maxBuffered() {
		return nil, MoveBufferFull
	}
	mv.held = append(mv.held, b...)
	return pass, ""
}

// upWriteFailed acts on a failed write of device bytes to dst: a backend
// lost with no move under way is checked; false if copyMoveUp must return.
func (g *goMove) upWriteFailed(dst net.Conn, err error) bool {
	g.mu.Lock()
	if g.closed || dst != g.cur {
		g.mu.Unlock()
		return true // closed (the loop returns), or a backend left behind
	}
	if mv := g.mv; mv != nil {
		if mv.phase == mvCut && !mv.cutAt { // the rest of the frame it had begun goes nowhere
			g.skip, mv.cutAt = true, true
		}
		g.mu.Unlock()
		return true // copyMoveDown sees the old owner go
	}
	mv := g.startLostLocked(err)
	g.mu.Unlock()
	if mv == nil {
		g.c.setReason(ReasonBackendClosed)
		g.c.close(ReasonBackendClosed)
		return false
	}
	g.askLost(mv) // copyMoveDown takes the answer when it sees the backend end
	return true
}

// upReadFailed acts on the device's read error with mu held, and releases
// it; false if copyMoveUp must return.
func (g *goMove) upReadFailed(err error) bool {
	c := g.c
	if errors.Is(err, os.ErrDeadlineExceeded) {
		reason := g.expiredLocked(0)
		g.mu.Unlock()
		if reason == "" {
			return true
		}
		c.close(reason)
		return false
	}
	if mv := g.mv; mv != nil {
		g.mu.Unlock()
		g.fail(mv, MoveDeviceGone, ReasonClientClosed, -1)
		return false
	}
	c.setReason(ReasonClientClosed)
	if errors.Is(err, io.EOF) && !g.ended[1] { // half-close: the other direction goes on
		g.ended[0] = true
		dst := g.cur
		g.armFinLocked(0)
		g.mu.Unlock()
		if cw, ok := dst.(closeWriter); ok && cw.CloseWrite() == nil {
			return false
		}
	} else {
		g.mu.Unlock()
	}
	c.close(ReasonClientClosed)
	return false
}

// waitLocked is the quiet time direction d may read under: the idle
// timeout, or after the other direction's FIN the FIN timeout if shorter
// (fin true); 0 for none.
func (g *goMove) waitLocked(d int) (w time.Duration, fin bool) {
	idle := max(g.p.IdleTimeout, 0)
	if f := g.c.finWaitOn(d); f > 0 && (idle == 0 || f < idle) {
		return f, true
	}
	return idle, false
}

// armReadLocked sets the read deadline of src, direction d's source,
// before a read.
func (g *goMove) armReadLocked(d int, src net.Conn) {
	var at time.Time
	if w, _ := g.waitLocked(d); w > 0 {
		at = time.Now().Add(w)
	}
	if !at.Equal(g.dl[d]) {
		src.SetReadDeadline(at)
		g.dl[d] = at
	}
}

// armFinLocked starts the FIN timeout after direction d ended: the other
// direction's read runs under it.
func (g *goMove) armFinLocked(d int) {
	w := g.c.finWait[d]
	if w <= 0 {
		return
	}
	g.c.finArmed[d].Store(true)
	src := g.c.client
	if d == 0 {
		src = g.cur
	}
	at := time.Now().Add(w)
	src.SetReadDeadline(at)
	g.dl[1-d] = at
}

// expiredLocked says why the pair closes after direction d's read
// deadline passed: the idle or FIN timeout ran out; "" when it did not
// (a wake, or bytes moved meanwhile).
func (g *goMove) expiredLocked(d int) Reason {
	if d == 0 && g.woken {
		return ""
	}
	w, fin := g.waitLocked(d)
	if w == 0 {
		return ""
	}
	last := g.last[d]
	if !fin && g.last[1-d].After(last) {
		last = g.last[1-d]
	}
	if time.Since(last) < w {
		return ""
	}
	if fin {
		g.c.finTimedOut(1 - d)
		return finReasons[1-d]
	}
	return ReasonIdleTimeout
}
