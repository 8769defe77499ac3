//go:build linux

package proxy

import "time"

// Backend loss: the backend of a routed pair closed or reset. If the
// backend is gone (out of the ring, or one shared dial to it fails) the
// device moves to its next owner; if it is alive, it closed the device on
// purpose and the pair ends as without rehome.

// loopBackendLost takes over a pair whose backend ended (err, or nil for
// its FIN) if it may be moved; false leaves it to the copy path.
func (l *evLoop) loopBackendLost(pr *evPair, err error) bool {
	p, pc := l.p, pr.pc
	if !p.rehomeOn() || pc.lg == nil || pc.lg.broken || pr.ended[0] || pr.ended[1] ||
		!pc.lg.track[1].AtBoundary() || pr.killed.Load() || !pc.moving.CompareAndSwap(false, true) {
		return false
	}
	p.stats.moving.Add(1)
	mv := &move{cause: CauseBackendLost, c: pc, start: time.Now(), lost: err}
	mv.phase = mvCheck
	l.loopDropReplay(pr)
	l.loopMoveBegin(pr, mv)
	l.poll.Watch(&pr.side[1].FD, 0)
	id := mv.id
	p.probes.check(p, pc, func(gone bool) {
		l.send(evMsg{pr: pr, lostCheck: true, gen: id, gone: gone})
	})
	return true
}

// loopLostResult takes the answer of the check of pr's old owner.
func (l *evLoop) loopLostResult(pr *evPair, id uint32, gone bool) {
	mv := pr.mv
	if pr.done || mv == nil || mv.id != id || mv.phase != mvCheck {
		return
	}
	p, pc := l.p, pr.pc
	if !gone { // alive: it closed the device on purpose
		pr.mv = nil
		p.stats.moving.Add(-1)
		pc.moving.Store(false)
		if mv.lost != nil {
			l.loopClose(pr, ReasonBackendClosed, nil)
			return
		}
		l.loopEOF(pr, 1)
		if !pr.done {
			l.loopRearm(pr)
		}
		return
	}
	to, res := p.moveTarget(pc.device, p.table.backendOf(pc), true)
	if res != "" {
		l.loopMoveFail(pr, mv, res)
		return
	}
	mv.to = to
	mv.cutAt = true
	pc.lg.skip = !pc.lg.track[0].AtBoundary() // the lost owner had begun a frame: drop its rest
	l.loopMoveOldGone(pr)
	if !pr.done {
		l.loopRearm(pr)
	}
}

// loopDueMoves moves the move deadlines that fell to l.moveDue and returns
// the earliest one still queued. l.mu held.
func (l *evLoop) loopDueMoves(now time.Time) (next time.Time) {
	for k := range l.moveTimers {
		var at time.Time
		l.moveDue, at = l.moveTimers[k].popDue(now, func(t *evTimer) bool {
			mv := t.pr.mv
			t.mark = int64(k) // 0: the move's timeout, 1: its drain grace
			return !t.pr.done && mv != nil && mv.id == t.gen && (k == 0 || mv.phase == mvDrain)
		}, l.moveDue)
		if !at.IsZero() && (next.IsZero() || at.Before(next)) {
			next = at
		}
	}
	return next
}

// loopRunMoveDeadlines fails the moves whose deadline fell.
func (l *evLoop) loopRunMoveDeadlines() {
	for i, t := range l.moveDue {
		if mv := t.pr.mv; !t.pr.done && mv != nil && mv.id == t.gen {
			if t.mark == 0 {
				l.loopMoveFail(t.pr, mv, MoveTimeout)
			} else if mv.phase == mvDrain {
				l.loopMoveFail(t.pr, mv, MoveOldOwnerOpen)
			}
		}
		l.moveDue[i] = evTimer{}
	}
	l.moveDue = l.moveDue[:0]
}
