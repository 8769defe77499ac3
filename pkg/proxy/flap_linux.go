//go:build linux

package proxy

import "time"

// Holding a flapping device on its loop (flap.go): the pair waits in the
// dial stage with no backend socket, so the loop watches only its device
// (a hang-up ends it as client_gone), and a FIFO queue of the loop (every
// hold lasts Flap.Delay) releases it.

// evHold is a held pair's release.
type evHold struct {
	at     time.Time
	pr     *evPair
	gen    uint32
	refuse bool
}

// evHolds is a loop's queue of holds; only the loop touches it.
type evHolds struct {
	q    []evHold
	head int
	due  []evHold
}

// loopHold holds pr if its device flaps; false to route it now.
func (l *evLoop) loopHold(pr *evPair) bool {
	v := l.p.flapCheck(pr.adm.device)
	if v == flapPass {
		return false
	}
	l.p.flapHeld()
	a := pr.adm
	a.gen++ // the preread deadline no longer applies
	pr.stage = evDial
	h := &l.holds
	if h.head > 64 && h.head > len(h.q)/2 {
		n := copy(h.q, h.q[h.head:])
		clear(h.q[n:])
		h.q, h.head = h.q[:n], 0
	}
	h.q = append(h.q, evHold{at: time.Now().Add(l.p.flapDelay()), pr: pr, gen: a.gen, refuse: v == flapRefuse})
	return true
}

// loopDueHolds releases the holds that ended and returns the next end (zero
// if none).
func (l *evLoop) loopDueHolds(now time.Time) time.Time {
	h := &l.holds
	for h.head < len(h.q) && !h.q[h.head].at.After(now) {
		h.due = append(h.due, h.q[h.head])
		h.q[h.head] = evHold{}
		h.head++
	}
	if h.head == len(h.q) {
		h.q, h.head = h.q[:0], 0
	}
	for i, t := range h.due {
		h.due[i] = evHold{}
		pr := t.pr
		if pr.done || pr.adm == nil || pr.adm.gen != t.gen {
			l.p.flaps.holding.Add(-1) // closed while held (the device left, or shutdown)
			continue
		}
		v := flapHold
		if t.refuse {
			v = flapRefuse
		}
		reason := l.p.flapRelease(v)
		if reason == "" && l.p.isClosing() { // no dial for a connection Shutdown would cut
			reason = ReasonShutdown
		}
		if reason != "" {
			l.loopClose(pr, reason, nil)
			continue
		}
		l.loopLookup(pr, []byte(pr.adm.device))
	}
	h.due = h.due[:0]
	if h.head < len(h.q) {
		return h.q[h.head].at
	}
	return time.Time{}
}
