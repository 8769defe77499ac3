//go:build linux

package proxy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/devgate/devgate/pkg/frame"
	"github.com/devgate/devgate/pkg/ring"
)

var testNotice = EvictNotice{Type: 9, Body: `{"reconnectAfter":{{.After}}}`, AfterMin: 2 * time.Second, AfterMax: 4 * time.Second}

// readNotice reads what follows on conn until EOF and returns the notice's
// wait, or -1 if none came.
func readNotice(t *testing.T, r *bufio.Reader) int {
	t.Helper()
	typ, body, err := readFrame(r)
	if errors.Is(err, io.EOF) {
		return -1
	}
	if err != nil || typ != 9 {
		t.Fatalf("after eviction: frame type %d %q (%v), want the notice", typ, body, err)
	}
	var n struct{ ReconnectAfter int }
	if err := json.Unmarshal(body, &n); err != nil {
		t.Fatalf("notice body %q: %v", body, err)
	}
	if _, _, err := readFrame(r); !errors.Is(err, io.EOF) {
		t.Fatalf("after the notice: %v, want EOF", err)
	}
	return n.ReconnectAfter
}

// The notice reaches the device before it is evicted, for each cause, on
// the loops; connections copied by goroutines are evicted without one.
func TestEvictNoticeBeforeEviction(t *testing.T) {
	bothPaths(t, func(t *testing.T) {
		c := newCluster(t, 2, func(p *Proxy) { p.EvictNotice = testNotice })
		evict := map[string]func(backend string){
			"drain":     func(b string) { c.proxy.Evict(b, 0, CauseDrain) },
			"rebalance": func(b string) { c.proxy.Relocate(b, 0, CauseRebalance, nil) },
			"gateway":   func(string) { c.proxy.Relocate("", 0, CauseGatewayDrain, nil) },
			"shutdown":  func(b string) { c.proxy.Evict(b, 0, CauseShutdown) },
		}
		for name, f := range evict {
			conn, b := c.connect("dev-" + name)
			r := bufio.NewReader(conn)
			waitFor(t, "proxied", func() bool { return c.proxy.Proxied() == 1 })
			f(b)
			conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			after := readNotice(t, r)
			conn.Close()
			waitFor(t, "closed", func() bool { return c.proxy.Proxied() == 0 })
			if onGoroutines(t) {
				if after != -1 {
					t.Fatalf("%s: notice on the goroutine path", name)
				}
				continue
			}
			if after < 2 || after > 4 {
				t.Fatalf("%s: notice says %d s, want 2..4", name, after)
			}
		}
		g, want := c.proxy.GuardStats(), GuardStats{NoticeSent: 4}
		if onGoroutines(t) {
			want = GuardStats{NoticeSkipped: 4}
		}
		if g != want {
			t.Fatalf("guard stats %+v, want %+v", g, want)
		}
	})
}

// frameBackend answers a login with its reply, then writes what script
// says on each connection.
func frameBackend(t *testing.T, script func(c net.Conn)) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, _, err := readFrame(bufio.NewReader(c)); err != nil {
					return
				}
				c.Write(mkframe(1, `{"backend":"fb","devid":"x"}`))
				script(c)
			}()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return l.Addr().String()
}

// A device in the middle of a backend frame is evicted without the notice:
// it gets the frame's start, then EOF, never the notice inside the frame.
func TestEvictNoticeNeverInsideAFrame(t *testing.T) {
	whole := mkframe(2, `{"msg":"0123456789"}`)
	cut := len(whole) - 5
	release := make(chan struct{})
	addr := frameBackend(t, func(c net.Conn) {
		c.Write(whole[:cut])
		<-release
	})
	defer close(release)
	p := &Proxy{Source: ringOf(t, ring.Backend{ID: "fb", Addr: addr}), EvictNotice: testNotice,
		MaxConnsPerIP: -1, AcceptRatePerIP: -1}
	paddr := startProxy(t, p)
	conn, err := net.Dial("tcp", paddr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	conn.Write(login("x"))
	r := bufio.NewReader(conn)
	if _, _, err := readFrame(r); err != nil {
		t.Fatal(err)
	}
	part := make([]byte, cut)
	if _, err := io.ReadFull(r, part); err != nil {
		t.Fatal(err)
	}
	p.Evict("fb", 0, CauseDrain)
	rest, err := io.ReadAll(r)
	if err != nil || len(rest) != 0 {
		t.Fatalf("after a partial frame: %q (%v), want EOF without a notice", rest, err)
	}
	waitFor(t, "skipped", func() bool { return p.GuardStats().NoticeSkipped == 1 })
	if g := p.GuardStats(); g.NoticeSent != 0 {
		t.Fatalf("guard stats %+v", g)
	}
}

// Devices receiving a stream of frames are evicted at once: each sees whole
// frames, then maybe the notice as the last frame (or a frame cut by the
// close); the notice never lands inside a frame.
func TestEvictNoticeStreamNeverSplit(t *testing.T) {
	const devices = 20
	body := bytes.Repeat([]byte("abcdefghij"), 30)
	var stop sync.WaitGroup
	quit := make(chan struct{})
	addr := frameBackend(t, func(c net.Conn) {
		stop.Add(1)
		defer stop.Done()
		f := mkframe(2, string(body))
		for i := 0; ; i++ {
			select {
			case <-quit:
				return
			default:
			}
			// Split each frame over two writes, so evictions find them half sent.
			if _, err := c.Write(f[:i%len(f)+1]); err != nil {
				return
			}
			if _, err := c.Write(f[i%len(f)+1:]); err != nil {
				return
			}
		}
	})
	defer func() { close(quit); stop.Wait() }()
	p := &Proxy{Source: ringOf(t, ring.Backend{ID: "fb", Addr: addr}), EvictNotice: testNotice,
		MaxConnsPerIP: -1, AcceptRatePerIP: -1}
	paddr := startProxy(t, p)
	var wg sync.WaitGroup
	results := make([]string, devices)
	ready := make(chan struct{}, devices)
	for i := range devices {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = streamUntilEOF(paddr, fmt.Sprintf("s-%d", i), body, ready)
		}()
	}
	for range devices {
		<-ready
	}
	p.Evict("fb", 0, CauseDrain)
	wg.Wait()
	notices := 0
	for i, r := range results {
		switch r {
		case "notice":
			notices++
		case "cut", "whole":
		default:
			t.Fatalf("device %d: %s", i, r)
		}
	}
	g := p.GuardStats()
	t.Logf("%d devices: %d notices after whole frames, %+v", devices, notices, g)
	if int(g.NoticeSent) != notices || int(g.NoticeSent+g.NoticeSkipped) != devices {
		t.Fatalf("notices seen %d, guard stats %+v", notices, g)
	}
}

// streamUntilEOF logs in and reads frames until EOF: "notice" if the last
// whole frame was the notice, "cut" if a frame was cut by the close,
// "whole" if it ended between frames without one, or what went wrong.
func streamUntilEOF(addr, dev string, body []byte, ready chan<- struct{}) string {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return err.Error()
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	conn.Write(login(dev))
	r := bufio.NewReader(conn)
	if _, _, err := readFrame(r); err != nil {
		return "login: " + err.Error()
	}
	cfg := frame.DefaultConfig()
	for n := 0; ; n++ {
		if n == 3 {
			ready <- struct{}{}
		}
		typ, b, err := readFrame(r)
		switch {
		case errors.Is(err, io.EOF):
			if n < 3 {
				ready <- struct{}{}
			}
			return "whole"
		case errors.Is(err, io.ErrUnexpectedEOF):
			return "cut"
		case err != nil:
			return fmt.Sprintf("frame %d: %v", n, err)
		case typ == 9:
			if _, _, err := readFrame(r); !errors.Is(err, io.EOF) {
				return fmt.Sprintf("after the notice: %v", err)
			}
			return "notice"
		case typ != 2 || !bytes.Equal(b, body):
			return fmt.Sprintf("frame %d: type %d, %d bytes, not the backend's (%d %v)", n, typ, len(b), cfg.HeaderLength, err)
		}
	}
}
