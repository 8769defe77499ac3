package proxy

import (
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"

	"github.com/devgate/devgate/pkg/frame"
	"github.com/devgate/devgate/pkg/ring"
)

// A login body with "devid" twice is refused as dup_key on the socket and
// never reaches a backend: a last-wins backend would read the other id.
func TestDuplicateKeyRefused(t *testing.T) {
	bothPaths(t, func(t *testing.T) {
		rec, addr := newRecorder(t)
		p := &Proxy{Source: ringOf(t, ring.Backend{ID: "rec", Addr: addr}), PrereadTimeout: time.Minute, MaxConnsPerIP: -1, AcceptRatePerIP: -1,
			Goroutines: onGoroutines(t)}
		paddr := startProxy(t, p)
		for i, body := range []string{
			`{"devid":"dev-a","token":"t","devid":"dev-b"}`,
			`{"devid":"dev-a","dev\u0069d":"dev-b"}`,
		} {
			conn, err := net.Dial("tcp", paddr)
			if err != nil {
				t.Fatal(err)
			}
			conn.Write(mkframe(1, body))
			if !refused(conn) {
				t.Fatalf("%s: not refused", body)
			}
			conn.Close()
			waitFor(t, "dup_key counted", func() bool { return p.Stats().Closed["dup_key"] == uint64(i+1) })
		}
		if got := frame.Reason(frame.ErrDupKey); got != "dup_key" {
			t.Fatalf("Reason(ErrDupKey) = %q", got)
		}
		select {
		case got := <-rec:
			t.Fatalf("a duplicate-key login reached the backend: %q", got.data)
		case <-time.After(100 * time.Millisecond):
		}
	})
}

// A PROXY header where none is expected is refused at once, not read as
// frames until the preread deadline: with no trusted balancer at all, and
// from an untrusted peer that sends only the start of a long v2 header.
func TestUnexpectedProxyHeaderRefusedAtOnce(t *testing.T) {
	bothPaths(t, func(t *testing.T) {
		hdr, err := proxyproto.HeaderProxyFromAddrs(2, &net.TCPAddr{IP: net.ParseIP("203.0.113.7"), Port: 5555},
			&net.TCPAddr{IP: net.ParseIP("198.51.100.1"), Port: 9000}).Format()
		if err != nil {
			t.Fatal(err)
		}
		longV2 := append(append([]byte(nil), sigV2...), 0x21, 0x11, 0x0f, 0xff) // 4095 bytes to follow
		for _, tc := range []struct {
			name    string
			trusted []netip.Prefix
			send    []byte
		}{
			{"none trusted, v2 and a login", nil, append(append([]byte(nil), hdr...), login("dev-1")...)},
			{"none trusted, v1", nil, []byte("PROXY TCP4 203.0.113.7 198.51.100.1 5555 9000\r\n")},
			{"none trusted, v2 start", nil, longV2},
			{"other trusted, v2 start", []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}, longV2},
		} {
			t.Run(tc.name, func(t *testing.T) {
				// The key frames are of type 1 (as key.types in production), so
				// the header's bytes are taken as other frames to skip.
				c := newCluster(t, 1, func(p *Proxy) {
					p.PrereadTimeout = time.Minute
					p.Matcher = &frame.Matcher{KeyTypes: []byte{1}}
					p.TrustedProxies = tc.trusted
				})
				conn, err := net.Dial("tcp", c.addr)
				if err != nil {
					t.Fatal(err)
				}
				defer conn.Close()
				start := time.Now()
				conn.Write(tc.send)
				if !refused(conn) { // waits 5 s of the minute
					t.Fatalf("still open after %v", time.Since(start).Round(time.Millisecond))
				}
				t.Logf("refused after %v", time.Since(start).Round(time.Millisecond))
				waitFor(t, "proxy_untrusted counted", func() bool { return c.proxy.Stats().Closed[ReasonProxyUntrusted] == 1 })
				if n := c.backends[0].Stats().Accepted; n != 0 {
					t.Fatalf("the backend saw %d connections", n)
				}
			})
		}
	})
}

// resetBackend accepts and resets every connection at once (SO_LINGER 0),
// as a dying server whose listen queue is still open does.
func resetBackend(t *testing.T) (addr string, accepted *atomic.Int64) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted = new(atomic.Int64)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			c.(*net.TCPConn).SetLinger(0)
			c.Close()
		}
	}()
	t.Cleanup(func() { l.Close(); <-done })
	return l.Addr().String(), accepted
}

// A backend that takes the connection and resets it before its first byte
// counts as a failed dial: the device lands on the next owner with its
// login replayed, counted as a fallback.
func TestResetBeforeFirstByteFallsBack(t *testing.T) {
	bothPaths(t, func(t *testing.T) {
		c := newCluster(t, 1, func(p *Proxy) { p.Eject.Failures = -1 }) // b1: serves; every device tries b0
		dying, accepted := resetBackend(t)
		r, err := ring.New(ring.ModeConsistent, []ring.Backend{{ID: "b0", Addr: dying}, {ID: "b1", Addr: c.addrs[0]}})
		if err != nil {
			t.Fatal(err)
		}
		c.ring.Store(r)
		var devices []string
		for i := 0; len(devices) < 10; i++ {
			d := fmt.Sprintf("dev-%d", i)
			if r.Backends()[r.Owners([]byte(d), 1, nil)[0]].ID == "b0" {
				devices = append(devices, d)
			}
		}
		for _, d := range devices {
			conn, got := c.connect(d) // fails the test unless b1 answers the login
			if got != "b1" {
				t.Fatalf("%s answered by %s", d, got)
			}
			conn.Close()
		}
		waitFor(t, "all routed", func() bool { return c.proxy.Stats().Routed == uint64(len(devices)) })
		s := c.proxy.Stats()
		t.Logf("dying backend accepted %d; stats %+v", accepted.Load(), s)
		if s.Fallbacks != uint64(len(devices)) || s.DialFailures < uint64(len(devices)) || s.Routed != uint64(len(devices)) {
			t.Fatalf("fallbacks %d, dial failures %d, routed %d; want %d each", s.Fallbacks, s.DialFailures, s.Routed, len(devices))
		}
		if accepted.Load() == 0 {
			t.Fatal("the dying backend was never dialled: the test tested nothing")
		}
		waitFor(t, "all closed", func() bool { return c.proxy.Stats().Active == 0 })
		if n := c.proxy.Stats().Closed[ReasonBackendClosed]; n != 0 {
			t.Fatalf("%d devices cut as backend_closed", n)
		}
	})
}
