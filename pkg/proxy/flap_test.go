package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

func backendsAccepted(c *cluster) (n uint64) {
	for _, b := range c.backends {
		n += b.Stats().Accepted
	}
	return n
}

// A device that logs in again and again is held, then refused; other
// devices logging in meanwhile are not held.
func TestFlappingDeviceHeldThenRefused(t *testing.T) {
	bothPaths(t, func(t *testing.T) {
		const delay = 400 * time.Millisecond
		c := newCluster(t, 2, func(p *Proxy) {
			p.Flap = Flap{Max: 3, Window: time.Minute, Delay: delay}
		})
		for i := range 3 { // within the limit: not held
			start := time.Now()
			conn, _ := c.connect("flappy")
			conn.Close()
			if d := time.Since(start); d >= delay {
				t.Fatalf("login %d within the limit took %v", i+1, d)
			}
		}

		// The 4th is held, then dialled; other devices meanwhile are not held.
		var wg sync.WaitGroup
		var others []time.Duration
		var mu sync.Mutex
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(delay / 4)
			for i := range 5 {
				start := time.Now()
				conn, err := net.Dial("tcp", c.addr)
				if err != nil {
					t.Error(err)
					return
				}
				conn.SetDeadline(time.Now().Add(5 * time.Second))
				conn.Write(login(fmt.Sprintf("calm-%d", i)))
				if _, _, err := readFrame(bufio.NewReader(conn)); err != nil {
					t.Errorf("calm-%d: %v", i, err)
				}
				conn.Close()
				mu.Lock()
				others = append(others, time.Since(start))
				mu.Unlock()
			}
		}()
		start := time.Now()
		conn, _ := c.connect("flappy")
		conn.Close()
		held := time.Since(start)
		wg.Wait()
		if held < delay {
			t.Fatalf("4th login took %v, want held >= %v", held, delay)
		}
		for _, d := range others {
			if d >= delay {
				t.Fatalf("other devices took %v while flappy was held", others)
			}
		}
		waitFor(t, "holding 0", func() bool { return c.proxy.GuardStats().FlapHolding == 0 })

		// The 5th is held, then refused without reaching a backend.
		acc := backendsAccepted(c)
		start = time.Now()
		conn, err := net.Dial("tcp", c.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		conn.Write(login("flappy"))
		waitFor(t, "held", func() bool { return c.proxy.GuardStats().FlapHolding == 1 })
		if _, err := conn.Read(make([]byte, 1)); err != io.EOF {
			t.Fatalf("5th login: read %v, want EOF (refused)", err)
		}
		if d := time.Since(start); d < delay {
			t.Fatalf("5th login refused after %v, want held >= %v first", d, delay)
		}
		waitFor(t, "counted flapping", func() bool { return c.proxy.Stats().Closed[ReasonFlapping] == 1 })
		if g := c.proxy.GuardStats(); g.FlapHeld != 2 || g.FlapRefused != 1 || g.FlapHolding != 0 {
			t.Fatalf("guard stats %+v, want 2 held, 1 refused, none holding", g)
		}
		if n := backendsAccepted(c); n != acc {
			t.Fatalf("backends accepted %d connections for the refused login", n-acc)
		}
		t.Logf("%s: held %v (delay %v); other devices' setup meanwhile %v", pathOf(t), held, delay, others)
	})
}

// A device that hangs up while held is let go once the hold ends: nothing
// stays held or open.
func TestFlappingHeldDeviceLeaves(t *testing.T) {
	bothPaths(t, func(t *testing.T) {
		c := newCluster(t, 1, func(p *Proxy) { p.Flap = Flap{Max: 1, Delay: 300 * time.Millisecond} })
		conn, _ := c.connect("d")
		conn.Close()
		conn, err := net.Dial("tcp", c.addr)
		if err != nil {
			t.Fatal(err)
		}
		conn.Write(login("d"))
		waitFor(t, "held", func() bool { return c.proxy.GuardStats().FlapHolding == 1 })
		conn.Close()
		waitFor(t, "released", func() bool { return c.proxy.GuardStats().FlapHolding == 0 })
		waitFor(t, "ended", func() bool { return c.proxy.Stats().Active == 0 })
	})
}

// The zero Max (the zero Flap) is off.
func TestFlapOff(t *testing.T) {
	c := newCluster(t, 1, func(p *Proxy) { p.Flap = Flap{Max: 0, Delay: time.Minute} })
	for range 20 {
		conn, _ := c.connect("d")
		conn.Close()
	}
	if g := c.proxy.GuardStats(); g.FlapHeld != 0 {
		t.Fatalf("held %d with flap.max -1", g.FlapHeld)
	}
}

// The flap count shares the device cache's entry: a device counted
// before its first routing is not a move, a login again replaces its older
// connection, and the count goes on across the two.
func TestFlapCountInDeviceCache(t *testing.T) {
	bothPaths(t, func(t *testing.T) {
		c := newCluster(t, 2, func(p *Proxy) { p.Flap = Flap{Max: 2, Window: time.Minute, Delay: 200 * time.Millisecond} })
		first, _ := c.connect("dev")
		second, _ := c.connect("dev")
		defer second.Close()
		first.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := first.Read(make([]byte, 1)); err != io.EOF {
			t.Fatalf("older connection: read = %v, want EOF (replaced)", err)
		}
		waitFor(t, "replaced counted", func() bool { return c.proxy.Stats().Closed[ReasonReplaced] == 1 })
		if s := c.proxy.Stats(); s.Moved != 0 {
			t.Fatalf("moved %d, want 0: the flap count alone is no earlier backend", s.Moved)
		}
		third, _ := c.connect("dev") // the 3rd login in the window: held
		defer third.Close()
		if g := c.proxy.GuardStats(); g.FlapHeld != 1 {
			t.Fatalf("held %d, want the 3rd login held", g.FlapHeld)
		}
	})
}

// Shutdown during a hold: the held device is closed (shutdown), never dialled.
func TestFlapHoldEndsAtShutdown(t *testing.T) {
	bothPaths(t, func(t *testing.T) {
		c := newCluster(t, 1, func(p *Proxy) { p.Flap = Flap{Max: 1, Delay: 500 * time.Millisecond} })
		conn, _ := c.connect("d")
		conn.Close()
		waitFor(t, "first login ended", func() bool { return c.proxy.Proxied() == 0 })
		acc := backendsAccepted(c)
		conn, err := net.Dial("tcp", c.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.Write(login("d"))
		waitFor(t, "held", func() bool { return c.proxy.GuardStats().FlapHolding == 1 })
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := c.proxy.Shutdown(ctx); err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := conn.Read(make([]byte, 1)); err != io.EOF {
			t.Fatalf("held device: read %v, want EOF", err)
		}
		if n := backendsAccepted(c); n != acc {
			t.Fatalf("the held device was dialled during shutdown")
		}
		if s := c.proxy.Stats(); s.Closed[ReasonShutdown] != 1 {
			t.Fatalf("closed %v, want one shutdown", s.Closed)
		}
	})
}
