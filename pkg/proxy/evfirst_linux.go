//go:build linux

package proxy

import (
	"errors"
	"io"
	"time"
)

// Falling back on the loops (see firstbyte.go): a routed pair keeps its
// preread bytes (replay) until the first byte moves either way; if the
// backend resets or closes before that and within maxFirstByteWait, as on the
// goroutine path, the pair goes back to its dial stage and the next owner
// gets the same bytes.

// fallBack takes pr back to dialing its next owner if its backend went away
// (err, or EOF when nil) before any byte moved; false if it cannot.
func (l *evLoop) fallBack(pr *evPair, err error) bool {
	a := pr.replay
	if a == nil || pr.killed.Load() || pr.ended[0] || pr.n[0] != 0 || pr.n[1] != 0 ||
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
	l.p.untrackRouted(pr.pc)
	pr.pc = nil
	l.dialFailed(pr, errors.Join(errBackendGone, err))
	return true
}

// errBackendGone: the backend went away before its first byte.
var errBackendGone = errors.New("backend closed before its first byte")

// dropReplay lets go of the preread bytes kept for a fallback.
func (l *evLoop) dropReplay(pr *evPair) {
	if a := pr.replay; a != nil {
		l.p.putBuf(a.bp, a.buf)
		pr.replay = nil
	}
}
