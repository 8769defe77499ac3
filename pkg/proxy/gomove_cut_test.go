package proxy

import (
	"strings"
	"testing"

	"github.com/devgate/devgate/internal/testkit"
)

// The cut of a move on the goroutine path when a frame is under way in
// either direction.

// The device is in the middle of a frame when the move begins: the old
// owner gets the whole frame (and answers it) before it is half-closed;
// the next frame goes to the new owner.
func TestGoMoveCutMidFrame(t *testing.T) {
	goMovePaths(t, func(t *testing.T, tlsOn bool) {
		checkNoLeak(t)
		b1 := newMoveBackend(t, "b1", true, nil)
		b2 := newMoveBackend(t, "b2", true, nil)
		e := newMoveEnv(t, tlsOn, []*moveBackend{b1, b2}, nil)
		d := e.connect(e.deviceOn("b1"), "b1")
		big := testkit.Frame(2, strings.Repeat("y", 2000))
		in := e.proxy.Stats().BytesIn
		d.conn.Write(big[:1000])
		waitFor(t, "the first half copied to b1", func() bool { return e.proxy.Stats().BytesIn == in+1000 })
		e.setRing(b2)
		e.proxy.Relocate("b1", 0, CauseDrain, nil)
		d.conn.Write(append(big[1000:], testkit.Frame(2, "next")...))
		if who, body := d.answer(2); who != "b1" || len(body) != 2000 {
			t.Fatalf("the big frame answered by %s (%d bytes)", who, len(body))
		}
		if who, body := d.answer(2); who != "b2" || body != "next" {
			t.Fatalf("the next frame answered by %s %q", who, body)
		}
		if e.rehomes(CauseDrain, MoveMoved) != 1 {
			t.Fatalf("rehomes %v", e.proxy.Stats().Rehomes)
		}
	})
}

// The old owner is in the middle of an answer when the move begins: the
// device gets the rest of it from the old owner, then the new owner's.
func TestGoMoveOldOwnerMidAnswer(t *testing.T) {
	goMovePaths(t, func(t *testing.T, tlsOn bool) {
		checkNoLeak(t)
		b1 := newMoveBackend(t, "b1", true, func(b *moveBackend) { b.split = true })
		b2 := newMoveBackend(t, "b2", true, nil)
		e := newMoveEnv(t, tlsOn, []*moveBackend{b1, b2}, nil)
		d := e.connect(e.deviceOn("b1"), "b1")
		d.send(2, "split")
		if _, err := d.r.Peek(8); err != nil { // the first part reached the device
			t.Fatal(err)
		}
		e.setRing(b2)
		e.proxy.Relocate("b1", 0, CauseDrain, nil)
		d.send(2, "next")
		if who, body := d.answer(2); who != "b1" || body != "split" {
			t.Fatalf("the split answer: %s %q", who, body)
		}
		if who, body := d.answer(2); who != "b2" || body != "next" {
			t.Fatalf("the next answer: %s %q", who, body)
		}
	})
}
