//go:build linux

package proxy

import (
	"errors"
	"os"
	"time"
)

// A loop's deadlines: the preread and dial queues (every preread, and
// every dial, has the same timeout, so each queue is a FIFO), the FIN
// timeouts (loop_copy_linux.go) and paused listeners. loopExpire runs
// before each wait and sets how long the wait may last.

// evTimer is a deadline of a pair's stage.
type evTimer struct {
	at   time.Time
	pr   *evPair
	gen  uint32 // of the stage; for a FIN deadline, the direction that ended
	mark int64  // FIN deadline: bytes moved both ways when queued
}

// evQueue holds deadlines in the order they fall: all have the same
// duration d and are pushed as time goes on.
type evQueue struct {
	d    time.Duration
	q    []evTimer
	head int
}

// popDue moves q's deadlines that fell by now to due and drops the stale
// ones (live says which are not; it sees each in place and may tag it only
// with what all of q's deadlines share, such as the queue's direction).
// It returns due and the earliest deadline still queued (zero if none).
// l.mu held.
func (q *evQueue) popDue(now time.Time, live func(t *evTimer) bool, due []evTimer) ([]evTimer, time.Time) {
	var next time.Time
	for q.head < len(q.q) {
		t := &q.q[q.head] // in place: a copy passed to live would escape, one allocation a look
		ok := live(t)
		if ok && t.at.After(now) {
			next = t.at
			break
		}
		if ok {
			due = append(due, *t)
		}
		q.q[q.head] = evTimer{}
		q.head++
	}
	if q.head == len(q.q) {
		q.q, q.head = q.q[:0], 0
	}
	return due, next
}

func (q *evQueue) push(t evTimer) {
	if q.head > 64 && q.head > len(q.q)/2 { // reuse the consumed front
		n := copy(q.q, q.q[q.head:])
		clear(q.q[n:])
		q.q, q.head = q.q[:n], 0
	}
	q.q = append(q.q, t)
}

// loopExpire acts on the deadlines that fell and sets the loop's next wakeup:
// the earliest deadline, and at most one preread timeout from now, so a
// preread queued while the loop sleeps is never late.
func (l *evLoop) loopExpire() {
	now := time.Now()
	bound := now.Add(l.timers[evPreread].d)
	l.mu.Lock()
	for st := range l.timers {
		var next time.Time
		l.due, next = l.timers[st].popDue(now, func(t *evTimer) bool { // else the stage moved on
			return !t.pr.done && t.pr.stage == uint8(st) && t.pr.adm.gen == t.gen
		}, l.due)
		if !next.IsZero() && next.Before(bound) {
			bound = next
		}
	}
	if next := l.loopResumeAccepts(now); !next.IsZero() && next.Before(bound) {
		bound = next
	}
	if next := l.loopDueFins(now); !next.IsZero() && next.Before(bound) {
		bound = next
	}
	if next := l.loopDueMoves(now); !next.IsZero() && next.Before(bound) {
		bound = next
	}
	if next := l.loopDueWaits(now); !next.IsZero() && next.Before(bound) {
		bound = next
	}
	l.mu.Unlock()
	l.loopRunFins()
	l.loopRunMoveDeadlines()
	l.loopRunWaitDeadlines()
	for i, t := range l.due {
		if !t.pr.done && t.pr.adm != nil && t.pr.adm.gen == t.gen {
			if t.pr.stage == evPreread {
				l.loopPrereadFailed(t.pr, os.ErrDeadlineExceeded)
			} else {
				l.loopDialFailed(t.pr, errors.New("dial timeout"))
			}
		}
		l.due[i] = evTimer{}
	}
	l.due = l.due[:0]
	if next := l.loopDueHolds(now); !next.IsZero() && next.Before(bound) {
		bound = next
	}
	l.poll.SetDeadline(now, bound)
}
