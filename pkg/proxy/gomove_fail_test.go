package proxy

import (
	"testing"
	"time"
)

// Moves on the goroutine path that end in the eviction of today, or are
// cut short by the gateway's shutdown.

// A new owner that never answers the replayed login: evicted_timeout
// within Rehome.Timeout.
func TestGoMoveTimeout(t *testing.T) {
	goMovePaths(t, func(t *testing.T, tlsOn bool) {
		checkNoLeak(t)
		b1 := newMoveBackend(t, "b1", true, nil)
		b2 := newMoveBackend(t, "b2", true, func(b *moveBackend) { b.mute = true })
		e := newMoveEnv(t, tlsOn, []*moveBackend{b1, b2}, func(p *Proxy) { p.Rehome.Timeout = 300 * time.Millisecond })
		d := e.connect(e.deviceOn("b1"), "b1")
		e.setRing(b2)
		e.proxy.Relocate("b1", 0, CauseDrain, nil)
		if !d.closed() {
			t.Fatal("the device was not closed")
		}
		waitFor(t, "evicted_timeout", func() bool { return e.rehomes(CauseDrain, MoveTimeout) == 1 })
		waitFor(t, "closed", func() bool { return e.proxy.Stats().Closed[Evicted(CauseDrain)] == 1 })
		if got := b2.logins(); len(got) != 1 {
			t.Fatalf("b2 saw logins %v", got)
		}
	})
}

// The old owner closes with half a frame sent to the device: the move
// cannot finish that frame, so the device is evicted
// (evicted_partial_frame) rather than sent the new owner's bytes after it.
func TestGoMovePartialFrame(t *testing.T) {
	goMovePaths(t, func(t *testing.T, tlsOn bool) {
		checkNoLeak(t)
		b1 := newMoveBackend(t, "b1", true, func(b *moveBackend) { b.partial = true })
		b2 := newMoveBackend(t, "b2", true, nil)
		e := newMoveEnv(t, tlsOn, []*moveBackend{b1, b2}, nil)
		d := e.connect(e.deviceOn("b1"), "b1")
		d.send(2, "partial")
		d.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := d.r.Peek(8); err != nil { // the half frame reached the device
			t.Fatal(err)
		}
		e.setRing(b2)
		e.proxy.Relocate("b1", 0, CauseDrain, nil)
		waitFor(t, "evicted_partial_frame", func() bool { return e.rehomes(CauseDrain, MovePartialFrame) == 1 })
		d.r.Discard(8)
		if !d.closed() {
			t.Fatal("the device was not closed")
		}
		if len(b2.logins()) != 0 {
			t.Fatalf("b2 saw logins %v", b2.logins())
		}
	})
}

// Shutdown in the middle of a move: the move ends as closed, nothing is
// left moving, and no goroutine or fd stays.
func TestGoMoveShutdown(t *testing.T) {
	goMovePaths(t, func(t *testing.T, tlsOn bool) {
		checkNoLeak(t)
		b1 := newMoveBackend(t, "b1", true, func(b *moveBackend) { b.holdOpen = true })
		b2 := newMoveBackend(t, "b2", true, nil)
		e := newMoveEnv(t, tlsOn, []*moveBackend{b1, b2}, func(p *Proxy) {
			p.Rehome.DrainGrace = 10 * time.Second
			p.Rehome.Timeout = 10 * time.Second
		})
		d := e.connect(e.deviceOn("b1"), "b1")
		e.setRing(b2)
		var tally MoveTally
		e.proxy.Relocate("b1", 0, CauseDrain, &tally)
		if e.proxy.Moving() != 1 {
			t.Fatalf("moving %d", e.proxy.Moving())
		}
		e.proxy.Close()
		if !d.closed() {
			t.Fatal("the device was not closed")
		}
		if s := e.proxy.Stats(); s.Moving != 0 || s.Rehomes[MoveKey{CauseDrain, MoveClosed}] != 1 || tally.Gone.Load() != 1 {
			t.Fatalf("stats %+v tally gone %d", s, tally.Gone.Load())
		}
	})
}
