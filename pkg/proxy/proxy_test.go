package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/devgate/devgate/pkg/ring"
)

func TestRoutesToOwnerAndSticks(t *testing.T) {
	bothPaths(t, func(t *testing.T) {
		c := newCluster(t, 3, nil)
		r := c.ring.Ring()
		seen := map[string]int{}
		for i := 0; i < 60; i++ {
			dev := fmt.Sprintf("dev-%04d", i)
			want := r.Backends()[r.Lookup([]byte(dev))].ID
			for round := 0; round < 3; round++ {
				conn, got := c.connect(dev)
				conn.Close()
				if got != want {
					t.Fatalf("%s round %d landed on %s, ring owner is %s", dev, round, got, want)
				}
			}
			seen[want]++
		}
		if len(seen) != 3 {
			t.Fatalf("60 devices used %d of 3 backends: %v", len(seen), seen)
		}
		// A reconnect can beat the proxy to noticing the old close; it then
		// replaces the old connection, which is counted as such.
		waitFor(t, "closes counted", func() bool {
			cl := c.proxy.Stats().Closed
			return cl[ReasonClientClosed]+cl[ReasonReplaced] == 180
		})
		s := c.proxy.Stats()
		if s.Routed != 180 || s.Moved != 0 || s.Fallbacks != 0 {
			t.Fatalf("stats = %+v", s)
		}
	})
}

// Every byte read before routing reaches the backend first and unchanged,
// including frames that followed the login in the same segment.
func TestPrereadBytesForwardedFirst(t *testing.T) {
	bothPaths(t, func(t *testing.T) {
		rec, addr := newRecorder(t)
		p := &Proxy{Source: ringOf(t, ring.Backend{ID: "rec", Addr: addr}), Goroutines: onGoroutines(t)}
		paddr := startProxy(t, p)

		hb := mkframe(2, `{"hb":1}`)
		first := append(login("dev-1"), hb[:3]...) // login and part of a heartbeat
		conn, err := net.Dial("tcp", paddr)
		if err != nil {
			t.Fatal(err)
		}
		conn.Write(first)
		time.Sleep(20 * time.Millisecond)
		conn.Write(hb[3:])
		conn.Write([]byte("tail"))
		conn.(*net.TCPConn).CloseWrite() // half-close: the backend sees EOF, replies still flow
		got := <-rec
		want := append(append(login("dev-1"), hb...), "tail"...)
		if !bytes.Equal(got.data, want) {
			t.Fatalf("backend got %q\nwant %q", got.data, want)
		}
		reply, err := io.ReadAll(conn)
		if err != nil || string(reply) != "bye" {
			t.Fatalf("after half-close the client read %q, %v", reply, err)
		}
		conn.Close()
	})
}

type recorded struct{ data []byte }

// newRecorder is a backend that reads until EOF, then answers "bye" and
// closes: it checks byte-exact forwarding and half-close.
func newRecorder(t *testing.T) (<-chan recorded, string) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	out := make(chan recorded, 4)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			b, _ := io.ReadAll(c)
			c.Write([]byte("bye"))
			c.Close()
			out <- recorded{b}
		}
	}()
	t.Cleanup(func() { l.Close(); <-done })
	return out, l.Addr().String()
}

func startProxy(t *testing.T, p *Proxy) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Serve(l) }()
	t.Cleanup(func() {
		p.Close()
		if err := <-done; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	})
	return l.Addr().String()
}

// Bad input is closed with its own counted reason and never reaches a backend.
func TestBadInputNeverReachesBackend(t *testing.T) {
	bothPaths(t, func(t *testing.T) {
		c := newCluster(t, 2, func(p *Proxy) { p.PrereadTimeout = 300 * time.Millisecond })
		cases := []struct {
			name   string
			send   func(net.Conn)
			reason Reason
		}{
			{"length over the cap", func(cn net.Conn) { cn.Write([]byte{1, 1, 0, 0, 0xff, 0xff}) }, "too_large"},
			{"garbage header", func(cn net.Conn) { cn.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")) }, "too_large"},
			{"body not json", func(cn net.Conn) { cn.Write(mkframe(1, "hello world")) }, "not_json"},
			{"no devid", func(cn net.Conn) { cn.Write(mkframe(1, `{"user":"x"}`)) }, "no_key"},
			{"key too long", func(cn net.Conn) { cn.Write(login(string(bytes.Repeat([]byte("k"), 200)))) }, "key_too_long"},
			{"slow first frame", func(cn net.Conn) { cn.Write(login("dev-slow")[:4]); time.Sleep(time.Second) }, ReasonPrereadTimeout},
			{"gone mid-frame", func(cn net.Conn) { cn.Write(login("dev-gone")[:9]) }, ReasonClientGone},
			{"nothing sent", func(cn net.Conn) {}, ReasonEmpty},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				before := c.proxy.Stats().Closed[tc.reason]
				conn, err := net.Dial("tcp", c.addr)
				if err != nil {
					t.Fatal(err)
				}
				tc.send(conn)
				conn.Close()
				waitFor(t, string(tc.reason), func() bool { return c.proxy.Stats().Closed[tc.reason] == before+1 })
			})
		}
		for _, b := range c.backends {
			if n := b.Stats().Accepted; n != 0 {
				t.Fatalf("backend %s accepted %d connections of bad input", b.ID, n)
			}
		}
		if s := c.proxy.Stats(); s.Routed != 0 || s.Active != 0 {
			t.Fatalf("stats after bad input: %+v", s)
		}
	})
}

// The server closes a slow client at the deadline without its help.
func TestPrereadDeadlineClosesSilentClient(t *testing.T) {
	bothPaths(t, func(t *testing.T) {
		c := newCluster(t, 1, func(p *Proxy) { p.PrereadTimeout = 200 * time.Millisecond })
		c.dialUntilClosed()
		waitFor(t, "timeout counted", func() bool { return c.proxy.Stats().Closed[ReasonPrereadTimeout] == 1 })
	})
}

// When the owner refuses, the next distinct owner takes the device, and
// that is counted as a fallback.
func TestFallbackToNextOwner(t *testing.T) {
	bothPaths(t, func(t *testing.T) {
		c := newCluster(t, 3, nil)
		r := c.ring.Ring()
		dev := "dev-fallback"
		owners := r.Owners([]byte(dev), 3, nil)
		dead := r.Backends()[owners[0]]
		// Replace the owner's address by one that refuses.
		l, _ := net.Listen("tcp", "127.0.0.1:0")
		refused := l.Addr().String()
		l.Close()
		bs := append([]ring.Backend(nil), r.Backends()...)
		bs[owners[0]].Addr = refused
		r2, err := ring.New(ring.ModeConsistent, bs)
		if err != nil {
			t.Fatal(err)
		}
		c.ring.Store(r2)
		conn, got := c.connect(dev)
		conn.Close()
		if want := r.Backends()[owners[1]].ID; got != want || got == dead.ID {
			t.Fatalf("landed on %s, want the second owner %s", got, want)
		}
		s := c.proxy.Stats()
		if s.Fallbacks != 1 || s.DialFailures != 1 {
			t.Fatalf("fallbacks=%d dialFailures=%d", s.Fallbacks, s.DialFailures)
		}
	})
}

func TestNoBackendsAndAllDown(t *testing.T) {
	bothPaths(t, func(t *testing.T) {
		src := &AtomicRing{}
		p := &Proxy{Source: src, DialTimeout: 500 * time.Millisecond, Goroutines: onGoroutines(t)}
		addr := startProxy(t, p)
		try := func() {
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			conn.Write(login("dev-1"))
			conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			if n, err := conn.Read(make([]byte, 1)); err != io.EOF {
				t.Fatalf("read %d, %v; want EOF", n, err)
			}
			conn.Close()
		}
		try()
		waitFor(t, "no_backends", func() bool { return p.Stats().Closed[ReasonNoBackends] == 1 })

		l, _ := net.Listen("tcp", "127.0.0.1:0")
		down := l.Addr().String()
		l.Close()
		r, _ := ring.New(ring.ModeConsistent, []ring.Backend{{ID: "a", Addr: down}, {ID: "b", Addr: down}})
		src.Store(r)
		try()
		waitFor(t, "dial_failed", func() bool { return p.Stats().Closed[ReasonDialFailed] == 1 })
		if s := p.Stats(); s.DialFailures != 2 {
			t.Fatalf("dial failures = %d, want one per distinct owner (2)", s.DialFailures)
		}
	})
}

func TestMaxConns(t *testing.T) {
	bothPaths(t, func(t *testing.T) {
		c := newCluster(t, 1, func(p *Proxy) { p.MaxConns = 2 })
		a, _ := c.connect("dev-a")
		defer a.Close()
		b, _ := c.connect("dev-b")
		defer b.Close()
		c.dialUntilClosed() // the third connection
		waitFor(t, "max_conns", func() bool { return c.proxy.Stats().Closed[ReasonMaxConns] == 1 })
		a.Close()
		waitFor(t, "slot freed", func() bool { return c.proxy.Stats().Active == 1 })
		d, _ := c.connect("dev-d")
		d.Close()
	})
}

// A second login of the same device through this replica closes the older
// connection (a half-open mobile link) so the backend holds one session.
func TestDuplicateLoginReplacesOlder(t *testing.T) {
	bothPaths(t, func(t *testing.T) {
		c := newCluster(t, 2, nil)
		old, b1 := c.connect("dev-dup")
		defer old.Close()
		fresh, b2 := c.connect("dev-dup")
		defer fresh.Close()
		if b1 != b2 {
			t.Fatalf("same device on %s then %s", b1, b2)
		}
		old.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := old.Read(make([]byte, 1)); err != io.EOF {
			t.Fatalf("older connection read %v, want EOF", err)
		}
		waitFor(t, "replaced", func() bool { return c.proxy.Stats().Closed[ReasonReplaced] == 1 })
		if got := c.proxy.Conns()[b1]; got != 1 {
			t.Fatalf("%s holds %d connections, want 1", b1, got)
		}
	})
}

func TestEvictByBackend(t *testing.T) {
	bothPaths(t, func(t *testing.T) {
		c := newCluster(t, 2, nil)
		var conns []net.Conn
		per := map[string]int{}
		for i := 0; i < 20; i++ {
			conn, b := c.connect(fmt.Sprintf("dev-%d", i))
			conns = append(conns, conn)
			per[b]++
		}
		defer func() {
			for _, cn := range conns {
				cn.Close()
			}
		}()
		waitFor(t, "table filled", func() bool { return c.proxy.Conns()["b1"] == per["b1"] })
		if n := c.proxy.Evict("b1", 3, "test"); n != min(3, per["b1"]) {
			t.Fatalf("evicted %d", n)
		}
		waitFor(t, "3 evicted", func() bool { return c.proxy.Stats().Closed["evicted_test"] == uint64(min(3, per["b1"])) })
		c.proxy.Evict("b1", 0, "test")
		waitFor(t, "b1 empty", func() bool { return c.proxy.Conns()["b1"] == 0 })
		if got := c.proxy.Conns()["b2"]; got != per["b2"] {
			t.Fatalf("b2 holds %d, want %d untouched", got, per["b2"])
		}
	})
}

func TestShutdownWaitsThenCloses(t *testing.T) {
	bothPaths(t, func(t *testing.T) {
		c := newCluster(t, 1, nil)
		conn, _ := c.connect("dev-1")
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		start := time.Now()
		err := c.proxy.Shutdown(ctx)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Shutdown = %v, want deadline exceeded with a device still connected", err)
		}
		if time.Since(start) < 200*time.Millisecond {
			t.Fatal("Shutdown returned before its deadline while a connection was open")
		}
		if _, err := net.DialTimeout("tcp", c.addr, time.Second); err == nil {
			t.Fatal("listener still accepting after Shutdown")
		}
		if got := c.proxy.Stats().Closed[ReasonShutdown]; got != 1 {
			t.Fatalf("closed by shutdown = %d", got)
		}
	})
}

// A new ring applies to new connections at once.
func TestRingSwap(t *testing.T) {
	bothPaths(t, func(t *testing.T) {
		c := newCluster(t, 2, nil)
		only := c.ring.Ring().Backends()[1]
		r, err := ring.New(ring.ModeConsistent, []ring.Backend{only})
		if err != nil {
			t.Fatal(err)
		}
		c.ring.Store(r)
		for i := 0; i < 10; i++ {
			conn, b := c.connect(fmt.Sprintf("dev-%d", i))
			conn.Close()
			if b != only.ID {
				t.Fatalf("landed on %s after the ring was swapped to %s only", b, only.ID)
			}
		}
	})
}

func TestSanitize(t *testing.T) {
	if got := sanitize("ok-1\n\x1b[31m"); got != "ok-1??[31m" {
		t.Fatalf("sanitize = %q", got)
	}
	if got := sanitize(string(bytes.Repeat([]byte("a"), 100))); len(got) != 67 {
		t.Fatalf("long id logged as %d bytes", len(got))
	}
}

// After a scale-out, exactly the connections whose device the new ring
// gives to the newcomer are misplaced, and only they are evicted.
func TestEvictMisplaced(t *testing.T) {
	bothPaths(t, func(t *testing.T) {
		c := newCluster(t, 2, nil)
		old := c.ring.Ring()
		c.connectN(60)
		if n := c.proxy.CountMisplaced(); n != 0 {
			t.Fatalf("%d misplaced before any change", n)
		}
		grown, err := ring.New(ring.ModeConsistent, append(append([]ring.Backend(nil), old.Backends()...), ring.Backend{ID: "b3", Addr: "127.0.0.1:1"}))
		if err != nil {
			t.Fatal(err)
		}
		c.ring.Store(grown)
		want := 0
		for i := 0; i < 60; i++ {
			k := []byte(fmt.Sprintf("dev-%d", i))
			if grown.Backends()[grown.Lookup(k)].ID != old.Backends()[old.Lookup(k)].ID {
				want++
				if grown.Backends()[grown.Lookup(k)].ID != "b3" {
					t.Fatalf("%s moved between old backends", k)
				}
			}
		}
		if want == 0 {
			t.Fatal("no device moved to b3; the test needs some")
		}
		if got := c.proxy.CountMisplaced(); got != want {
			t.Fatalf("misplaced %d, want %d", got, want)
		}
		if got := c.proxy.EvictMisplaced(0, "rebalance"); got != want {
			t.Fatalf("evicted %d, want %d", got, want)
		}
		waitFor(t, "evictions counted", func() bool { return c.proxy.Stats().Closed["evicted_rebalance"] == uint64(want) })
		if got := c.proxy.Proxied(); got != int64(60-want) {
			t.Fatalf("%d proxied after rebalance, want %d", got, 60-want)
		}
	})
}

// A connection being closed is not picked, counted or closed again by a
// later eviction: paced evictions count what they really closed.
func TestEvictSkipsClosing(t *testing.T) {
	bothPaths(t, func(t *testing.T) {
		c := newCluster(t, 1, nil)
		c.connectN(6)
		first := c.proxy.Evict("b1", 4, "test")
		second := c.proxy.Evict("b1", 4, "test") // at once: the first four may still be in the table
		if first != 4 || second != 2 {
			t.Fatalf("evicted %d then %d; want 4 then the 2 left", first, second)
		}
		waitFor(t, "6 counted", func() bool { return c.proxy.Stats().Closed["evicted_test"] == 6 })
	})
}
