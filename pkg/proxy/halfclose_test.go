package proxy

import (
	"bufio"
	"io"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/devgate/devgate/pkg/ring"
)

// holdBackend answers the first frame with a frame, then keeps its side of
// every connection open until the test ends: after the device's FIN when
// finFirst is false, or after sending its own FIN when it is true.
type holdBackend struct {
	addr  string
	mu    sync.Mutex
	conns []net.Conn
}

func newHoldBackend(t *testing.T, finFirst bool) *holdBackend {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &holdBackend{addr: l.Addr().String()}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			h.mu.Lock()
			h.conns = append(h.conns, c)
			h.mu.Unlock()
			wg.Go(func() {
				if _, _, err := readFrame(c); err != nil {
					return
				}
				c.Write(mkframe(1, `{"ok":true}`))
				if finFirst {
					c.(*net.TCPConn).CloseWrite()
				}
				io.Copy(io.Discard, c) // to the device's FIN, or the gateway's close
			})
		}
	})
	t.Cleanup(func() { l.Close(); h.closeAll(); wg.Wait() })
	return h
}

func (h *holdBackend) closeAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, c := range h.conns {
		c.Close()
	}
	h.conns = nil
}

// A half-closed pair whose other side never closes is closed after the FIN
// timeout with its own reason, and the gateway's descriptors come back:
// the device sends FIN and the backend never closes (client_fin_timeout),
// and the backend sends FIN and the device never closes
// (server_fin_timeout).
func TestFinTimeoutClosesHalfClosedPairs(t *testing.T) {
	bothPaths(t, func(t *testing.T) {
		for _, tc := range []struct {
			name     string
			finFirst bool // the backend sends FIN, not the device
			idle     time.Duration
			reason   Reason
		}{
			{"device FIN", false, 0, ReasonClientFinTimeout},
			{"backend FIN", true, 0, ReasonServerFinTimeout},
			{"device FIN, idle timeout", false, time.Minute, ReasonClientFinTimeout}, // pipeIdle
			{"backend FIN, idle timeout", true, time.Minute, ReasonServerFinTimeout},
		} {
			t.Run(tc.name, func(t *testing.T) {
				hb := newHoldBackend(t, tc.finFirst)
				r, err := ring.New(ring.ModeConsistent, []ring.Backend{{ID: "hold", Addr: hb.addr}})
				if err != nil {
					t.Fatal(err)
				}
				p := &Proxy{Source: NewAtomicRing(r), MaxConnsPerIP: -1, AcceptRatePerIP: -1, Goroutines: onGoroutines(t),
					ClientFinTimeout: 300 * time.Millisecond, ServerFinTimeout: 300 * time.Millisecond, IdleTimeout: tc.idle}
				addr := startProxy(t, p)
				session := func() (net.Conn, *bufio.Reader) {
					c, err := net.Dial("tcp", addr)
					if err != nil {
						t.Fatal(err)
					}
					c.SetDeadline(time.Now().Add(10 * time.Second))
					c.Write(login("dev-fin"))
					br := bufio.NewReader(c)
					if _, _, err := readFrame(br); err != nil {
						t.Fatalf("no reply: %v", err)
					}
					return c, br
				}
				// Warm up (the loops start on first use), then count descriptors.
				c, _ := session()
				c.Close()
				hb.closeAll()
				waitFor(t, "warm-up closed", func() bool { return p.Stats().Active == 0 })
				runtime.GC()
				base := openFDs(t)

				c, br := session()
				defer c.Close()
				start := time.Now()
				if tc.finFirst {
					if _, err := br.ReadByte(); err != io.EOF { // the backend's FIN, passed on
						t.Fatalf("after the backend's FIN the device read %v", err)
					}
				} else {
					c.(*net.TCPConn).CloseWrite()
					if _, err := br.ReadByte(); err != io.EOF && !isReset(err) { // the gateway closes after the timeout
						t.Fatalf("device read %v, want the gateway's close", err)
					}
				}
				waitFor(t, string(tc.reason), func() bool { return p.Stats().Closed[tc.reason] == 1 })
				t.Logf("closed as %s %v after the FIN", tc.reason, time.Since(start).Round(time.Millisecond))
				if s := p.Stats(); s.Active != 0 || s.Proxied != 0 {
					t.Fatalf("active %d, proxied %d after the timeout", s.Active, s.Proxied)
				}
				c.Close()
				hb.closeAll()
				waitFor(t, "fds back to baseline", func() bool { runtime.GC(); return openFDs(t) <= base })
			})
		}
	})
}

// A half-closed pair whose open side still sends is not cut by the FIN
// timeout: the backend streams for several timeouts after the device's FIN.
func TestFinTimeoutSparesBytesInFlight(t *testing.T) {
	bothPaths(t, func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		const frames = 12 // one each 100ms: four FIN timeouts
		var wg sync.WaitGroup
		wg.Go(func() {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			if _, _, err := readFrame(c); err != nil {
				return
			}
			io.Copy(io.Discard, c) // to the device's FIN
			for range frames {
				if _, err := c.Write(mkframe(2, `{"n":1}`)); err != nil {
					return
				}
				time.Sleep(100 * time.Millisecond)
			}
		})
		t.Cleanup(func() { l.Close(); wg.Wait() })
		r, err := ring.New(ring.ModeConsistent, []ring.Backend{{ID: "stream", Addr: l.Addr().String()}})
		if err != nil {
			t.Fatal(err)
		}
		p := &Proxy{Source: NewAtomicRing(r), MaxConnsPerIP: -1, AcceptRatePerIP: -1, Goroutines: onGoroutines(t),
			ClientFinTimeout: 300 * time.Millisecond}
		c, err := net.Dial("tcp", startProxy(t, p))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		c.Write(login("dev-stream"))
		c.(*net.TCPConn).CloseWrite()
		br := bufio.NewReader(c)
		for i := range frames {
			if _, _, err := readFrame(br); err != nil {
				t.Fatalf("frame %d of %d: %v (closed %v)", i+1, frames, err, p.Stats().Closed)
			}
		}
		if _, err := br.ReadByte(); err != io.EOF {
			t.Fatalf("after the stream: %v, want EOF", err)
		}
		waitFor(t, "closed", func() bool { return p.Stats().Active == 0 })
		if n := p.Stats().Closed[ReasonClientFinTimeout]; n != 0 {
			t.Fatalf("cut by the FIN timeout while bytes flowed: %v", p.Stats().Closed)
		}
	})
}
