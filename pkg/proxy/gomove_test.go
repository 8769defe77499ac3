package proxy

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/devgate/devgate/internal/testkit"
)

// Moves of live devices on the goroutine path: TLS devices and
// Proxy.Goroutines (goroutine_move.go).

// rehomes is how many moves of cause ended in r.
func (e *moveEnv) rehomes(cause Cause, r MoveResult) uint64 {
	return e.proxy.Stats().Rehomes[MoveKey{cause, r}]
}

// checkNoLeak checks, once the test's cleanups ran, that the process has
// the descriptors it had before.
func checkNoLeak(t *testing.T) {
	fds := openFDs(t)
	t.Cleanup(func() {
		testkit.WaitFor(t, 5*time.Second, 10*time.Millisecond, "no fd left", func() bool { return openFDs(t) <= fds })
	})
}

// A device logged in on b1 sends numbered heartbeats while b1 is drained:
// it moves to b2 with no disconnect, every heartbeat is answered once and
// in order, the answers come from b1 and then from b2 only, and b2 saw the
// device's login.
func TestGoMoveDrain(t *testing.T) {
	goMovePaths(t, func(t *testing.T, tlsOn bool) {
		checkNoLeak(t)
		b1 := newMoveBackend(t, "b1", true, nil)
		b2 := newMoveBackend(t, "b2", true, nil)
		e := newMoveEnv(t, tlsOn, []*moveBackend{b1, b2}, nil)
		dev := e.deviceOn("b1")
		d := e.connect(dev, "b1")

		const n, moveAt = 300, 60
		werr := make(chan error, 1)
		go func() { // heartbeats go on through the move, not waiting for answers
			for i := 1; i <= n; i++ {
				if _, err := d.conn.Write(testkit.Frame(2, fmt.Sprintf("hb-%d", i))); err != nil {
					werr <- err
					return
				}
				time.Sleep(time.Millisecond)
			}
			werr <- nil
		}()
		var tally MoveTally
		var from []string
		for i := 1; i <= n; i++ {
			who, body := d.answer(2)
			if want := fmt.Sprintf("hb-%d", i); body != want {
				t.Fatalf("answer %d is to %q, want %q (answers so far from %v)", i, body, want, from)
			}
			from = append(from, who)
			if i == moveAt {
				e.setRing(b2) // b1 drained: out of the ring
				if got := e.proxy.Relocate("b1", 0, CauseDrain, &tally); got != 1 {
					t.Fatalf("Relocate began %d moves, want 1", got)
				}
			}
		}
		if err := <-werr; err != nil {
			t.Fatalf("device write: %v", err)
		}
		switched := strings.Index(strings.Join(from, ","), "b2")
		if switched < 0 || strings.Contains(strings.Join(from, ",")[switched:], "b1") {
			t.Fatalf("answers from %v: want b1 then b2 only", from)
		}
		waitFor(t, "the move counted", func() bool { return tally.Moved.Load() == 1 })
		if got := b2.logins(); len(got) != 1 || got[0] != dev {
			t.Fatalf("b2 saw logins %v, want [%s]", got, dev)
		}
		if s := e.proxy.Stats(); e.rehomes(CauseDrain, MoveMoved) != 1 || s.Moving != 0 || s.Proxied != 1 ||
			e.proxy.Conns()["b2"] != 1 || len(s.Closed) != 0 {
			t.Fatalf("stats %+v conns %v", s, e.proxy.Conns())
		}
		// Still on b2 after the move, and movable again.
		d.send(2, "after")
		if who, body := d.answer(2); who != "b2" || body != "after" {
			t.Fatalf("after the move: %s %q", who, body)
		}
	})
}

// A new owner that does not take moved devices: the device is evicted as
// without rehome, counted evicted_no_optin.
func TestGoMoveNoOptIn(t *testing.T) {
	goMovePaths(t, func(t *testing.T, tlsOn bool) {
		checkNoLeak(t)
		b1 := newMoveBackend(t, "b1", true, nil)
		b2 := newMoveBackend(t, "b2", false, nil)
		e := newMoveEnv(t, tlsOn, []*moveBackend{b1, b2}, nil)
		d := e.connect(e.deviceOn("b1"), "b1")
		e.setRing(b2)
		var tally MoveTally
		e.proxy.Relocate("b1", 0, CauseDrain, &tally)
		if !d.closed() {
			t.Fatal("the device was not closed")
		}
		waitFor(t, "eviction counted", func() bool {
			s := e.proxy.Stats()
			return s.Closed[Evicted(CauseDrain)] == 1 && s.Proxied == 0
		})
		if e.rehomes(CauseDrain, MoveNoOptIn) != 1 || tally.Evicted.Load() != 1 || len(b2.logins()) != 0 {
			t.Fatalf("rehomes %v tally evicted %d, b2 logins %v", e.proxy.Stats().Rehomes, tally.Evicted.Load(), b2.logins())
		}
	})
}

// A backend killed (listener and connections closed) is gone: its devices
// move to their next owner, which saw their login, with no disconnect.
func TestGoMoveBackendLost(t *testing.T) {
	goMovePaths(t, func(t *testing.T, tlsOn bool) {
		checkNoLeak(t)
		b1 := newMoveBackend(t, "b1", true, nil)
		b2 := newMoveBackend(t, "b2", true, nil)
		e := newMoveEnv(t, tlsOn, []*moveBackend{b1, b2}, nil)
		var devs []*moveDevice
		for i := 0; len(devs) < 3; i++ {
			dev := fmt.Sprintf("dev-%d", i)
			if r := e.ring.Ring(); r.Backends()[r.Lookup([]byte(dev))].ID == "b1" {
				d := e.connect(dev, "b1")
				d.send(2, "before")
				d.answer(2)
				devs = append(devs, d)
			}
		}
		b1.kill() // still in the ring: the check's dial finds it gone
		waitFor(t, "3 moves", func() bool { return e.rehomes(CauseBackendLost, MoveMoved) == 3 })
		for _, d := range devs {
			d.send(2, "after")
			if who, body := d.answer(2); who != "b2" || body != "after" {
				t.Fatalf("%s after the loss: %s %q", d.id, who, body)
			}
		}
		if got := b2.logins(); len(got) != 3 {
			t.Fatalf("b2 saw logins %v", got)
		}
		if s := e.proxy.Stats(); s.Moving != 0 || s.Proxied != 3 || len(s.Closed) != 0 || e.proxy.Conns()["b2"] != 3 {
			t.Fatalf("stats %+v", s)
		}
	})
}

// A backend that is alive and closes one device's connection on purpose:
// the close reaches the device, and nothing moves.
func TestGoMoveBackendClosesOnPurpose(t *testing.T) {
	goMovePaths(t, func(t *testing.T, tlsOn bool) {
		checkNoLeak(t)
		b1 := newMoveBackend(t, "b1", true, nil)
		b2 := newMoveBackend(t, "b2", true, nil)
		e := newMoveEnv(t, tlsOn, []*moveBackend{b1, b2}, nil)
		dev := e.deviceOn("b1")
		d := e.connect(dev, "b1")
		if !b1.closeDevice(dev) {
			t.Fatal("b1 has no connection of the device")
		}
		if !d.closed() {
			t.Fatal("the device did not see the close")
		}
		d.conn.Close()
		waitFor(t, "backend_closed counted", func() bool {
			s := e.proxy.Stats()
			return s.Closed[ReasonBackendClosed] == 1 && s.Proxied == 0
		})
		if s := e.proxy.Stats(); len(s.Rehomes) != 0 || s.Moving != 0 || len(b2.logins()) != 0 {
			t.Fatalf("something moved: %+v, b2 logins %v", s, b2.logins())
		}
	})
}

// A device frame larger than MaxBuffered mid-move: evicted_buffer_full.
func TestGoMoveBufferFull(t *testing.T) {
	goMovePaths(t, func(t *testing.T, tlsOn bool) {
		checkNoLeak(t)
		b1 := newMoveBackend(t, "b1", true, func(b *moveBackend) { b.holdOpen = true })
		b2 := newMoveBackend(t, "b2", true, nil)
		e := newMoveEnv(t, tlsOn, []*moveBackend{b1, b2}, func(p *Proxy) {
			p.Rehome.MaxBuffered = 256
			p.Rehome.DrainGrace = 5 * time.Second // the old owner keeps the move in its drain
			p.Rehome.Timeout = 10 * time.Second
		})
		d := e.connect(e.deviceOn("b1"), "b1")
		e.setRing(b2)
		e.proxy.Relocate("b1", 0, CauseDrain, nil)
		d.send(2, strings.Repeat("x", 1024))
		if !d.closed() {
			t.Fatal("the device was not closed")
		}
		waitFor(t, "evicted_buffer_full", func() bool { return e.rehomes(CauseDrain, MoveBufferFull) == 1 })
		waitFor(t, "closed", func() bool { return e.proxy.Stats().Closed[Evicted(CauseDrain)] == 1 })
		if len(b2.logins()) != 0 || e.proxy.Moving() != 0 {
			t.Fatalf("b2 logins %v, moving %d", b2.logins(), e.proxy.Moving())
		}
	})
}

// An old owner that never closes after its half-close:
// evicted_old_owner_open once DrainGrace passed.
func TestGoMoveOldOwnerOpen(t *testing.T) {
	goMovePaths(t, func(t *testing.T, tlsOn bool) {
		checkNoLeak(t)
		b1 := newMoveBackend(t, "b1", true, func(b *moveBackend) { b.holdOpen = true })
		b2 := newMoveBackend(t, "b2", true, nil)
		e := newMoveEnv(t, tlsOn, []*moveBackend{b1, b2}, func(p *Proxy) { p.Rehome.DrainGrace = 200 * time.Millisecond })
		d := e.connect(e.deviceOn("b1"), "b1")
		e.setRing(b2)
		e.proxy.Relocate("b1", 0, CauseDrain, nil)
		if !d.closed() {
			t.Fatal("the device was not closed")
		}
		waitFor(t, "evicted_old_owner_open", func() bool { return e.rehomes(CauseDrain, MoveOldOwnerOpen) == 1 })
		if len(b2.logins()) != 0 || e.proxy.Moving() != 0 {
			t.Fatalf("b2 logins %v, moving %d", b2.logins(), e.proxy.Moving())
		}
	})
}

// A backend lost while the device is in the middle of a frame: the rest of
// that frame goes to no backend (the lost one had its start), and the next
// frame reaches the new owner whole.
func TestGoMoveBackendLostMidFrame(t *testing.T) {
	goMovePaths(t, func(t *testing.T, tlsOn bool) {
		checkNoLeak(t)
		b1 := newMoveBackend(t, "b1", true, nil)
		b2 := newMoveBackend(t, "b2", true, nil)
		e := newMoveEnv(t, tlsOn, []*moveBackend{b1, b2}, nil)
		d := e.connect(e.deviceOn("b1"), "b1")
		half := testkit.Frame(2, "hb-1")
		in := e.proxy.Stats().BytesIn
		d.conn.Write(half[:8])
		waitFor(t, "the half frame copied to b1", func() bool { return e.proxy.Stats().BytesIn == in+8 })
		b1.kill()
		waitFor(t, "moved", func() bool { return e.rehomes(CauseBackendLost, MoveMoved) == 1 })
		d.conn.Write(append(half[8:], testkit.Frame(2, "hb-2")...))
		if who, body := d.answer(2); who != "b2" || body != "hb-2" {
			t.Fatalf("answered %s %q, want b2 hb-2", who, body)
		}
	})
}

// A backend killed while its device sends heartbeats without waiting for
// answers: the device stays connected, gets only whole frames, answers in
// order (only heartbeats in flight at the kill may go unanswered), first
// from b1, then from b2 only.
func TestGoMoveBackendKilledUnderLoad(t *testing.T) {
	goMovePaths(t, func(t *testing.T, tlsOn bool) {
		checkNoLeak(t)
		b1 := newMoveBackend(t, "b1", true, nil)
		b2 := newMoveBackend(t, "b2", true, nil)
		e := newMoveEnv(t, tlsOn, []*moveBackend{b1, b2}, nil)
		d := e.connect(e.deviceOn("b1"), "b1")
		const n, killAt = 300, 60
		werr := make(chan error, 1)
		go func() {
			for i := 1; i <= n; i++ {
				if _, err := d.conn.Write(testkit.Frame(2, fmt.Sprintf("hb-%d", i))); err != nil {
					werr <- err
					return
				}
				time.Sleep(time.Millisecond)
			}
			werr <- nil
		}()
		last, lost := 0, 0
		from := "b1"
		for last < n {
			who, body := d.answer(2)
			var seq int
			if _, err := fmt.Sscanf(body, "hb-%d", &seq); err != nil || seq <= last {
				t.Fatalf("answer %q after hb-%d", body, last)
			}
			if who != from && !(from == "b1" && who == "b2") {
				t.Fatalf("answer %q from %s after %s", body, who, from)
			}
			lost += seq - last - 1
			last, from = seq, who
			if seq == killAt {
				b1.kill()
			}
		}
		if err := <-werr; err != nil {
			t.Fatalf("device write: %v", err)
		}
		if from != "b2" || lost > n/2 {
			t.Fatalf("last answer from %s, %d heartbeats unanswered", from, lost)
		}
		t.Logf("%d heartbeats in flight at the kill went unanswered", lost)
		if e.rehomes(CauseBackendLost, MoveMoved) != 1 || e.proxy.Moving() != 0 {
			t.Fatalf("rehomes %v", e.proxy.Stats().Rehomes)
		}
	})
}
