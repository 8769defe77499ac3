package proxy

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/devgate/devgate/internal/testkit"
	"github.com/devgate/devgate/pkg/demo"
	"github.com/devgate/devgate/pkg/ring"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// bothPaths runs f on each data path, as the subtests "loop" (the event
// loops, the default) and "goroutine" (Proxy.Goroutines); newCluster and
// onGoroutines read the path from the subtest's name.
func bothPaths(t *testing.T, f func(t *testing.T)) {
	t.Helper()
	for _, path := range []string{"loop", "goroutine"} {
		t.Run(path, f)
	}
}

// pathOf is the data path a bothPaths subtest (or one below it) runs on:
// "loop" or "goroutine"; "loop" outside bothPaths.
func pathOf(t *testing.T) string {
	for _, part := range strings.Split(t.Name(), "/")[1:] {
		if part == "loop" || part == "goroutine" {
			return part
		}
	}
	return "loop"
}

// onGoroutines is Proxy.Goroutines for t's data path.
func onGoroutines(t *testing.T) bool { return pathOf(t) == "goroutine" }

// mkframe builds a frame of the default 6-byte header format; readFrame
// reads one.
var mkframe, readFrame = testkit.Frame, testkit.ReadFrame

func login(devid string) []byte {
	return mkframe(1, fmt.Sprintf(`{"devid":%q,"token":"t0k3n","os":"android"}`, devid))
}

type cluster struct {
	t        *testing.T
	backends []*demo.Backend
	addrs    []string
	ring     *AtomicRing
	proxy    *Proxy
	addr     string
	done     chan error
}

// newCluster starts n demo backends and a proxy in front of them; set
// options on the proxy through configure.
func newCluster(t *testing.T, n int, configure func(*Proxy)) *cluster {
	t.Helper()
	c := &cluster{t: t, ring: &AtomicRing{}}
	var wg sync.WaitGroup
	var bs []ring.Backend
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		b := &demo.Backend{ID: fmt.Sprintf("b%d", i+1)}
		c.backends = append(c.backends, b)
		c.addrs = append(c.addrs, l.Addr().String())
		wg.Add(1)
		go func() { defer wg.Done(); b.Serve(l) }()
		bs = append(bs, ring.Backend{ID: b.ID, Addr: l.Addr().String()})
	}
	r, err := ring.New(ring.ModeConsistent, bs)
	if err != nil {
		t.Fatal(err)
	}
	c.ring.Store(r)
	// Every test device comes from 127.0.0.1: per-address limits have their own tests.
	c.proxy = &Proxy{Source: c.ring, PrereadTimeout: 2 * time.Second, DialTimeout: time.Second,
		MaxConnsPerIP: -1, AcceptRatePerIP: -1, Goroutines: onGoroutines(t)}
	if configure != nil {
		configure(c.proxy)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c.addr = l.Addr().String()
	c.done = make(chan error, 1)
	go func() { c.done <- c.proxy.Serve(l) }()
	t.Cleanup(func() {
		c.proxy.Close()
		if err := <-c.done; err != ErrServerClosed {
			t.Errorf("Serve returned %v", err)
		}
		for _, b := range c.backends {
			b.Close()
		}
		wg.Wait()
	})
	return c
}

// connect logs devid in and returns the connection and the backend that answered.
func (c *cluster) connect(devid string) (net.Conn, string) {
	c.t.Helper()
	conn, err := net.Dial("tcp", c.addr)
	if err != nil {
		c.t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write(login(devid)); err != nil {
		c.t.Fatal(err)
	}
	typ, body, err := readFrame(bufio.NewReader(conn))
	if err != nil {
		c.t.Fatalf("%s: read reply: %v", devid, err)
	}
	var reply struct{ Backend, Devid string }
	if err := json.Unmarshal(body, &reply); err != nil || typ != 1 || reply.Devid != devid {
		c.t.Fatalf("%s: reply type %d %q (%v)", devid, typ, body, err)
	}
	return conn, reply.Backend
}

// waitFor polls cond for up to 5 s; the proxy counts a close just after the
// socket closes, so tests must not read the counters too early.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testkit.WaitFor(t, 5*time.Second, 5*time.Millisecond, what, cond)
}

// ringOf is a ring of backends to route on.
func ringOf(t *testing.T, backends ...ring.Backend) *AtomicRing {
	t.Helper()
	r, err := ring.New(ring.ModeConsistent, backends)
	if err != nil {
		t.Fatal(err)
	}
	return NewAtomicRing(r)
}

// connectN logs in devices dev-0 to dev-<n-1>, waits until all are
// proxied, and closes them when the test ends.
func (c *cluster) connectN(n int) []net.Conn {
	c.t.Helper()
	var conns []net.Conn
	for i := 0; i < n; i++ {
		conn, _ := c.connect(fmt.Sprintf("dev-%d", i))
		conns = append(conns, conn)
	}
	c.t.Cleanup(func() {
		for _, cn := range conns {
			cn.Close()
		}
	})
	waitFor(c.t, "all proxied", func() bool { return c.proxy.Proxied() == int64(n) })
	return conns
}

// dialUntilClosed connects without sending a byte and reads until the
// proxy closes the connection (EOF within 5 s).
func (c *cluster) dialUntilClosed() {
	c.t.Helper()
	conn, err := net.Dial("tcp", c.addr)
	if err != nil {
		c.t.Fatal(err)
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Read(make([]byte, 1)); err != io.EOF {
		c.t.Fatalf("read = %v, want EOF from the proxy closing", err)
	}
}
