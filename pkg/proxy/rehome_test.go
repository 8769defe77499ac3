package proxy

import (
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// TestMoveOnDrain drains one of three backends while 30 devices send a
// heartbeat every 10 ms: the devices on it move to the owners the new ring
// gives, with no disconnect, every heartbeat answered once and in order,
// and every answer after the move from the new owner, which saw the login
// on that connection.
func TestMoveOnDrain(t *testing.T) {
	c := newMoveCluster(t, []string{"b1", "b2", "b3"}, nil)
	c.warm()
	fds := openFDs(t)
	devs := c.devices(30)
	stop := make(chan struct{})
	wg := beatAll(devs, 10*time.Millisecond, stop)
	time.Sleep(100 * time.Millisecond)

	onB1 := map[string]bool{}
	for _, d := range devs {
		if _, bs, _, _ := d.state(); bs[0] == "b1" {
			onB1[d.id] = true
		}
	}
	if len(onB1) == 0 {
		t.Fatal("no device on b1")
	}
	c.route("b2", "b3")
	var tally MoveTally
	if n := c.proxy.Relocate("b1", 0, CauseDrain, &tally); n != len(onB1) {
		t.Fatalf("Relocate began %d moves, want %d", n, len(onB1))
	}
	waitFor(t, "moves done", func() bool { return tally.Moved.Load()+tally.Evicted.Load() == int64(len(onB1)) })
	time.Sleep(100 * time.Millisecond) // heartbeats go on after the moves
	close(stop)
	wg.Wait()

	r := c.ring.Ring()
	for _, d := range devs {
		d.settle(t)
		answered, bs, problems, closed := d.state()
		if closed != nil || len(problems) > 0 || answered != d.sent.Load() {
			t.Errorf("%s: answered %d of %d, closed %v, problems %v", d.id, answered, d.sent.Load(), closed, problems)
		}
		want := []string{bs[0]}
		if onB1[d.id] {
			want = append(want, r.Backends()[r.Lookup([]byte(d.id))].ID)
		}
		if fmt.Sprint(bs) != fmt.Sprint(want) {
			t.Errorf("%s: answered by %v, want %v", d.id, bs, want)
		}
	}
	if got := tally.Moved.Load(); got != int64(len(onB1)) {
		t.Errorf("moved %d, want %d (evicted %d)", got, len(onB1), tally.Evicted.Load())
	}
	if got := c.rehomes(CauseDrain, MoveMoved); got != uint64(len(onB1)) {
		t.Errorf("rehome{drain,moved} = %d, want %d", got, len(onB1))
	}
	if got := c.proxy.Conns()["b1"]; got != 0 {
		t.Errorf("%d connections still filed under b1", got)
	}
	if s := c.proxy.Stats(); s.Moving != 0 || s.Proxied != 30 {
		t.Errorf("moving %d, proxied %d; want 0, 30", s.Moving, s.Proxied)
	}
	for _, d := range devs {
		d.conn.Close()
	}
	waitFor(t, "fds back", func() bool { return openFDs(t) <= fds })
}

// TestMoveFallsBackToEviction: each way a move cannot finish ends in the
// eviction of today, counted by its reason, with nothing left open.
func TestMoveFallsBackToEviction(t *testing.T) {
	cases := []struct {
		name      string
		configure func(*Proxy)
		setup     func(c *moveCluster)                            // before the move
		during    func(t *testing.T, c *moveCluster, d *hbDevice) // just after it began
		want      MoveResult
	}{
		{name: "new owner does not opt in", want: MoveNoOptIn,
			setup: func(c *moveCluster) { c.backends["b2"].optOut = true }},
		{name: "new owner refuses", want: MoveDialFailed,
			setup: func(c *moveCluster) { c.backends["b2"].l.Close() }},
		{name: "old owner never closes", want: MoveOldOwnerOpen,
			configure: func(p *Proxy) { p.Rehome.DrainGrace = 200 * time.Millisecond },
			setup:     func(c *moveCluster) { c.backends["b1"].neverClose.Store(true) }},
		{name: "device frame over MaxBuffered", want: MoveBufferFull,
			configure: func(p *Proxy) { p.Rehome.MaxBuffered = 100; p.Rehome.DrainGrace = 2 * time.Second },
			setup:     func(c *moveCluster) { c.backends["b1"].neverClose.Store(true) },
			during: func(t *testing.T, c *moveCluster, d *hbDevice) {
				time.Sleep(200 * time.Millisecond) // the move waits DrainGrace for b1 by then
				d.conn.Write(mkframe(2, `{"pad":"`+strings.Repeat("x", 200)+`"}`))
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newMoveCluster(t, []string{"b1", "b2"}, tc.configure)
			c.route("b1")
			c.warm()
			fds := openFDs(t)
			d := dialHBDevice(t, c.addr, "dev-x")
			if tc.setup != nil {
				tc.setup(c)
			}
			c.route("b2")
			var tally MoveTally
			if n := c.proxy.Relocate("b1", 0, CauseDrain, &tally); n != 1 {
				t.Fatalf("Relocate = %d, want 1", n)
			}
			if tc.during != nil {
				tc.during(t, c, d)
			}
			<-d.readDone // the device sees its connection closed
			if _, _, _, closed := d.state(); closed != io.EOF {
				t.Errorf("device connection ended with %v, want EOF", closed)
			}
			waitFor(t, "counted as "+string(tc.want)+" and closed as evicted_drain", func() bool {
				return c.rehomes(CauseDrain, tc.want) == 1 && c.proxy.Stats().Closed[Evicted(CauseDrain)] == 1
			})
			if tally.Evicted.Load() != 1 || c.proxy.Moving() != 0 {
				t.Errorf("tally evicted %d, moving %d; want 1, 0", tally.Evicted.Load(), c.proxy.Moving())
			}
			d.conn.Close()
			c.backends["b1"].kill()
			waitFor(t, "fds back", func() bool { return openFDs(t) <= fds })
		})
	}
}

// TestMoveOnBackendLoss kills a backend: its devices move to their next
// owners (one check for all of them), and a backend that is alive and
// closes one device on purpose closes that device.
func TestMoveOnBackendLoss(t *testing.T) {
	c := newMoveCluster(t, []string{"b1", "b2", "b3"}, nil)
	devs := c.devices(30)
	stop := make(chan struct{})
	wg := beatAll(devs, 10*time.Millisecond, stop)
	time.Sleep(100 * time.Millisecond)

	var onB1, onB2 []*hbDevice
	for _, d := range devs {
		switch _, bs, _, _ := d.state(); bs[0] {
		case "b1":
			onB1 = append(onB1, d)
		case "b2":
			onB2 = append(onB2, d)
		}
	}
	if len(onB1) == 0 || len(onB2) == 0 {
		t.Fatalf("devices on b1: %d, on b2: %d", len(onB1), len(onB2))
	}
	// On purpose: b2 closes one device and stays up.
	if !c.backends["b2"].closeDevice(onB2[0].id) {
		t.Fatal("b2 does not hold", onB2[0].id)
	}
	<-onB2[0].readDone
	c.backends["b1"].kill() // a crash: b1 stays on the ring
	waitFor(t, "moved", func() bool { return c.rehomes(CauseBackendLost, MoveMoved) == uint64(len(onB1)) })
	time.Sleep(100 * time.Millisecond)
	close(stop)
	wg.Wait()

	for _, d := range devs {
		d.settle(t)
		answered, bs, problems, closed := d.state()
		if d == onB2[0] {
			if closed != io.EOF {
				t.Errorf("%s: closed by its backend on purpose, the device saw %v", d.id, closed)
			}
			continue
		}
		if closed != nil || len(problems) > 0 {
			t.Errorf("%s: closed %v, problems %v", d.id, closed, problems)
		}
		// Only heartbeats in flight at the kill may go unanswered.
		if lost := d.sent.Load() - answered; lost > 3 || (bs[0] != "b1" && lost != 0) {
			t.Errorf("%s: %d of %d heartbeats unanswered", d.id, lost, d.sent.Load())
		}
		if bs[0] == "b1" && (len(bs) != 2 || bs[1] == "b1") {
			t.Errorf("%s: answered by %v, want b1 then its next owner", d.id, bs)
		}
	}
	s := c.proxy.Stats()
	if s.Closed[ReasonBackendClosed] != 1 {
		t.Errorf("backend_closed: %d, want 1 (the device closed on purpose)", s.Closed[ReasonBackendClosed])
	}
	if s.Moving != 0 {
		t.Errorf("moving: %d", s.Moving)
	}
}

// A lost backend's check: refused, or a connection reset at once (a
// process being killed, its listener not closed yet) is gone; a
// connection that stays open is alive.
func TestProbeBackend(t *testing.T) {
	p := &Proxy{DialTimeout: time.Second}
	refused, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refusedAddr := refused.Addr().String()
	refused.Close()
	if err := p.probeBackend(refusedAddr); err == nil {
		t.Error("refused: alive")
	}
	for _, tc := range []struct {
		name  string
		reset bool
	}{{"reset at once", true}, {"held open", false}} {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			c, err := l.Accept()
			if err != nil {
				return
			}
			if tc.reset {
				c.(*net.TCPConn).SetLinger(0)
			} else {
				time.Sleep(2 * lostProbeSettle)
			}
			c.Close()
		}()
		err = p.probeBackend(l.Addr().String())
		if gone := err != nil; gone != tc.reset {
			t.Errorf("%s: probe says %v", tc.name, err)
		}
		<-done
		l.Close()
	}
}
