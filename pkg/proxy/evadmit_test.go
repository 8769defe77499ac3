//go:build linux

package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/devgate/devgate/pkg/demo"
	"github.com/devgate/devgate/pkg/proxy/internal/netpoll"
	"github.com/devgate/devgate/pkg/ring"
)

// A client the loop takes from accept costs no goroutine even before it is
// routed: 300 silent clients and 300 proxied devices.
func TestLoopAdmitsWithoutGoroutines(t *testing.T) {
	c := newCluster(t, 1, func(p *Proxy) { p.Goroutines = false })
	if !c.proxy.evLoopAdmits() {
		t.Fatal("cluster proxy does not admit on loops")
	}
	const n = 300
	warm, _ := c.connect("dev-warm") // the loops start with the first connection
	warm.Close()
	g0 := runtime.NumGoroutine()
	silent := make([]net.Conn, n)
	for i := range silent {
		conn, err := net.Dial("tcp", c.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		silent[i] = conn
	}
	waitFor(t, "silent clients accepted", func() bool { return c.proxy.Stats().Active >= n })
	if g := runtime.NumGoroutine() - g0; g > 20 {
		t.Fatalf("%d more goroutines for %d clients in preread", g, n)
	}
	for i := range n {
		conn, _ := c.connect(fmt.Sprintf("dev-%d", i))
		defer conn.Close()
	}
	waitFor(t, "devices on loops", func() bool { return c.proxy.evConns() == n })
	// The demo backend holds a goroutine per connection; the proxy none.
	if g := runtime.NumGoroutine() - g0; g > n+20 {
		t.Fatalf("%d more goroutines for %d devices and %d silent clients", g, n, n)
	}
}

// The loop's dial has its own deadline: an owner whose accept queue is full
// never answers the SYN, the dial times out and the next owner serves.
func TestLoopDialTimeoutFallsBack(t *testing.T) {
	stuck := fullBacklogListener(t)
	c := newCluster(t, 1, func(p *Proxy) { p.DialTimeout = 300 * time.Millisecond })
	r, err := ring.New(ring.ModeConsistent, []ring.Backend{{ID: "stuck", Addr: stuck}, {ID: "b1", Addr: c.addrs[0]}})
	if err != nil {
		t.Fatal(err)
	}
	c.ring.Store(r)
	dev := deviceOwnedBy(t, r, "stuck")
	start := time.Now()
	conn, backend := c.connect(dev)
	defer conn.Close()
	if backend != "b1" {
		t.Fatalf("served by %s", backend)
	}
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Fatalf("served after %v: the stuck owner was not tried", d)
	}
	s := c.proxy.Stats()
	if s.Fallbacks != 1 || s.DialFailures != 1 {
		t.Fatalf("fallbacks %d, dial failures %d", s.Fallbacks, s.DialFailures)
	}
}

// A backend registered by host name is dialled by net.Dialer in a
// goroutine, and the pair goes back to its loop.
func TestLoopDialsHostNames(t *testing.T) {
	c := newCluster(t, 1, func(p *Proxy) { p.Goroutines = false })
	_, port, _ := net.SplitHostPort(c.addrs[0])
	r, err := ring.New(ring.ModeConsistent, []ring.Backend{{ID: "b1", Addr: "localhost:" + port}})
	if err != nil {
		t.Fatal(err)
	}
	c.ring.Store(r)
	for i := range 5 {
		conn, backend := c.connect(fmt.Sprintf("dev-%d", i))
		defer conn.Close()
		if backend != "b1" {
			t.Fatalf("served by %s", backend)
		}
	}
	waitFor(t, "pairs on loops", func() bool { return c.proxy.evConns() == 5 })
}

// Shutdown past its deadline closes clients still in preread on a loop.
func TestLoopShutdownClosesUnrouted(t *testing.T) {
	c := newCluster(t, 1, func(p *Proxy) { p.PrereadTimeout = time.Minute })
	conn, err := net.Dial("tcp", c.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.Write(login("dev-half")[:5]) // half a header: still in preread
	waitFor(t, "client accepted", func() bool { return c.proxy.Stats().Active == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := c.proxy.Shutdown(ctx); err != context.DeadlineExceeded {
		t.Fatalf("Shutdown: %v", err)
	}
	conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := conn.Read(make([]byte, 1)); err == nil || strings.Contains(err.Error(), "timeout") {
		t.Fatalf("client read after shutdown: %v", err)
	}
	if s := c.proxy.Stats(); s.Active != 0 || s.Closed[ReasonShutdown] != 1 {
		t.Fatalf("active %d, closed %v", s.Active, s.Closed)
	}
}

// Listen sets TCP_NODELAY and keepalive once on the listening socket;
// accepted sockets inherit them, and the loop's backend sockets get the same.
func TestKeepAliveInheritedAndDialled(t *testing.T) {
	p := &Proxy{KeepAlive: 42 * time.Second}
	l, err := p.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if !p.inheritsKeepAlive(l) {
		t.Fatal("listener not marked")
	}
	dc, err := net.Dial("tcp", l.Addr().String()) // completes in the accept queue
	if err != nil {
		t.Fatal(err)
	}
	defer dc.Close()
	// Accept as the loops do (Go's Accept would set TCP_NODELAY itself).
	var afd int
	var aerr error
	rc, _ := l.(*net.TCPListener).SyscallConn()
	rc.Control(func(fd uintptr) { afd, _, aerr = syscall.Accept4(int(fd), syscall.SOCK_CLOEXEC) })
	if aerr != nil {
		t.Fatal(aerr)
	}
	defer syscall.Close(afd)
	checkSockOpts(t, "accepted", afd, 42)

	ap, err := netip.ParseAddrPort(l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	fd, err := netpoll.Connect(ap, keepAliveIdle(42*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	checkSockOpts(t, "dialled", fd, 42)
}

// checkSockOpts checks fd has TCP_NODELAY and keepalive after idle seconds.
func checkSockOpts(t *testing.T, what string, fd, idle int) {
	t.Helper()
	for _, o := range [][3]int{
		{syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1},
		{syscall.SOL_SOCKET, syscall.SO_KEEPALIVE, 1},
		{syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE, idle},
		{syscall.IPPROTO_TCP, syscall.TCP_KEEPINTVL, idle / 3},
		{syscall.IPPROTO_TCP, syscall.TCP_KEEPCNT, 3},
	} {
		if v, err := syscall.GetsockoptInt(fd, o[0], o[1]); err != nil || v != o[2] {
			t.Errorf("%s: option %d = %d (%v), want %d", what, o[1], v, err, o[2])
		}
	}
}

// fullBacklogListener returns the address of a listening socket whose
// accept queue is full: Linux drops further SYNs, so a connect hangs.
func fullBacklogListener(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, _ := syscall.Getsockname(fd)
	addr := fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
	for range 2 { // backlog 0 holds one; the second fills the SYN side
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			t.Cleanup(func() { c.Close() })
		}
	}
	if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
		c.Close()
		t.Skip("this kernel accepts past a full backlog")
	}
	return addr
}

func deviceOwnedBy(t *testing.T, r ring.Ring, id string) string {
	t.Helper()
	for i := range 1000 {
		dev := fmt.Sprintf("dev-%d", i)
		if r.Backends()[r.Lookup([]byte(dev))].ID == id {
			return dev
		}
	}
	t.Fatalf("no device owned by %s", id)
	return ""
}

// A burst of connections accepted by one loop is spread over all loops.
func TestLoopAcceptSpreadsBurst(t *testing.T) {
	if runtime.GOMAXPROCS(0) < 2 {
		t.Skip("one loop")
	}
	c := newCluster(t, 1, func(p *Proxy) { p.Goroutines = false })
	const n = 40
	var wg sync.WaitGroup
	conns := make([]net.Conn, n)
	for i := range conns {
		wg.Go(func() { conns[i], _ = c.connect(fmt.Sprintf("dev-%d", i)) })
	}
	wg.Wait()
	defer func() {
		for _, conn := range conns {
			conn.Close()
		}
	}()
	waitFor(t, "devices on loops", func() bool { return c.proxy.evConns() == n })
	c.proxy.loops.mu.Lock()
	defer c.proxy.loops.mu.Unlock()
	for i, l := range c.proxy.loops.loops {
		if held := int(l.routed.Load()); held < n/len(c.proxy.loops.loops)/2 {
			t.Errorf("loop %d holds %d of %d connections", i, held, n)
		}
	}
}

// The loops accept and dial IPv6 (::1) as they do IPv4.
func TestLoopIPv6(t *testing.T) {
	bl, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skip("no IPv6 loopback:", err)
	}
	b := &demo.Backend{ID: "v6"}
	done := make(chan struct{})
	go func() { defer close(done); b.Serve(bl) }()
	defer func() { b.Close(); <-done }()
	r, err := ring.New(ring.ModeConsistent, []ring.Backend{{ID: "v6", Addr: bl.Addr().String()}})
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{Source: NewAtomicRing(r), MaxConnsPerIP: 5}
	l, err := p.Listen(context.Background(), "tcp", "[::1]:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- p.Serve(l) }()
	defer func() { p.Close(); <-served }()
	conn, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	conn.Write(login("dev-v6"))
	if _, body, err := readFrame(bufio.NewReader(conn)); err != nil || !strings.Contains(string(body), `"v6"`) {
		t.Fatalf("reply %q, %v", body, err)
	}
	waitFor(t, "the pair on a loop", func() bool { return p.evConns() == 1 })
}

// A listener closed by its owner, not by Shutdown, ends Serve on the loops
// too, with net.ErrClosed.
func TestLoopServeReturnsWhenListenerClosed(t *testing.T) {
	r, err := ring.New(ring.ModeConsistent, []ring.Backend{{ID: "b", Addr: "127.0.0.1:1"}})
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{Source: NewAtomicRing(r)}
	defer p.Close()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- p.Serve(l) }()
	waitFor(t, "loops started", func() bool { return len(p.loops.loopsNow()) > 0 })
	l.Close()
	select {
	case err := <-served:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Serve returned %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve still running after its listener closed")
	}
}
