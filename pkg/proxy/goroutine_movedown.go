package proxy

import (
	"errors"
	"io"
	"net"
	"os"
	"time"
)

// The backend to device direction of a movable connection, which drives a
// move once the cut is made (goroutine_move.go says who does what).

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
