package proxy

import (
	"context"
	"net"
	"sync"
	"time"
)

// Moves on the goroutine path (rehome.go has the contract): connections
// whose device side the gateway terminates TLS for, or with BackendTLS,
// IdleTimeout or Proxy.Goroutines. With rehome on, a connection with a
// session is copied by pipeMove instead of pipe: splice cannot tell where
// frames end, so each direction reads into a pooled 4 KiB buffer
// (idleReader: held only while bytes are in hand, except on a TLS
// connection) and feeds its frame tracker under goMove.mu, which also
// holds the move. The phases
// are the loops' (loop_move_linux.go); who acts in each:
//
//   - copyUp (device to backend) is the only writer of device bytes to a
//     backend. In the cut it writes to the old owner up to the end of the
//     frame in progress and holds later bytes (at most MaxBuffered); once
//     those are written it half-closes the old owner. After the switch it
//     writes the held bytes to the new owner. Whoever has something for it
//     while it waits in a read (a move begins, a move ends) interrupts the
//     read with a past deadline (wakeLocked); a TLS read survives that.
//   - copyDown (backend to device) is the only writer to the device. It
//     forwards the old owner's whole frames until the old owner closes,
//     dials the new owner, replays the login, swallows the answer and goes
//     on copying from the new owner. On a backend's EOF or reset with no
//     move under way it asks the shared check (lostProbes) whether the
//     backend is gone, and moves the device or ends as without rehome.
//   - timers fail a move past Rehome.Timeout, or an old owner still open
//     DrainGrace after the cut.
//
// Cost of an idle device, besides the two goroutines: a goMove (about
// 200 bytes) and the 4 KiB read buffer of a TLS side, instead of two
// splice pipes (4 fds and their kernel buffers).

// goMove is the state the two copying goroutines of a movable connection
// share. Fields are guarded by mu.
type goMove struct {
	p *Proxy
	c *conn

	mu     sync.Mutex
	cond   sync.Cond // broadcast when mv, its phase, probe or closed change
	mv     *move     // the move under way
	cur    net.Conn  // the backend copied to (nil while dialling the new owner)
	out    []byte    // device bytes for cur not yet written: the held bytes after a switch
	closed bool
	skip   bool         // drop device bytes up to the next frame end: the rest of one a lost owner began
	ended  [2]bool      // direction d read its EOF (0: device to backend)
	woken  bool         // copyUp's read deadline was moved to wake it
	dl     [2]time.Time // read deadline set, by direction
	last   [2]time.Time // of the last bytes read, by direction
	probe  uint8        // answer of the backend check: probeWaiting, probeAlive, probeGone
	cancel context.CancelFunc
	timer  *time.Timer // Rehome.Timeout of mv
	grace  *time.Timer // DrainGrace of mv

	failing sync.WaitGroup // fail calls under way: counted before the pipe ends
}

// Answers of a backend check (goMove.probe).
const (
	probeWaiting = iota
	probeAlive
	probeGone
)

// newGoMove is the move state of pc, copied by goroutines to backend.
func (p *Proxy) newGoMove(pc *conn, backend net.Conn) *goMove {
	g := &goMove{p: p, c: pc, cur: backend}
	g.cond.L = &g.mu
	now := time.Now()
	g.last = [2]time.Time{now, now}
	return g
}

// startMoveGo begins a move that startMove made, on a connection copied
// by goroutines.
func (p *Proxy) startMoveGo(c *conn, mv *move) {
	g := c.gm
	if g == nil { // copied without a session: cannot move
		c.close(Evicted(mv.cause))
		p.finishMove(c, mv, MoveNotMovable)
		return
	}
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		p.finishMove(c, mv, MoveClosed)
		return
	}
	if c.lg.broken || g.ended[0] || g.ended[1] {
		g.mu.Unlock()
		c.close(Evicted(mv.cause))
		p.finishMove(c, mv, MoveNotMovable)
		return
	}
	mv.phase, mv.cutAt, mv.partOut = mvCut, c.lg.track[0].AtBoundary(), !c.lg.track[1].AtBoundary()
	g.beginLocked(mv)
	g.wakeLocked() // an idle device: copyUp makes the cut
	g.mu.Unlock()
}

// beginLocked makes mv the move under way and starts its timeout.
func (g *goMove) beginLocked(mv *move) {
	g.mv = mv
	g.timer = time.AfterFunc(time.Until(mv.start.Add(g.p.Rehome.timeout())), func() {
		g.fail(mv, MoveTimeout, "", -1)
	})
}

// cutLocked records that the old owner has every device byte up to a
// frame end: it is half-closed (by the caller) and drains.
func (g *goMove) cutLocked(mv *move) {
	mv.phase = mvDrain
	g.grace = time.AfterFunc(g.p.Rehome.drainGrace(), func() {
		g.fail(mv, MoveOldOwnerOpen, "", mvDrain)
	})
}

// dropMoveLocked ends the move under way (the caller counts it).
func (g *goMove) dropMoveLocked() {
	g.mv = nil
	for _, t := range []**time.Timer{&g.timer, &g.grace} {
		if *t != nil {
			(*t).Stop()
			*t = nil
		}
	}
	g.cond.Broadcast()
}

// wakeLocked interrupts copyUp's read, so it looks at the move.
func (g *goMove) wakeLocked() {
	g.woken = true
	now := time.Now()
	g.c.client.SetReadDeadline(now)
	g.dl[0] = now
}

// fail ends mv, if it is still under way (and, with phase >= 0, in that
// phase), in the close of the connection as without rehome: with reason,
// or by default its cause's eviction (backend_closed for a lost backend).
func (g *goMove) fail(mv *move, r MoveResult, reason Reason, phase int) {
	g.mu.Lock()
	if g.mv != mv || phase >= 0 && int(mv.phase) != phase {
		g.mu.Unlock()
		return
	}
	g.dropMoveLocked()
	g.failing.Add(1)
	g.mu.Unlock()
	defer g.failing.Done()
	if reason == "" {
		reason = Evicted(mv.cause)
		if mv.cause == CauseBackendLost {
			reason = ReasonBackendClosed
		}
	}
	g.c.setReason(reason)
	g.c.close(reason) // closing first: no new move can begin on it
	g.p.finishMove(g.c, mv, r)
}

// moved counts mv, which ended on its new owner.
func (g *goMove) moved(mv *move) {
	g.p.rehomed(g.c, mv.to.ID, mv.src)
	g.p.finishMove(g.c, mv, MoveMoved)
}

// resumeLocked ends mv on the new owner: the held device bytes go to it
// first, then copying goes on.
func (g *goMove) resumeLocked(mv *move) {
	g.dropMoveLocked()
	g.out = append(g.out, mv.held...)
	mv.held = nil
	g.wakeLocked()
}

// closeAll closes the device and whichever backends the connection holds
// (conn.close, once).
func (g *goMove) closeAll() {
	g.mu.Lock()
	g.closed = true
	if g.cancel != nil {
		g.cancel()
	}
	cur := g.cur
	g.cond.Broadcast()
	g.mu.Unlock()
	g.c.client.Close()
	if cur != nil {
		cur.Close()
	}
}

// startLostLocked begins the check of a backend that ended under the
// connection (err, or nil for its FIN) if the device could move; the caller
// asks (askLost) once mu is released. Nil: it cannot move.
func (g *goMove) startLostLocked(err error) *move {
	c, lg := g.c, g.c.lg
	if lg.broken || g.ended[0] || g.ended[1] || !lg.track[1].AtBoundary() || c.closing.Load() ||
		!c.moving.CompareAndSwap(false, true) {
		return nil
	}
	g.p.stats.moving.Add(1)
	mv := &move{cause: CauseBackendLost, c: c, start: time.Now(), lost: err}
	mv.phase = mvCheck
	g.probe = probeWaiting
	g.beginLocked(mv)
	return mv
}

// askLost asks the shared check whether the backend of mv is gone.
func (g *goMove) askLost(mv *move) {
	g.p.probes.check(g.p, g.c, func(gone bool) {
		g.mu.Lock()
		if g.mv == mv && mv.phase == mvCheck {
			g.probe = probeAlive
			if gone {
				g.probe = probeGone
			}
			g.cond.Broadcast()
		}
		g.mu.Unlock()
	})
}

// dialNew connects to the new owner of mv and replays the login there;
// false if the move ended.
func (g *goMove) dialNew(mv *move) bool {
	p, c := g.p, g.c
	wait := min(p.dialTimeout(), time.Until(mv.start.Add(p.Rehome.timeout())))
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	g.mu.Lock()
	if g.closed || g.mv != mv {
		g.mu.Unlock()
		return false
	}
	g.cancel = cancel
	g.mu.Unlock()
	nb, err := p.dialBackend(ctx, mv.to)
	g.mu.Lock()
	g.cancel = nil
	if g.closed || g.mv != mv {
		g.mu.Unlock()
		if nb != nil {
			nb.Close()
		}
		return false
	}
	if err == nil {
		g.cur = nb // closeAll closes it from now on
		mv.src = p.connSource(nb)
	}
	g.mu.Unlock()
	if err != nil {
		g.fail(mv, MoveDialFailed, "", -1)
		return false
	}
	p.setKeepAlive(nb)
	login := c.lg.frames
	if p.SendProxyV2 || mv.to.Meta["proxy"] == "v2" {
		hdr, err := proxyV2Header(net.TCPAddrFromAddrPort(c.lg.remote), c.client.LocalAddr())
		if err != nil {
			g.fail(mv, MoveDialFailed, "", -1)
			return false
		}
		login = append(hdr, login...)
	}
	if _, err := nb.Write(login); err != nil {
		g.fail(mv, MoveDialFailed, "", -1)
		return false
	}
	g.mu.Lock()
	if g.closed || g.mv != mv {
		g.mu.Unlock()
		return false
	}
	c.lg.track[1].Reset()
	if !p.Rehome.KeepReply {
		mv.phase = mvSwallow
		g.mu.Unlock()
		return true
	}
	g.resumeLocked(mv)
	g.mu.Unlock()
	g.moved(mv)
	return true
}
