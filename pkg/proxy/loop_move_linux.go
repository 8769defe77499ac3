//go:build linux

package proxy

import (
	"net"
	"syscall"
	"time"

	"github.com/devgate/devgate/pkg/proxy/internal/netpoll"
)

// Moves on the loops (rehome.go has the contract). A pair with a move
// under way (evPair.mv) is driven by loopMoveEvent
// instead of the copy path:
//
//	cut:     device bytes still go to the old owner up to the end of the
//	         frame in progress; later ones are held. Then SHUT_WR to it.
//	drain:   the old owner's whole frames go to the device until it closes
//	         (DrainGrace bounds it).
//	check:   (a lost backend only) one dial per backend says whether it is
//	         gone; the device is not read meanwhile.
//	dial:    a non-blocking connect to the new owner; then the PROXY header
//	         if it wants one and the saved login.
//	swallow: the first frame it sends (the answer to the login) is dropped.
//
// then the held bytes go to the new owner and copying resumes. A failed
// step, or Rehome.Timeout, closes the pair as without rehome.

// onLoop says whether pr is on its loop, where a move can be posted.
func (pr *evPair) onLoop() bool { return pr.attached.Load() }

// postMove asks pr's loop to move it.
func (pr *evPair) postMove(mv *move) { pr.loop.send(evMsg{pr: pr, move: mv}) }

// loopMoveStart begins a move that startMove posted.
func (l *evLoop) loopMoveStart(pr *evPair, mv *move) {
	p := l.p
	if mv.begun != nil {
		defer func() { mv.begun <- struct{}{} }() // buffered for every move of the batch
	}
	switch {
	case pr.done || pr.pc != mv.c: // closed, or fell back to another backend before its first byte
		p.finishMove(mv.c, mv, MoveClosed)
		return
	case pr.stage != evCopy || pr.pc.lg == nil || pr.pc.lg.broken || pr.ended[0] || pr.ended[1]:
		l.loopMoveFail(pr, mv, MoveNotMovable)
		return
	}
	l.loopDropReplay(pr)
	l.loopMoveBegin(pr, mv)
	mv.phase = mvCut
	mv.cutAt = pr.pc.lg.track[0].AtBoundary()
	mv.partOut = !pr.pc.lg.track[1].AtBoundary()
	l.loopMoveCut(pr)
	if !pr.done {
		l.loopRearm(pr)
	}
}

// loopMoveBegin attaches mv to pr and queues its deadline.
func (l *evLoop) loopMoveBegin(pr *evPair, mv *move) {
	l.moveSeq++
	mv.id = l.moveSeq
	pr.mv = mv
	l.mu.Lock()
	l.moveTimers[0].push(evTimer{at: mv.start.Add(l.moveTimers[0].d), pr: pr, gen: mv.id})
	l.mu.Unlock()
}

// loopMoveCut half-closes the old owner once the device's bytes to it end
// at a frame boundary and are all written.
func (l *evLoop) loopMoveCut(pr *evPair) {
	mv := pr.mv
	if mv.phase != mvCut || !mv.cutAt || pr.pending[0] != nil {
		return
	}
	if netpoll.Shutdown(pr.side[1].Fd, syscall.SHUT_WR) != nil {
		l.loopMoveOldGone(pr)
		return
	}
	mv.phase = mvDrain
	l.mu.Lock()
	l.moveTimers[1].push(evTimer{at: time.Now().Add(l.moveTimers[1].d), pr: pr, gen: mv.id})
	l.mu.Unlock()
}

// loopMoveEvent acts on the events of one fd of a pair being moved.
func (l *evLoop) loopMoveEvent(pr *evPair, fd int, events uint32) {
	mv := pr.mv
	i := 0
	if pr.side[1].Fd == fd {
		i = 1
	} else if pr.side[0].Fd != fd {
		return // stale
	}
	if i == 1 && mv.phase == mvCheck {
		return // the lost owner's events still in this batch: its end is known already
	}
	if i == 1 && mv.phase == mvDial {
		if err := netpoll.ConnectError(fd, events); err != nil {
			l.loopMoveFail(pr, mv, MoveDialFailed)
			return
		}
		l.loopMoveConnected(pr)
	} else {
		if events&(netpoll.Out|netpoll.Hup) != 0 && pr.pending[1-i] != nil {
			l.loopFlush(pr, 1-i)
		}
		if !pr.done && pr.mv == mv && events&(netpoll.In|netpoll.Hup) != 0 {
			l.loopMoveReadSide(pr, i)
		}
	}
	if !pr.done && pr.mv == mv {
		l.loopMoveCut(pr)
	}
	if !pr.done {
		l.loopRearm(pr)
	}
}

// loopMoveReadSide reads once from side d of a pair being moved.
func (l *evLoop) loopMoveReadSide(pr *evPair, d int) {
	n, err := netpoll.Read(pr.side[d].Fd, l.buf)
	switch {
	case err == syscall.EAGAIN || err == syscall.EINTR:
	case (err != nil || n == 0) && d == 0:
		l.loopClose(pr, ReasonClientClosed, nil) // counted as device_gone
	case err != nil || n == 0:
		if pr.mv.phase == mvSwallow { // the new owner refused the login
			l.loopMoveFail(pr, pr.mv, MoveDialFailed)
			return
		}
		l.loopMoveOldGone(pr)
	default:
		l.loopMoveRead(pr, d, l.buf[:n])
	}
}

// loopMoveRead takes bytes read from side d mid-move.
func (l *evLoop) loopMoveRead(pr *evPair, d int, b []byte) {
	mv, lg := pr.mv, pr.pc.lg
	if d == 1 && mv.phase == mvSwallow {
		l.loopMoveSwallow(pr, b)
		return
	}
	first, last := lg.feed(l.p, d, b)
	if lg.broken {
		l.loopMoveFail(pr, mv, MoveNotMovable)
		return
	}
	if d == 0 {
		if lg.skip { // the rest of a frame the lost owner had begun
			if first < 0 {
				return
			}
			b, lg.skip = b[first:], false
		}
		if !mv.cutAt {
			if first < 0 {
				l.loopForward(pr, 0, b)
				return
			}
			if !l.loopForward(pr, 0, b[:first]) {
				return
			}
			b, mv.cutAt = b[first:], true
		}
		if len(mv.held)+len(b) > l.p.Rehome.maxBuffered() {
			l.loopMoveFail(pr, mv, MoveBufferFull)
			return
		}
		mv.held = append(mv.held, b...)
		return
	}
	// The old owner's answers: in the cut phase they flow as before; once
	// it is half-closed only whole frames reach the device, so a close in
	// the middle of one leaves the device nothing partial.
	if mv.phase == mvCut || mv.partOut {
		if mv.phase == mvCut || first < 0 {
			mv.partOut = !lg.track[1].AtBoundary()
			l.loopForward(pr, 1, b)
			return
		}
		if !l.loopForward(pr, 1, b[:first]) {
			return
		}
		b, last, mv.partOut = b[first:], last-first, false
	}
	if last < 0 {
		mv.back = append(mv.back, b...)
		return
	}
	out := append(mv.back, b[:last]...)
	mv.back = append([]byte(nil), b[last:]...)
	l.loopForward(pr, 1, out)
}

// loopForward writes b to the destination of direction d, keeping what the
// peer does not take pending; false if pr was closed.
func (l *evLoop) loopForward(pr *evPair, d int, b []byte) bool {
	if len(b) == 0 {
		return true
	}
	if pr.pending[d] != nil { // behind bytes already waiting
		pr.pending[d] = append(pr.pending[d], b...)
		return true
	}
	rest, ok := l.loopWrite(pr, d, b)
	if !ok {
		return false
	}
	if len(rest) > 0 {
		bp := evPendingPool.Get().(*[]byte)
		pr.pbuf[d], pr.pending[d] = bp, append((*bp)[:0], rest...)
	}
	return true
}

// loopMoveOldGone: the old owner closed (or reset). Its half-written frame,
// if the device has the start of it, cannot be undone: the move fails.
func (l *evLoop) loopMoveOldGone(pr *evPair) {
	mv := pr.mv
	if mv.partOut {
		l.loopMoveFail(pr, mv, MovePartialFrame)
		return
	}
	if !mv.cutAt { // device bytes it took mid-frame: drop the rest of that frame
		lg := pr.pc.lg
		lg.skip, mv.cutAt = true, true
	}
	l.loopDropPending(pr, 0)
	mv.back = nil
	l.loopDropSide(pr, 1)
	l.loopMoveDial(pr)
}

// loopDropPending forgets what direction d had pending.
func (l *evLoop) loopDropPending(pr *evPair, d int) {
	if pr.pbuf[d] != nil {
		evPendingPool.Put(pr.pbuf[d])
	}
	pr.pbuf[d], pr.pending[d] = nil, nil
}

// loopMoveDial connects to the new owner.
func (l *evLoop) loopMoveDial(pr *evPair) {
	mv := pr.mv
	mv.phase = mvDial
	// Moves dial ip:port registrations only (errByName fails the move).
	fd, path, err := l.p.connectRaw(mv.to) // dialsrc_linux.go
	if err != nil {
		l.loopMoveFail(pr, mv, MoveDialFailed)
		return
	}
	mv.src = path.src
	s := &pr.side[1]
	*s = evSide{FD: netpoll.FD{Fd: fd}}
	if err := l.poll.Add(pr, netpoll.Out, &s.FD); err != nil {
		netpoll.Close(fd)
		s.Fd = -1
		l.loopMoveFail(pr, mv, MoveDialFailed)
	}
}

// loopMoveConnected replays the login on the new owner.
func (l *evLoop) loopMoveConnected(pr *evPair) {
	p, mv, pc := l.p, pr.mv, pr.pc
	out := pc.lg.frames
	if p.SendProxyV2 || mv.to.Meta["proxy"] == "v2" {
		hdr, err := proxyV2Header(net.TCPAddrFromAddrPort(pc.lg.remote), net.TCPAddrFromAddrPort(netpoll.LocalAddr(pr.side[0].Fd)))
		if err != nil {
			l.loopMoveFail(pr, mv, MoveDialFailed)
			return
		}
		out = append(hdr, out...)
	}
	if !l.loopForward(pr, 0, out) {
		return
	}
	pc.lg.track[1].Reset()
	if p.Rehome.KeepReply {
		l.loopMoveResume(pr, nil)
		return
	}
	mv.phase = mvSwallow
}

// loopMoveSwallow drops the new owner's first frame, the answer to the
// replayed login, and resumes with what follows it.
func (l *evLoop) loopMoveSwallow(pr *evPair, b []byte) {
	lg := pr.pc.lg
	if lg.track[1].AtBoundary() && len(b) > 0 { // the frame's first byte: a boundary before it is no end
		lg.feed(l.p, 1, b[:1])
		b = b[1:]
	}
	first, _ := lg.feed(l.p, 1, b)
	switch {
	case lg.broken:
		l.loopMoveFail(pr, pr.mv, MoveBadReply)
	case first >= 0:
		l.loopMoveResume(pr, b[first:])
	}
}

// loopMoveResume ends a move: the held device bytes go to the new owner,
// after them whatever it sent past its answer goes to the device, and the
// pair copies again.
func (l *evLoop) loopMoveResume(pr *evPair, fromNew []byte) {
	mv, pc := pr.mv, pr.pc
	pr.mv = nil
	l.p.rehomed(pc, mv.to.ID, mv.src)
	l.p.finishMove(pc, mv, MoveMoved)
	if l.loopForward(pr, 0, mv.held) {
		l.loopForward(pr, 1, fromNew)
	}
}

// loopMoveFail ends a move in the close of the pair as without rehome.
func (l *evLoop) loopMoveFail(pr *evPair, mv *move, r MoveResult) {
	if pr.mv == mv {
		pr.mv = nil
	}
	l.p.finishMove(pr.pc, mv, r)
	if pr.done {
		return
	}
	reason := Evicted(mv.cause)
	if mv.cause == CauseBackendLost {
		reason = ReasonBackendClosed
	}
	pr.pc.setReason(reason)
	l.loopClose(pr, reason, nil)
}

// loopMoveClosed counts a move whose pair closed under it.
func (l *evLoop) loopMoveClosed(pr *evPair) {
	mv := pr.mv
	pr.mv = nil
	r := MoveClosed
	if pr.pc.endReason() == ReasonClientClosed {
		r = MoveDeviceGone
	}
	l.p.finishMove(pr.pc, mv, r)
}

// loopMoveRearm is loopRearm for a pair being moved.
func (l *evLoop) loopMoveRearm(pr *evPair) {
	mv := pr.mv
	var want [2]uint32
	if mv.phase != mvCheck && (mv.cutAt || pr.pending[0] == nil) {
		want[0] |= netpoll.In
	}
	if pr.pending[1] != nil {
		want[0] |= netpoll.Out
	}
	switch mv.phase {
	case mvCut, mvDrain:
		if pr.pending[1] == nil {
			want[1] |= netpoll.In
		}
		if pr.pending[0] != nil {
			want[1] |= netpoll.Out
		}
	case mvDial:
		want[1] = netpoll.Out
	case mvSwallow:
		want[1] = netpoll.In
		if pr.pending[0] != nil {
			want[1] |= netpoll.Out
		}
	}
	for i := range pr.side {
		if pr.side[i].Fd < 0 {
			continue
		}
		if err := l.poll.Watch(&pr.side[i].FD, want[i]); err != nil {
			l.loopMoveFail(pr, mv, MoveNotMovable)
			return
		}
	}
}
