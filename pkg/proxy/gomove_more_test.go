package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/devgate/devgate/internal/testkit"
)

// More moves on the goroutine path, and the copy of a movable connection
// when nothing moves (half-close, FIN and idle timeouts as pipe has them).

// A new owner that refuses the dial: evicted_dial_failed.
func TestGoMoveDialFailed(t *testing.T) {
	goMovePaths(t, func(t *testing.T, tlsOn bool) {
		checkNoLeak(t)
		b1 := newMoveBackend(t, "b1", true, nil)
		b2 := newMoveBackend(t, "b2", true, nil)
		e := newMoveEnv(t, tlsOn, []*moveBackend{b1, b2}, nil)
		d := e.connect(e.deviceOn("b1"), "b1")
		b2.kill()
		e.setRing(b2)
		e.proxy.Relocate("b1", 0, CauseDrain, nil)
		if !d.closed() {
			t.Fatal("the device was not closed")
		}
		waitFor(t, "evicted_dial_failed", func() bool { return e.rehomes(CauseDrain, MoveDialFailed) == 1 })
		waitFor(t, "closed", func() bool { return e.proxy.Stats().Closed[Evicted(CauseDrain)] == 1 })
	})
}

// Rebalance after a backend joined: a misplaced device moves to it; with
// KeepReply the new owner's answer to the replayed login reaches the device.
func TestGoMoveRebalance(t *testing.T) {
	goMovePaths(t, func(t *testing.T, tlsOn bool) {
		for _, keep := range []bool{false, true} {
			t.Run(fmt.Sprintf("keepReply=%v", keep), func(t *testing.T) {
				checkNoLeak(t)
				b1 := newMoveBackend(t, "b1", true, nil)
				b2 := newMoveBackend(t, "b2", true, nil)
				e := newMoveEnv(t, tlsOn, []*moveBackend{b1, b2}, func(p *Proxy) { p.Rehome.KeepReply = keep })
				dev := e.deviceOn("b2")
				e.setRing(b1) // b2 not yet joined
				d := e.connect(dev, "b1")
				e.setRing(b1, b2)
				if n := e.proxy.CountMisplaced(); n != 1 {
					t.Fatalf("%d misplaced", n)
				}
				e.proxy.RelocateMisplaced(0, CauseRebalance, nil)
				waitFor(t, "moved", func() bool { return e.rehomes(CauseRebalance, MoveMoved) == 1 })
				if keep {
					if who, _ := d.answer(1); who != "b2" {
						t.Fatalf("the login answer came from %s", who)
					}
				}
				d.send(2, "hb")
				if who, body := d.answer(2); who != "b2" || body != "hb" {
					t.Fatalf("after the move: %s %q", who, body)
				}
				if e.proxy.CountMisplaced() != 0 {
					t.Fatal("still misplaced")
				}
			})
		}
	})
}

// Many devices heartbeating while their backend is drained: each is
// answered once and in order, and moves once.
func TestGoMoveManyDevices(t *testing.T) {
	goMovePaths(t, func(t *testing.T, tlsOn bool) {
		checkNoLeak(t)
		b1 := newMoveBackend(t, "b1", true, nil)
		b2 := newMoveBackend(t, "b2", true, nil)
		b3 := newMoveBackend(t, "b3", true, nil)
		e := newMoveEnv(t, tlsOn, []*moveBackend{b1, b2, b3}, nil)
		const devices, beats = 30, 40
		var ds []*moveDevice
		for i := 0; len(ds) < devices; i++ {
			dev := fmt.Sprintf("dev-%d", i)
			if r := e.ring.Ring(); r.Backends()[r.Lookup([]byte(dev))].ID == "b1" {
				ds = append(ds, e.connect(dev, "b1"))
			}
		}
		var wg sync.WaitGroup
		errs := make(chan error, devices)
		halfway := make(chan struct{}, devices)
		for _, d := range ds {
			wg.Add(1)
			go func() {
				defer wg.Done()
				last := "b1"
				for i := 1; i <= beats; i++ {
					if i == beats/2 {
						halfway <- struct{}{}
					}
					d.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
					if _, err := d.conn.Write(testkit.Frame(2, fmt.Sprintf("hb-%d", i))); err != nil {
						errs <- fmt.Errorf("%s: write %d: %w", d.id, i, err)
						return
					}
					who, body, err := d.tryAnswer(2)
					if err == nil && body != fmt.Sprintf("hb-%d", i) {
						err = fmt.Errorf("answer %q, want hb-%d", body, i)
					}
					if err == nil && who != last && !(last == "b1" && who != "b1") {
						err = fmt.Errorf("answer %d from %s after %s", i, who, last)
					}
					if err != nil {
						errs <- fmt.Errorf("%s: %w", d.id, err)
						return
					}
					last = who
					time.Sleep(2 * time.Millisecond)
				}
				if last == "b1" {
					errs <- fmt.Errorf("%s: never moved", d.id)
				}
			}()
		}
		for range ds {
			<-halfway
		}
		e.setRing(b2, b3)
		var tally MoveTally
		e.proxy.Relocate("b1", 0, CauseDrain, &tally)
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		waitFor(t, "all moved", func() bool { return tally.Moved.Load() == devices })
		if s := e.proxy.Stats(); s.Proxied != devices || len(s.Closed) != 0 || s.Moving != 0 {
			t.Fatalf("stats %+v", s)
		}
		if n := len(b2.logins()) + len(b3.logins()); n != devices {
			t.Fatalf("%d logins on the new owners", n)
		}
	})
}

// closeWrite half-closes the device's side.
func (d *moveDevice) closeWrite() {
	d.t.Helper()
	var err error
	switch c := d.conn.(type) {
	case *tls.Conn:
		err = c.CloseWrite()
	case *net.TCPConn:
		err = c.CloseWrite()
	}
	if err != nil {
		d.t.Fatal(err)
	}
}

// With nothing moving, a movable connection honours half-close both ways,
// the FIN timeout and the idle timeout, as pipe does.
func TestGoMoveCopyEnds(t *testing.T) {
	goMovePaths(t, func(t *testing.T, tlsOn bool) {
		t.Run("device half-close", func(t *testing.T) {
			checkNoLeak(t)
			b1 := newMoveBackend(t, "b1", true, nil)
			e := newMoveEnv(t, tlsOn, []*moveBackend{b1}, nil)
			d := e.connect("dev-1", "b1")
			d.send(2, "last")
			d.closeWrite()
			if who, body := d.answer(2); who != "b1" || body != "last" {
				t.Fatalf("%s %q", who, body)
			}
			if !d.closed() {
				t.Fatal("not closed after the backend closed")
			}
			waitFor(t, "client_closed", func() bool { return e.proxy.Stats().Closed[ReasonClientClosed] == 1 })
		})
		t.Run("client fin timeout", func(t *testing.T) {
			checkNoLeak(t)
			b1 := newMoveBackend(t, "b1", true, func(b *moveBackend) { b.holdOpen = true })
			e := newMoveEnv(t, tlsOn, []*moveBackend{b1}, func(p *Proxy) { p.ClientFinTimeout = 200 * time.Millisecond })
			d := e.connect("dev-1", "b1")
			d.closeWrite()
			if !d.closed() {
				t.Fatal("not closed")
			}
			waitFor(t, "client_fin_timeout", func() bool { return e.proxy.Stats().Closed[ReasonClientFinTimeout] == 1 })
		})
		t.Run("idle timeout", func(t *testing.T) {
			checkNoLeak(t)
			b1 := newMoveBackend(t, "b1", true, nil)
			e := newMoveEnv(t, tlsOn, []*moveBackend{b1}, func(p *Proxy) { p.IdleTimeout = 300 * time.Millisecond })
			d := e.connect("dev-1", "b1")
			for i := 0; i < 5; i++ { // busy for longer than the timeout: not idle
				time.Sleep(100 * time.Millisecond)
				d.send(2, "hb")
				d.answer(2)
			}
			if !d.closed() {
				t.Fatal("not closed when idle")
			}
			waitFor(t, "idle_timeout", func() bool { return e.proxy.Stats().Closed[ReasonIdleTimeout] == 1 })
			if len(e.proxy.Stats().Rehomes) != 0 {
				t.Fatal("something moved")
			}
		})
	})
}

// A device behind a trusted balancer's PROXY header moves to a new owner
// that asks for a PROXY v2 header: the header carries the device's address.
func TestGoMoveProxyHeader(t *testing.T) {
	goMovePaths(t, func(t *testing.T, tlsOn bool) {
		checkNoLeak(t)
		b1 := newMoveBackend(t, "b1", true, nil)
		b2 := newMoveBackend(t, "b2", true, func(b *moveBackend) { b.proxyV2 = true })
		e := newMoveEnv(t, tlsOn, []*moveBackend{b1, b2}, func(p *Proxy) {
			p.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
		})
		e.hdr = "PROXY TCP4 203.0.113.7 127.0.0.1 4242 9000\r\n"
		d := e.connect(e.deviceOn("b1"), "b1")
		e.setRing(b2)
		e.proxy.Relocate("b1", 0, CauseDrain, nil)
		waitFor(t, "moved", func() bool { return e.rehomes(CauseDrain, MoveMoved) == 1 })
		d.send(2, "hb")
		if who, _ := d.answer(2); who != "b2" {
			t.Fatalf("answered by %s", who)
		}
		if got := b2.sources(); len(got) != 1 || got[0] != "203.0.113.7:4242" {
			t.Fatalf("b2 got PROXY sources %v", got)
		}
	})
}

// Backends reached over TLS (BackendTLS, which copies with goroutines): the
// cut half-closes the old owner with a close_notify, and the new owner is
// dialled over TLS.
func TestGoMoveBackendTLS(t *testing.T) {
	cert := testkit.Issue(t, nil, "backend", nil, net.IPv4(127, 0, 0, 1))
	pool := x509.NewCertPool()
	pool.AddCert(cert.TLS.Leaf)
	withTLS := func(b *moveBackend) { b.tlsCert = &cert.TLS }
	checkNoLeak(t)
	b1 := newMoveBackend(t, "b1", true, withTLS)
	b2 := newMoveBackend(t, "b2", true, withTLS)
	e := newMoveEnv(t, false, []*moveBackend{b1, b2}, func(p *Proxy) {
		p.Goroutines = false // BackendTLS alone takes the goroutine path
		p.BackendTLS = &tls.Config{RootCAs: pool}
	})
	dev := e.deviceOn("b1")
	d := e.connect(dev, "b1")
	d.send(2, "before")
	d.answer(2)
	e.setRing(b2)
	e.proxy.Relocate("b1", 0, CauseDrain, nil)
	waitFor(t, "moved", func() bool { return e.rehomes(CauseDrain, MoveMoved) == 1 })
	d.send(2, "after")
	if who, body := d.answer(2); who != "b2" || body != "after" {
		t.Fatalf("after the move: %s %q", who, body)
	}
	if got := b2.logins(); len(got) != 1 || got[0] != dev {
		t.Fatalf("b2 saw logins %v", got)
	}
}
