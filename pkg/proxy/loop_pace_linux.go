//go:build linux

package proxy

import (
	"syscall"
	"time"

	"github.com/devgate/devgate/pkg/proxy/internal/netpoll"
)

// Waiting for a backend's turn on the loops (pacing.go): the pair stays on
// its loop in stage evWait, its client watched only for a hang-up, no
// backend socket and no goroutine; the backend's pacer posts the turn to
// the loop (evMsg.turn), which dials. Each loop keeps the MaxWait
// deadlines in a FIFO queue (every connection waits at most MaxWait from
// its first wait, so they fall in the order they were pushed).

// evWait is the stage of a pair waiting for its turn (after evCopy so the
// other stages keep their numbers, which index the deadline queues).
const evWait = evCopy + 1

// loopWaitTurn takes a token of a.b, the owner about to be dialled: true
// when the pair waits for its turn instead (or was refused), false when it
// may dial now.
func (l *evLoop) loopWaitTurn(pr *evPair) bool {
	a, p := pr.adm, l.p
	if a.turn { // the token came: dial
		a.turn = false
		return false
	}
	a.paced = nil
	if a.again { // routed once, then fell back: not a new login (pacing.go)
		return false
	}
	pc := p.pacerFor(a.b)
	if pc == nil {
		return false
	}
	a.paced = pc
	w := &waiter{since: time.Now()}
	w.grant = func() { l.send(evMsg{pr: pr, turn: w}) }
	if pc.take(w) {
		return false
	}
	a.wait = w
	pr.stage = evWait
	if a.waitUntil.IsZero() {
		a.waitUntil = w.since.Add(p.Admission.maxWait())
		l.mu.Lock()
		l.waits.push(evTimer{at: a.waitUntil, pr: pr})
		l.mu.Unlock()
	} else if !w.since.Before(a.waitUntil) { // waited its fill at an earlier owner
		l.loopClose(pr, ReasonAdmissionTimeout, nil)
		return true
	}
	// A device that hangs up while it waits is gone: it must not take a
	// turn. Its further bytes (heartbeats) stay in the socket meanwhile.
	if err := l.poll.Watch(&pr.side[0].FD, syscall.EPOLLRDHUP); err != nil {
		l.loopClose(pr, ReasonShutdown, nil)
	}
	return true
}

// loopTurn takes the turn the pacer posted for w, and dials.
func (l *evLoop) loopTurn(pr *evPair, w *waiter) {
	if pr.done || pr.adm == nil || pr.adm.wait != w {
		return // closed meanwhile: loopLeaveTurn gave the token back
	}
	a := pr.adm
	a.wait, a.turn = nil, true
	if f := l.p.OnAdmissionWait; f != nil {
		f(time.Since(w.since))
	}
	if err := l.poll.Watch(&pr.side[0].FD, netpoll.In); err != nil {
		a.turn = false
		a.paced.giveBack()
		l.loopClose(pr, ReasonShutdown, nil)
		return
	}
	pr.stage = evDial
	l.loopDial(pr)
}

// loopWaitEvent: the only event a waiting pair wants is its client going
// away.
func (l *evLoop) loopWaitEvent(pr *evPair, fd int, events uint32) {
	if fd == pr.side[0].Fd && events&(netpoll.Hup|syscall.EPOLLRDHUP) != 0 {
		l.loopClose(pr, ReasonClientGone, nil)
	}
}

// loopLeaveTurn takes a closing pair out of its queue, or gives back the
// token it was granted and did not use.
func (l *evLoop) loopLeaveTurn(pr *evPair) {
	a := pr.adm
	if a == nil || a.wait == nil {
		return
	}
	if a.wait.cancel() {
		a.paced.left()
		if f := l.p.OnAdmissionWait; f != nil {
			f(time.Since(a.wait.since))
		}
	} else {
		a.paced.giveBack()
	}
	a.wait = nil
}

// loopTurnUnused gives back the token of a dial that failed.
func (l *evLoop) loopTurnUnused(pr *evPair) {
	if a := pr.adm; a != nil && a.paced != nil {
		a.paced.giveBack()
		a.paced = nil
	}
}

// loopDueWaits moves the waits past MaxWait to l.waitDue and returns the
// next deadline. Called with l.mu held.
func (l *evLoop) loopDueWaits(now time.Time) (next time.Time) {
	l.waitDue, next = l.waits.popDue(now, func(t *evTimer) bool {
		return !t.pr.done && t.pr.stage == evWait
	}, l.waitDue)
	return next
}

// loopRunWaitDeadlines refuses the pairs that waited MaxWait.
func (l *evLoop) loopRunWaitDeadlines() {
	for i, t := range l.waitDue {
		if !t.pr.done && t.pr.stage == evWait {
			l.loopClose(t.pr, ReasonAdmissionTimeout, nil)
		}
		l.waitDue[i] = evTimer{}
	}
	l.waitDue = l.waitDue[:0]
}
