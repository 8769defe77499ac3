//go:build linux

package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/devgate/devgate/pkg/ring"
)

// evProxy starts an event-loop proxy in front of the returned listener, a
// backend the test serves by hand.
func evProxy(t *testing.T) (*Proxy, string, net.Listener) {
	t.Helper()
	bl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r, err := ring.New(ring.ModeConsistent, []ring.Backend{{ID: "raw", Addr: bl.Addr().String()}})
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{Source: NewAtomicRing(r), MaxConnsPerIP: -1, AcceptRatePerIP: -1}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// Small send buffers on the proxy's sockets (fixed sizes turn off
	// autotuning, which would take 4 MiB): 1 MiB cannot hide in the kernel.
	p.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, network, addr)
		if err == nil {
			c.(*net.TCPConn).SetWriteBuffer(32 << 10)
		}
		return c, err
	}
	done := make(chan error, 1)
	go func() { done <- p.Serve(smallSendBuffers{l}) }()
	t.Cleanup(func() {
		p.Close()
		<-done
		bl.Close()
	})
	return p, l.Addr().String(), bl
}

type smallSendBuffers struct{ net.Listener }

func (l smallSendBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		c.(*net.TCPConn).SetWriteBuffer(32 << 10)
	}
	return c, err
}

// evAccept accepts the proxied connection for devid and checks the login.
func evAccept(t *testing.T, bl net.Listener, devid string) *net.TCPConn {
	t.Helper()
	bc, err := bl.Accept()
	if err != nil {
		t.Fatal(err)
	}
	bc.SetDeadline(time.Now().Add(10 * time.Second))
	want := login(devid)
	got := make([]byte, len(want))
	if _, err := io.ReadFull(bc, got); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("backend read %q, %v; want the login", got, err)
	}
	return bc.(*net.TCPConn)
}

func pattern(seed byte, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i%251)
	}
	return b
}

// slowRead reads to EOF in 4 KiB steps with pauses, after letting the
// writer fill the buffers.
func slowRead(c net.Conn) ([]byte, error) {
	time.Sleep(100 * time.Millisecond)
	var out []byte
	buf := make([]byte, 4096)
	for i := 0; ; i++ {
		n, err := c.Read(buf)
		out = append(out, buf[:n]...)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		if i%4 == 0 {
			time.Sleep(time.Millisecond)
		}
	}
}

// 1 MiB each way to slow readers with small receive buffers: the loop must
// stop reading the fast side, keep what it could not write, and lose nothing.
func TestEventLoopBulkBackpressure(t *testing.T) {
	p, addr, bl := evProxy(t)
	const size = 1 << 20
	cc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	client := cc.(*net.TCPConn)
	client.SetReadBuffer(32 << 10) // far below 1 MiB; a smaller window than the loopback MSS stalls TCP
	client.SetDeadline(time.Now().Add(10 * time.Second))
	client.Write(login("dev-bulk"))
	backend := evAccept(t, bl, "dev-bulk")
	defer backend.Close()
	backend.SetReadBuffer(32 << 10)
	waitFor(t, "the pair on a loop", func() bool { return p.evConns() == 1 })

	up, down := pattern(1, size), pattern(7, size)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	var gotUp, gotDown []byte
	send := func(c *net.TCPConn, b []byte) {
		defer wg.Done()
		if _, err := c.Write(b); err != nil {
			errs <- err
			return
		}
		if err := c.CloseWrite(); err != nil { // each side half-closes when done
			errs <- err
		}
	}
	wg.Add(4)
	go send(client, up)
	go send(backend, down)
	go func() { defer wg.Done(); var err error; gotUp, err = slowRead(backend); errs <- err }()
	go func() { defer wg.Done(); var err error; gotDown, err = slowRead(client); errs <- err }()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(gotUp, up) || !bytes.Equal(gotDown, down) {
		t.Fatalf("got %d up, %d down bytes (or wrong ones); want %d each way", len(gotUp), len(gotDown), size)
	}
	waitFor(t, "connection finished", func() bool { return p.Stats().Proxied == 0 && p.Stats().Active == 0 })
	s := p.Stats()
	if s.BytesIn != uint64(size+len(login("dev-bulk"))) || s.BytesOut != size {
		t.Fatalf("counted %d in, %d out", s.BytesIn, s.BytesOut)
	}
	if p.loops.paused.Load() == 0 {
		t.Fatal("no direction was ever paused: the test did not test backpressure")
	}
	t.Logf("directions paused %d times; closed %v", p.loops.paused.Load(), s.Closed)
}

// The client stops sending; the backend still answers, then closes.
func TestEventLoopHalfClose(t *testing.T) {
	p, addr, bl := evProxy(t)
	cc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	client := cc.(*net.TCPConn)
	client.SetDeadline(time.Now().Add(5 * time.Second))
	client.Write(login("dev-half"))
	backend := evAccept(t, bl, "dev-half")
	defer backend.Close()
	waitFor(t, "the pair on a loop", func() bool { return p.evConns() == 1 })
	client.Write([]byte("last words"))
	client.CloseWrite()
	rest, err := io.ReadAll(backend) // EOF arrives: the proxy half-closed the backend
	if err != nil || string(rest) != "last words" {
		t.Fatalf("backend read %q, %v", rest, err)
	}
	for i := 0; i < 3; i++ { // the other direction still flows
		fmt.Fprintf(backend, "reply %d;", i)
		time.Sleep(10 * time.Millisecond)
	}
	backend.Close()
	got, err := io.ReadAll(client)
	if err != nil || string(got) != "reply 0;reply 1;reply 2;" {
		t.Fatalf("client read %q, %v", got, err)
	}
	waitFor(t, "connection finished", func() bool { return p.Stats().Proxied == 0 })
	if s := p.Stats(); s.Closed[ReasonClientClosed] != 1 {
		t.Fatalf("closed %v, want client_closed", s.Closed)
	}
}

// Evict wakes the loop for an idle connection; both sides see it end.
func TestEventLoopEvictIdle(t *testing.T) {
	c := newCluster(t, 1, func(p *Proxy) { p.Goroutines = false })
	conn, _ := c.connect("dev-idle")
	defer conn.Close()
	waitFor(t, "the pair on a loop", func() bool { return c.proxy.evConns() == 1 })
	if n := c.proxy.Evict("", 0, "drain"); n != 1 {
		t.Fatalf("evicted %d", n)
	}
	conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := conn.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("client read after evict: %v", err)
	}
	waitFor(t, "eviction counted", func() bool {
		s := c.proxy.Stats()
		return s.Closed["evicted_drain"] == 1 && s.Proxied == 0 && s.Active == 0 && c.backends[0].Stats().Active == 0
	})
	if c.proxy.evConns() != 0 {
		t.Fatalf("%d pairs left on the loops", c.proxy.evConns())
	}
}

// 2,000 idle devices cost no goroutine in the proxy; half leave, Close
// ends the rest, and every fd and goroutine is back (goleak checks the
// latter in TestMain).
func TestEventLoopManyIdle(t *testing.T) {
	c := newCluster(t, 1, func(p *Proxy) { p.Goroutines = false })
	fds := openFDs(t)
	const n = 2000
	g0 := runtime.NumGoroutine()
	conns := make([]net.Conn, n)
	for i := range conns {
		conns[i], _ = c.connect(fmt.Sprintf("dev-%d", i))
	}
	waitFor(t, "all on loops", func() bool { return c.proxy.evConns() == n && c.proxy.Proxied() == n })
	// The demo backend keeps a goroutine per connection; the proxy none.
	if g := runtime.NumGoroutine() - g0; g > n+100 {
		t.Fatalf("%d more goroutines for %d devices", g, n)
	}
	for _, conn := range conns[:n/2] {
		conn.Close()
	}
	waitFor(t, "half gone", func() bool { return c.proxy.Proxied() == n/2 })
	c.proxy.Close()
	s := c.proxy.Stats()
	if s.Active != 0 || s.Closed[ReasonShutdown] != n/2 || s.Closed[ReasonClientClosed] != n/2 {
		t.Fatalf("after Close: active %d, closed %v", s.Active, s.Closed)
	}
	for _, conn := range conns[n/2:] {
		conn.Close()
	}
	waitFor(t, "fds back to baseline", func() bool { return openFDs(t) <= fds })
}

// Clusters in bothPaths run on the path their subtest names; this checks
// the path takes effect.
func TestClusterFollowsPath(t *testing.T) {
	bothPaths(t, func(t *testing.T) {
		c := newCluster(t, 1, nil)
		conn, _ := c.connect("dev-flag")
		defer conn.Close()
		want := 0
		if pathOf(t) == "loop" {
			want = 1
		}
		waitFor(t, "the cluster's mode", func() bool { return c.proxy.evConns() == want && c.proxy.Proxied() == 1 })
	})
}
