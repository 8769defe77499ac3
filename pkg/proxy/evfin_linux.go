//go:build linux

package proxy

import "time"

// FIN timeouts on the loops (see finwait.go): when direction d of a pair
// ends, a deadline goes into the loop's queue fins[d]; every deadline of a
// queue has the same length, so the queue is a FIFO like the preread and
// dial ones. When one falls, the pair is closed if no byte moved since it
// was queued, else queued again from now.

// armFin queues pr's FIN timeout after direction d ended.
func (l *evLoop) armFin(pr *evPair, d int) {
	q := &l.fins[d]
	if q.d <= 0 {
		return
	}
	l.mu.Lock()
	q.push(evTimer{at: time.Now().Add(q.d), pr: pr, mark: pr.n[0] + pr.n[1]})
	l.mu.Unlock()
}

// dueFins moves the FIN deadlines that fell to l.finDue and returns the
// earliest one still queued (zero if none). l.mu held.
func (l *evLoop) dueFins(now time.Time) (next time.Time) {
	for d := range l.fins {
		q := &l.fins[d]
		for q.head < len(q.q) {
			t := q.q[q.head]
			if !t.pr.done && t.at.After(now) {
				if next.IsZero() || t.at.Before(next) {
					next = t.at
				}
				break
			}
			if !t.pr.done {
				t.gen = uint32(d)
				l.finDue = append(l.finDue, t)
			}
			q.q[q.head] = evTimer{}
			q.head++
		}
		if q.head == len(q.q) {
			q.q, q.head = q.q[:0], 0
		}
	}
	return next
}

// runFins closes the pairs whose FIN deadline fell with nothing moved, and
// queues the others again.
func (l *evLoop) runFins() {
	for i, t := range l.finDue {
		pr, d := t.pr, int(t.gen)
		switch {
		case pr.done:
		case pr.n[0]+pr.n[1] != t.mark:
			l.armFin(pr, d)
		default:
			pr.pc.finTimedOut(d)
			l.finalize(pr)
		}
		l.finDue[i] = evTimer{}
	}
	l.finDue = l.finDue[:0]
}
