package proxy

import (
	"errors"
	"net"
	"testing"
	"time"
)

// A drained replica stops accepting but keeps serving what it holds, and
// resumes on the same address: Serve must neither return nor lose its place.
func TestStopAndResumeAccepting(t *testing.T) {
	for _, ev := range []bool{false, true} {
		name := map[bool]string{false: "goroutines", true: "event_loop"}[ev]
		t.Run(name, func(t *testing.T) {
			c := newCluster(t, 2, func(p *Proxy) { p.Goroutines = !ev })
			held, _ := c.connect("dev-held")
			defer held.Close()
			for round := range 2 { // twice: the second stop must close the reopened listener
				c.proxy.StopAccepting()
				if !c.proxy.Draining() {
					t.Fatal("Draining false after StopAccepting")
				}
				waitFor(t, "dials refused", func() bool {
					conn, err := net.DialTimeout("tcp", c.addr, time.Second)
					if err == nil {
						conn.Close()
					}
					return err != nil
				})
				select {
				case err := <-c.done:
					t.Fatalf("round %d: Serve returned %v on StopAccepting", round, err)
				case <-time.After(100 * time.Millisecond):
				}
				// What it holds stays open and proxied.
				if n := c.proxy.Proxied(); n != 1 {
					t.Fatalf("round %d: %d proxied while stopped, want 1", round, n)
				}
				if err := c.proxy.ResumeAccepting(t.Context()); err != nil {
					t.Fatalf("round %d: ResumeAccepting: %v", round, err)
				}
				if c.proxy.Draining() {
					t.Fatal("Draining true after ResumeAccepting")
				}
				conn, _ := c.connect("dev-new") // accepted and routed on the same address
				conn.Close()
			}
			if err := c.proxy.ResumeAccepting(t.Context()); err != nil {
				t.Fatalf("ResumeAccepting while accepting: %v", err)
			}
			// Stopped, then shut down: the waiting Serve returns.
			c.proxy.StopAccepting()
			c.proxy.Close()
			if err := c.proxy.ResumeAccepting(t.Context()); !errors.Is(err, ErrServerClosed) {
				t.Fatalf("ResumeAccepting after Close: %v", err)
			}
		})
	}
}

// When the address is taken meanwhile, ResumeAccepting says so and the
// proxy stays stopped; it resumes once the address is free.
func TestResumeAcceptingAddressTaken(t *testing.T) {
	bothPaths(t, func(t *testing.T) {
		c := newCluster(t, 1, nil)
		c.proxy.StopAccepting()
		var squat net.Listener
		waitFor(t, "the address free to take", func() bool {
			var err error
			squat, err = net.Listen("tcp", c.addr)
			return err == nil
		})
		err := c.proxy.ResumeAccepting(t.Context())
		if err == nil || !c.proxy.Draining() {
			t.Fatalf("ResumeAccepting on a taken address: %v, draining %v", err, c.proxy.Draining())
		}
		t.Logf("error: %v", err)
		squat.Close()
		if err := c.proxy.ResumeAccepting(t.Context()); err != nil {
			t.Fatal(err)
		}
		conn, _ := c.connect("dev-1")
		conn.Close()
	})
}

// A Serve that starts while accepting is stopped (a drain that came before
// the listener) waits, and serves once resumed.
func TestServeStartedWhileStopped(t *testing.T) {
	bothPaths(t, func(t *testing.T) {
		c := newCluster(t, 1, nil)
		c.proxy.StopAccepting()
		l, err := c.proxy.Listen(t.Context(), "tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		done := make(chan error, 1)
		go func() { done <- c.proxy.Serve(l) }()
		waitFor(t, "dials refused", func() bool {
			conn, err := net.DialTimeout("tcp", addr, time.Second)
			if err == nil {
				conn.Close()
			}
			return err != nil
		})
		if err := c.proxy.ResumeAccepting(t.Context()); err != nil {
			t.Fatal(err)
		}
		c.addr = addr
		conn, _ := c.connect("dev-1")
		conn.Close()
		c.proxy.Close()
		if err := <-done; !errors.Is(err, ErrServerClosed) {
			t.Fatalf("Serve: %v", err)
		}
	})
}
