//go:build linux

package proxy

import (
	"syscall"

	"go.uber.org/zap"

	"github.com/devgate/devgate/pkg/proxy/internal/netpoll"
)

// The copy path of an evPair on its loop: level-triggered readiness, one
// read per event into the loop's buffer, pending bytes and backpressure.
// See evloop_linux.go for the design.

// handle acts on the events of one fd of pr.
func (l *evLoop) handle(pr *evPair, fd int, events uint32) {
	if pr.killed.Load() {
		l.finalize(pr)
		return
	}
	switch pr.stage {
	case evPreread:
		if fd == pr.side[0].Fd {
			l.prereadEvent(pr, events)
		}
		return
	case evDial:
		l.dialEvent(pr, fd, events)
		return
	}
	i := 0
	if pr.side[1].Fd == fd {
		i = 1
	} else if pr.side[0].Fd != fd {
		return // stale: the fd now belongs to another pair
	}
	if events&(netpoll.Out|netpoll.Hup) != 0 && pr.pending[1-i] != nil {
		l.flush(pr, 1-i)
	}
	if !pr.done && events&(netpoll.In|netpoll.Hup) != 0 && pr.reading(i) {
		l.copy(pr, i)
	}
	if !pr.done && pr.stage == evCopy { // else it fell back to dialing
		l.rearm(pr)
	}
}

// reading says whether direction d reads its source now.
func (pr *evPair) reading(d int) bool { return !pr.ended[d] && pr.pending[d] == nil }

// copy reads once from side d and writes to the other side.
func (l *evLoop) copy(pr *evPair, d int) {
	n, err := syscall.Read(pr.side[d].Fd, l.buf)
	switch {
	case err == syscall.EAGAIN || err == syscall.EINTR:
	case (err != nil || n == 0) && d == 1 && l.fallBack(pr, err):
	case err != nil: // a reset reads as the same side going away, as in pipe
		pr.pc.setReason(evEOFReason[d])
		l.finalize(pr)
	case n == 0: // EOF: half-close the peer, the other direction goes on
		pr.pc.setReason(evEOFReason[d])
		pr.ended[d] = true
		// Both ended: closing sends the last FIN (both receive queues are
		// empty, so it is a FIN and not a reset).
		if pr.ended[1-d] || syscall.Shutdown(pr.side[1-d].Fd, syscall.SHUT_WR) != nil {
			l.finalize(pr)
		} else {
			l.armFin(pr, d)
		}
	default:
		if pr.replay != nil { // a byte moved: the pair stays with this backend
			l.dropReplay(pr)
		}
		if rest, ok := l.write(pr, d, l.buf[:n]); !ok {
			return
		} else if len(rest) > 0 { // the peer is full: keep the rest, stop reading
			bp := evPendingPool.Get().(*[]byte)
			pr.pbuf[d], pr.pending[d] = bp, append((*bp)[:0], rest...)
			pr.p.loops.paused.Add(1)
		}
	}
}

// flush writes what direction d has pending.
func (l *evLoop) flush(pr *evPair, d int) {
	rest, ok := l.write(pr, d, pr.pending[d])
	if !ok {
		return
	}
	if len(rest) > 0 {
		pr.pending[d] = rest
		return
	}
	evPendingPool.Put(pr.pbuf[d])
	pr.pbuf[d], pr.pending[d] = nil, nil
}

// write writes b to the destination of direction d until it would block,
// and returns what is left. On an error it finalizes pr and says !ok.
func (l *evLoop) write(pr *evPair, d int, b []byte) (rest []byte, ok bool) {
	for len(b) > 0 {
		n, err := syscall.Write(pr.side[1-d].Fd, b)
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			return b, true
		case err != nil:
			pr.pc.setReason(evEOFReason[d])
			l.finalize(pr)
			return nil, false
		}
		pr.n[d] += int64(n)
		l.bytes.n[d].Add(uint64(n))
		b = b[n:]
	}
	return b, true
}

// rearm brings the epoll set in line with what each side waits for: a side
// is read while its direction runs unpaused, and written while the other
// direction has bytes pending for it.
func (l *evLoop) rearm(pr *evPair) {
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
			pr.pc.setReason(ReasonShutdown)
			l.finalize(pr)
			return
		}
	}
}
