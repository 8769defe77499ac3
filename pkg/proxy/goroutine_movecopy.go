package proxy

import (
	"errors"
	"io"
	"net"
	"os"
	"time"
)

// The two copying goroutines of a movable connection (goroutine_move.go
// says who does what).

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

// copyMoveDown copies backend bytes to the device (named for stack dumps).
func copyMoveDown(g *goMove) {
	c := g.c
	var rd idleReader
	defer rd.release()
	for {
		g.mu.Lock()
		src := g.cur
		if g.closed || src == nil {
			g.mu.Unlock()
			return
		}
		g.armReadLocked(1, src)
		g.mu.Unlock()
		b, err := rd.read(src)
		if len(b) > 0 && !g.down(b) {
			return
		}
		if err == nil {
			continue
		}
		g.mu.Lock()
		if g.closed {
			g.mu.Unlock()
			return
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			reason := g.expiredLocked(1)
			g.mu.Unlock()
			if reason != "" {
				c.close(reason)
				return
			}
			continue
		}
		if errors.Is(err, io.EOF) {
			err = nil
		}
		if !g.backendEndedLocked(src, err) {
			return
		}
	}
}

// down takes b, read from the backend, and writes to the device what may
// reach it; false if copyMoveDown must return.
func (g *goMove) down(b []byte) bool {
	c := g.c
	g.mu.Lock()
	g.last[1] = time.Now()
	mv := g.mv
	out, r := g.takeDownLocked(b)
	switch r {
	case "":
		g.mu.Unlock()
	case MoveMoved:
		g.resumeLocked(mv)
		g.mu.Unlock()
		g.moved(mv)
	default:
		g.mu.Unlock()
		g.fail(mv, r, "", -1)
		return false
	}
	for _, o := range out {
		if len(o) == 0 {
			continue
		}
		n, err := c.client.Write(o)
		c.n[1].Add(uint64(n))
		if err != nil {
			g.mu.Lock()
			mv := g.mv
			g.mu.Unlock()
			if mv != nil {
				g.fail(mv, MoveDeviceGone, ReasonClientClosed, -1)
			}
			c.setReason(ReasonClientClosed)
			c.close(ReasonClientClosed)
			return false
		}
	}
	return true
}

// takeDownLocked feeds b, read from the backend, to its tracker and
// returns what goes to the device, in order. Mid-move only whole frames of
// the old owner reach the device once it is half-closed, and the new
// owner's first frame (the answer to the replayed login) is dropped;
// MoveMoved says that frame ended and the move with it.
func (g *goMove) takeDownLocked(b []byte) (out [2][]byte, r MoveResult) {
	p, lg, mv := g.p, g.c.lg, g.mv
	if mv == nil {
		lg.feed(p, 1, b)
		out[0] = b
		return out, ""
	}
	if mv.phase == mvSwallow {
		if lg.track[1].AtBoundary() && len(b) > 0 { // the frame's first byte: a boundary before it is no end
			lg.feed(p, 1, b[:1])
			b = b[1:]
		}
		first, _ := lg.feed(p, 1, b)
		switch {
		case lg.broken:
			return out, MoveBadReply
		case first >= 0:
			out[0] = b[first:]
			return out, MoveMoved
		}
		return out, ""
	}
	first, last := lg.feed(p, 1, b)
	if lg.broken {
		return out, MoveNotMovable
	}
	if mv.phase == mvCut || mv.partOut {
		if mv.phase == mvCut || first < 0 {
			mv.partOut = !lg.track[1].AtBoundary()
			out[0] = b
			return out, ""
		}
		out[0], b, last, mv.partOut = b[:first], b[first:], last-first, false
	}
	if last < 0 {
		mv.back = append(mv.back, b...)
		return out, ""
	}
	out[1] = append(mv.back, b[:last]...)
	mv.back = append([]byte(nil), b[last:]...)
	return out, ""
}

// backendEndedLocked acts on the end of src, the backend copyMoveDown
// reads (err, or nil for its FIN), with mu held, and releases it: the old
// owner of a move is left for the new one; with no move, a gone backend's
// device moves to its next owner and an alive one's close reaches the
// device. False if copyMoveDown must return.
func (g *goMove) backendEndedLocked(src net.Conn, err error) bool {
	p, c := g.p, g.c
	mv := g.mv
	if mv == nil {
		if mv = g.startLostLocked(err); mv == nil {
			return g.downEOFLocked(err)
		}
		g.mu.Unlock()
		g.askLost(mv)
		g.mu.Lock()
	}
	switch mv.phase {
	case mvCheck:
		for g.probe == probeWaiting && g.mv == mv && !g.closed {
			g.cond.Wait()
		}
		if g.mv != mv || g.closed { // failed meanwhile (timeout)
			g.mu.Unlock()
			return false
		}
		if g.probe == probeAlive { // it closed the device on purpose
			g.dropMoveLocked()
			p.stats.moving.Add(-1)
			c.moving.Store(false)
			return g.downEOFLocked(mv.lost)
		}
		g.mu.Unlock()
		to, res := p.moveTarget(c.device, p.table.backendOf(c), true)
		if res != "" {
			g.fail(mv, res, "", mvCheck)
			return false
		}
		g.mu.Lock()
		if g.mv != mv || g.closed {
			g.mu.Unlock()
			return false
		}
		mv.to, mv.cutAt = to, true
		g.skip = !c.lg.track[0].AtBoundary() // the lost owner had begun a frame: drop its rest
	case mvSwallow: // the new owner refused the login
		g.mu.Unlock()
		g.fail(mv, MoveDialFailed, "", -1)
		return false
	default: // the old owner closed: its half-written frame cannot be undone
		if mv.partOut {
			g.mu.Unlock()
			g.fail(mv, MovePartialFrame, "", -1)
			return false
		}
		if !mv.cutAt { // device bytes it took mid-frame: drop the rest of that frame
			g.skip, mv.cutAt = true, true
		}
	}
	g.out, mv.back, mv.phase, g.cur = nil, nil, mvDial, nil
	if g.grace != nil {
		g.grace.Stop()
		g.grace = nil
	}
	g.cond.Broadcast()
	g.mu.Unlock()
	src.Close()
	return g.dialNew(mv)
}

// downEOFLocked ends the backend to device direction as without rehome,
// with mu held, and releases it: a FIN (err nil) half-closes the device.
func (g *goMove) downEOFLocked(err error) bool {
	c := g.c
	c.setReason(ReasonBackendClosed)
	if err == nil && !g.ended[0] {
		g.ended[1] = true
		g.armFinLocked(1)
		g.mu.Unlock()
		if cw, ok := c.client.(closeWriter); ok && cw.CloseWrite() == nil {
			return false
		}
	} else {
		g.mu.Unlock()
	}
	c.close(ReasonBackendClosed)
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
