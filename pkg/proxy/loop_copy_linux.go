//go:build linux

package proxy

import (
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/devgate/devgate/pkg/proxy/internal/netpoll"
)

// The copy path of an evPair on its loop: level-triggered readiness, one
// read per event into the loop's buffer, pending bytes and backpressure.
// See loop_linux.go for the design.

// evEOFReason is the end reason of each direction: 0 copies client to
// backend, 1 backend to client.
var evEOFReason = [2]Reason{ReasonClientClosed, ReasonBackendClosed}

// reading says whether direction d reads its source now.
func (pr *evPair) reading(d int) bool { return !pr.ended[d] && pr.pending[d] == nil }

// loopRead reads once from side d and writes to the other side.
func (l *evLoop) loopRead(pr *evPair, d int) {
	n, err := syscall.Read(pr.side[d].Fd, l.buf)
	switch {
	case err == syscall.EAGAIN || err == syscall.EINTR:
	case (err != nil || n == 0) && d == 1 && l.loopFallBack(pr, err):
	case (err != nil || n == 0) && d == 1 && l.loopBackendLost(pr, err):
	case err != nil: // a reset reads as the same side going away, as in pipe
		l.loopClose(pr, evEOFReason[d], nil)
	case n == 0:
		l.loopEOF(pr, d)
	default:
		if pr.replay != nil { // a byte moved: the pair stays with this backend
			l.loopDropReplay(pr)
			l.p.ejectSucceeded(pr.pc.backendID, true)
		}
		b := l.buf[:n]
		if lg := pr.pc.lg; lg != nil {
			first, _ := lg.feed(l.p, d, b)
			if d == 0 && lg.skip { // the rest of a frame a lost owner had begun
				switch {
				case lg.broken:
					lg.skip = false
				case first < 0:
					return
				default:
					b, lg.skip = b[first:], false
				}
				if len(b) == 0 {
					return
				}
			}
		}
		if rest, ok := l.loopWrite(pr, d, b); !ok {
			return
		} else if len(rest) > 0 { // the peer is full: keep the rest, stop reading
			bp := evPendingPool.Get().(*[]byte)
			pr.pbuf[d], pr.pending[d] = bp, append((*bp)[:0], rest...)
			pr.p.loops.paused.Add(1)
		}
	}
}

// loopEOF half-closes the peer of direction d, which read EOF; the other
// direction goes on.
func (l *evLoop) loopEOF(pr *evPair, d int) {
	pr.pc.setReason(evEOFReason[d])
	pr.ended[d] = true
	// Both ended: closing sends the last FIN (both receive queues are
	// empty, so it is a FIN and not a reset).
	if pr.ended[1-d] || syscall.Shutdown(pr.side[1-d].Fd, syscall.SHUT_WR) != nil {
		l.loopClose(pr, evEOFReason[d], nil)
	} else {
		l.loopArmFin(pr, d)
	}
}

// loopFlush writes what direction d has pending.
func (l *evLoop) loopFlush(pr *evPair, d int) {
	rest, ok := l.loopWrite(pr, d, pr.pending[d])
	if !ok {
		return
	}
	if len(rest) > 0 {
		pr.pending[d] = rest
		return
	}
	l.loopDropPending(pr, d)
}

// loopWrite writes b to the destination of direction d until it would block,
// and returns what is left. On an error it closes pr and says !ok.
func (l *evLoop) loopWrite(pr *evPair, d int, b []byte) (rest []byte, ok bool) {
	rest, err := netpoll.WriteSome(pr.side[1-d].Fd, b)
	if n := len(b) - len(rest); n > 0 {
		pr.n[d].Add(int64(n))
		l.bytes.n[d].Add(uint64(n))
	}
	if err != nil {
		if d == 0 && pr.mv == nil && l.loopBackendLost(pr, err) {
			return nil, false // moving: the bytes not written were in flight
		}
		l.loopClose(pr, evEOFReason[d], nil)
		return nil, false
	}
	return rest, true
}

// loopRearm brings the epoll set in line with what each side waits for: a side
// is read while its direction runs unpaused, and written while the other
// direction has bytes pending for it.
func (l *evLoop) loopRearm(pr *evPair) {
	if pr.mv != nil {
		l.loopMoveRearm(pr)
		return
	}
	for i := range pr.side {
		var want uint32
		if pr.reading(i) {
			want |= netpoll.In
		}
		if pr.pending[1-i] != nil {
			want |= netpoll.Out
		}
		if err := l.poll.Watch(&pr.side[i].FD, want); err != nil {
			l.p.log.Error("event loop: epoll_ctl failed", zap.Error(err))
			l.loopClose(pr, ReasonShutdown, nil)
			return
		}
	}
}

// FIN timeouts on the loops (see finwait.go): when direction d of a pair
// ends, a deadline goes into the loop's queue fins[d]; every deadline of a
// queue has the same length, so the queue is a FIFO like the preread and
// dial ones. When one falls, the pair is closed if no byte moved since it
// was queued, else queued again from now.

// loopArmFin queues pr's FIN timeout after direction d ended.
func (l *evLoop) loopArmFin(pr *evPair, d int) {
	q := &l.fins[d]
	if q.d <= 0 {
		return
	}
	l.mu.Lock()
	q.push(evTimer{at: time.Now().Add(q.d), pr: pr, mark: pr.n[0].Load() + pr.n[1].Load()})
	l.mu.Unlock()
}

// loopDueFins moves the FIN deadlines that fell to l.finDue and returns the
// earliest one still queued (zero if none). l.mu held.
func (l *evLoop) loopDueFins(now time.Time) (next time.Time) {
	for d := range l.fins {
		var at time.Time
		l.finDue, at = l.fins[d].popDue(now, func(t *evTimer) bool {
			t.gen = uint32(d) // the direction that ended
			return !t.pr.done
		}, l.finDue)
		if !at.IsZero() && (next.IsZero() || at.Before(next)) {
			next = at
		}
	}
	return next
}

// loopRunFins closes the pairs whose FIN deadline fell with nothing moved, and
// queues the others again.
func (l *evLoop) loopRunFins() {
	for i, t := range l.finDue {
		pr, d := t.pr, int(t.gen)
		switch {
		case pr.done:
		case pr.n[0].Load()+pr.n[1].Load() != t.mark:
			l.loopArmFin(pr, d)
		default:
			pr.pc.finTimedOut(d)
			l.loopClose(pr, finReasons[d], nil)
		}
		l.finDue[i] = evTimer{}
	}
	l.finDue = l.finDue[:0]
}

// Falling back on the loops (see firstbyte.go): a routed pair keeps its
// preread bytes (replay) until the first byte moves either way; if the
// backend resets or closes before that and within maxFirstByteWait, as on the
// goroutine path, the pair goes back to its dial stage and the next owner
// gets the same bytes.

// loopFallBack takes pr back to dialing its next owner if its backend went away
// (err, or EOF when nil) before any byte moved; false if it cannot.
func (l *evLoop) loopFallBack(pr *evPair, err error) bool {
	a := pr.replay
	if a == nil || pr.killed.Load() || pr.ended[0] || pr.n[0].Load() != 0 || pr.n[1].Load() != 0 ||
		pr.pending[0] != nil || pr.pending[1] != nil || time.Since(a.sent) >= l.p.firstByteWait() {
		return false
	}
	if err == nil {
		err = io.ErrUnexpectedEOF
	}
	pr.replay, pr.adm = nil, a
	a.again, a.moved = true, pr.pc.moved
	pr.stage = evDial
	l.routed.Add(-1)
	l.p.untrackRouted(pr.pc, a.prior)
	pr.pc = nil
	l.loopDialFailed(pr, errors.Join(errBackendGone, err))
	return true
}

// errBackendGone: the backend went away before its first byte.
var errBackendGone = errors.New("backend closed before its first byte")

// loopDropReplay lets go of the preread bytes kept for a fallback.
func (l *evLoop) loopDropReplay(pr *evPair) {
	if a := pr.replay; a != nil {
		l.p.putBuf(a.bp, a.buf)
		pr.replay = nil
	}
}

// newEvPair prepares pc for a loop; handOff hands it over. It fails (and
// the caller copies with goroutines) when epoll or a raw fd is unavailable.
func (p *Proxy) newEvPair(pc *conn, release func()) (*evPair, error) {
	l, err := p.loops.next(p)
	if err != nil {
		return nil, fmt.Errorf("event loop: %w", err)
	}
	pr := &evPair{p: p, pc: pc, release: release, loop: l, stage: evCopy}
	for i, c := range [2]net.Conn{pc.client, pc.backend} {
		s := &pr.side[i]
		s.tc = c.(*net.TCPConn)
		if s.Fd, err = netpoll.RawFD(s.tc); err != nil {
			return nil, fmt.Errorf("event loop: raw conn: %w", err)
		}
	}
	return pr, nil
}

// handOff hands pr to its loop: from now on only the loop touches its
// sockets, and it ends the connection.
func (p *Proxy) handOff(pr *evPair) {
	l := pr.loop
	err := l.poll.Add(pr, netpoll.In, &pr.side[0].FD, &pr.side[1].FD)
	l.routed.Add(1) // close takes it back
	if err != nil { // the loop never saw pr: this goroutine still owns it
		p.log.Error("event loop: epoll add failed", zap.Error(err))
		l.loopClose(pr, ReasonShutdown, nil)
		return
	}
	pr.attached.Store(true)
	if pr.killed.Load() {
		l.post(pr)
	}
}

// kill asks the loop to close the pair. Only the loop touches its fds: a
// number closed there may already belong to another socket.
func (pr *evPair) kill() {
	pr.killed.Store(true)
	if pr.attached.Load() { // else handOff sees killed and posts it
		pr.loop.post(pr)
	}
}

// loopClose is the loop's one teardown of a pair: both sockets leave the
// epoll set and are closed, the buffers go back, and end accounts for it.
// A routed pair ends for its own reason (reason only fills in when none
// was set); an unrouted one is refused for reason, or for err when its
// preread failed.
func (l *evLoop) loopClose(pr *evPair, reason Reason, err error) {
	if pr.stage == evCopy && !pr.done {
		l.loopNotice(pr, reason) // notice_linux.go
	}
	pr.done = true
	l.loopLeaveTurn(pr)
	l.loopDropSide(pr, 1)
	l.loopDropSide(pr, 0)
	l.loopDropPending(pr, 0)
	l.loopDropPending(pr, 1)
	l.loopDropReplay(pr)
	e := ending{release: pr.release}
	if pr.stage == evCopy {
		l.routed.Add(-1)
		pr.pc.setReason(reason)
		if pr.mv != nil {
			l.loopMoveClosed(pr)
		}
		e.pc = pr.pc
	} else {
		a := pr.adm
		e.reason, e.err, e.n, e.device, e.client = reason, err, len(a.buf), a.device, a.remote
		l.p.putBuf(a.bp, a.buf)
		pr.adm = nil
	}
	l.p.end(e)
}

// loopClose closes the socket: through its *net.TCPConn when it has one, else
// the raw fd the loop dialled (closing it also takes it out of epoll).
func (s *evSide) close() {
	switch {
	case s.tc != nil:
		s.tc.Close()
	case s.Fd >= 0:
		syscall.Close(s.Fd)
	}
}
