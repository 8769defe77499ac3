package proxy

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"

	"github.com/devgate/devgate/internal/testkit"
	"github.com/devgate/devgate/pkg/demo"
	"github.com/devgate/devgate/pkg/ring"
)

// dialFrom connects from a chosen loopback source address.
func dialFrom(t *testing.T, src, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// refused reports whether the proxy closed c without an answer.
func refused(c net.Conn) bool {
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := c.Read(make([]byte, 1))
	return err == io.EOF || isReset(err)
}

func fdList() []string {
	ents, _ := os.ReadDir("/proc/self/fd")
	var out []string
	for _, e := range ents {
		l, _ := os.Readlink("/proc/self/fd/" + e.Name())
		out = append(out, e.Name()+"="+l)
	}
	return out
}

func openFDs(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd")
	}
	return len(ents)
}

// One address at its connection limit is refused; another still connects.
func TestPerIPConnectionLimit(t *testing.T) {
	bothPaths(t, func(t *testing.T) {
		c := newCluster(t, 1, func(p *Proxy) { p.MaxConnsPerIP = 3 })
		fds := openFDs(t)
		before := fdList()
		defer func() {
			if t.Failed() {
				t.Logf("before %v\nafter %v\nstats %+v backend %+v", before, fdList(), c.proxy.Stats(), c.backends[0].Stats())
			}
		}()
		var held []net.Conn
		for i := 0; i < 3; i++ {
			conn := dialFrom(t, "127.0.0.1", c.addr)
			conn.Write(login(fmt.Sprintf("dev-%d", i)))
			if _, _, err := readFrame(bufio.NewReader(conn)); err != nil {
				t.Fatal(err)
			}
			held = append(held, conn)
		}
		extra := dialFrom(t, "127.0.0.1", c.addr)
		extra.Write(login("dev-extra"))
		if !refused(extra) {
			t.Fatal("a fourth connection from 127.0.0.1 was served")
		}
		extra.Close()
		other := dialFrom(t, "127.0.0.2", c.addr)
		other.Write(login("dev-other"))
		if _, _, err := readFrame(bufio.NewReader(other)); err != nil {
			t.Fatalf("127.0.0.2 was refused too: %v", err)
		}
		other.Close()
		waitFor(t, "max_conns_per_ip counted", func() bool { return c.proxy.Stats().Closed[ReasonMaxConnsPerIP] == 1 })
		for _, h := range held {
			h.Close()
		}
		waitFor(t, "connections gone", func() bool { return c.proxy.Stats().Active == 0 && c.backends[0].Stats().Active == 0 })
		if c.backends[0].Stats().Accepted != 4 {
			t.Fatalf("backend accepted %d, want 4 (3 + 127.0.0.2)", c.backends[0].Stats().Accepted)
		}
		// io.Copy's splice keeps pipes in a pool that the GC empties. Event
		// loops, once started, keep their own few fds until Close.
		waitFor(t, "fds back to baseline", func() bool { runtime.GC(); return openFDs(t) <= fds+c.proxy.evLoopFDs() })
	})
}

// A flood from one address is cut to its rate while another address
// connects normally.
func TestPerIPAcceptRate(t *testing.T) {
	bothPaths(t, func(t *testing.T) {
		c := newCluster(t, 1, func(p *Proxy) { p.AcceptRatePerIP, p.AcceptBurstPerIP = 5, 5 })
		served := 0
		for i := 0; i < 30; i++ {
			conn := dialFrom(t, "127.0.0.1", c.addr)
			conn.Write(login(fmt.Sprintf("dev-%d", i)))
			if _, _, err := readFrame(bufio.NewReader(conn)); err == nil {
				served++
			}
			conn.Close()
		}
		if served < 5 || served > 8 { // the burst, plus what refilled meanwhile
			t.Fatalf("flood of 30: %d served, want the burst of 5 (+ refill)", served)
		}
		other := dialFrom(t, "127.0.0.3", c.addr)
		other.Write(login("dev-other"))
		if _, _, err := readFrame(bufio.NewReader(other)); err != nil {
			t.Fatalf("another address was refused during the flood: %v", err)
		}
		other.Close()
		waitFor(t, "rate_limited counted", func() bool { return c.proxy.Stats().Closed[ReasonRateLimited] == uint64(30-served) })
	})
}

// PROXY v2 in from a trusted balancer, v2 out to the backend with the
// device's address; a header from anyone else is refused.
func TestProxyProtocol(t *testing.T) {
	bothPaths(t, func(t *testing.T) {
		rec, addr := newRecorder(t)
		p := &Proxy{Source: ringOf(t, ring.Backend{ID: "rec", Addr: addr}), TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}, SendProxyV2: true, Goroutines: onGoroutines(t)}
		paddr := startProxy(t, p)
		device := &net.TCPAddr{IP: net.ParseIP("203.0.113.7"), Port: 5555}
		hdr, err := proxyproto.HeaderProxyFromAddrs(2, device, &net.TCPAddr{IP: net.ParseIP("198.51.100.1"), Port: 9000}).Format()
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range []struct {
			name string
			hdr  []byte
		}{{"v2", hdr}, {"v1", []byte("PROXY TCP4 203.0.113.7 198.51.100.1 5555 9000\r\n")}} {
			conn := dialFrom(t, "127.0.0.2", paddr)
			conn.Write(append(append([]byte(nil), v.hdr...), login("dev-1")...))
			conn.(*net.TCPConn).CloseWrite()
			got := <-rec
			conn.Close()
			br := bufio.NewReader(bytes.NewReader(got.data))
			h, err := proxyproto.Read(br)
			if err != nil {
				t.Fatalf("%s: backend got no PROXY header: %v (%q)", v.name, err, got.data)
			}
			if h.Version != 2 || h.SourceAddr.String() != device.String() {
				t.Fatalf("%s: backend's header says %v from %v", v.name, h.Version, h.SourceAddr)
			}
			rest, _ := io.ReadAll(br)
			if !bytes.Equal(rest, login("dev-1")) {
				t.Fatalf("%s: after the header the backend got %q", v.name, rest)
			}
		}
		for _, bad := range []struct {
			name, src string
			send      []byte
			reason    Reason
		}{
			{"untrusted header", "127.0.0.1", append(append([]byte(nil), hdr...), login("dev-2")...), ReasonProxyUntrusted},
			{"trusted without header", "127.0.0.2", login("dev-3"), ReasonProxyHeader},
			{"malformed v1", "127.0.0.2", []byte("PROXY TCP4 nonsense\r\n"), ReasonProxyHeader},
		} {
			conn := dialFrom(t, bad.src, paddr)
			conn.Write(bad.send)
			if !refused(conn) {
				t.Fatalf("%s: served", bad.name)
			}
			conn.Close()
			waitFor(t, string(bad.reason), func() bool { return p.Stats().Closed[bad.reason] >= 1 })
		}
		select {
		case got := <-rec:
			t.Fatalf("a refused connection reached the backend: %q", got.data)
		case <-time.After(100 * time.Millisecond):
		}
	})
}

// A backend that asked for PROXY v2 in its registration meta gets the
// header; the proxy sends none to the others.
// On the loops the addresses come from accept4 and getsockname.
func TestProxyV2ByBackendMeta(t *testing.T) {
	for _, loops := range []bool{false, true} {
		t.Run(fmt.Sprintf("loops=%v", loops), func(t *testing.T) {
			rec, addr := newRecorder(t)
			b := ring.Backend{ID: "rec", Addr: addr, Meta: map[string]string{"proxy": "v2"}}
			paddr := startProxy(t, &Proxy{Source: ringOf(t, b), Goroutines: !loops})
			conn := dialFrom(t, "127.0.0.4", paddr)
			conn.Write(login("dev-1"))
			conn.(*net.TCPConn).CloseWrite()
			got := <-rec
			conn.Close()
			h, err := proxyproto.Read(bufio.NewReader(bytes.NewReader(got.data)))
			if err != nil || h.SourceAddr.String() != conn.LocalAddr().String() || h.DestinationAddr.String() != paddr {
				t.Fatalf("backend asking for v2 got %q (%v); want %s -> %s", got.data, err, conn.LocalAddr(), paddr)
			}
		})
	}
}

// A TLS device reaches its backend; a rotated certificate is served to new
// connections without a restart; a plaintext client fails the handshake.
func TestTLSDeviceListenerWithRotation(t *testing.T) {
	bothPaths(t, func(t *testing.T) {
		dir := t.TempDir()
		writeCert(t, dir, "first")
		certs, err := NewCertReloader(filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"))
		if err != nil {
			t.Fatal(err)
		}
		certs.Check = 10 * time.Millisecond
		c := newCluster(t, 1, func(p *Proxy) {
			p.TLS = &tls.Config{GetCertificate: certs.GetCertificate, MinVersion: tls.VersionTLS12}
			p.PrereadTimeout = time.Second
		})
		tlsLogin := func(dev string) string {
			conn, err := tls.Dial("tcp", c.addr, &tls.Config{InsecureSkipVerify: true})
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.Write(login(dev))
			if _, _, err := readFrame(conn); err != nil {
				t.Fatalf("%s over TLS: %v", dev, err)
			}
			return conn.ConnectionState().PeerCertificates[0].Subject.CommonName
		}
		if cn := tlsLogin("dev-1"); cn != "first" {
			t.Fatalf("served %q", cn)
		}
		time.Sleep(20 * time.Millisecond) // a new modification time
		writeCert(t, dir, "second")
		waitFor(t, "rotated certificate served", func() bool { return tlsLogin("dev-2") == "second" })
		plain := dialFrom(t, "127.0.0.1", c.addr)
		plain.Write(login("dev-plain"))
		if !refused(plain) {
			t.Fatal("a plaintext device was served on the TLS listener")
		}
		plain.Close()
		waitFor(t, "tls_handshake counted", func() bool { return c.proxy.Stats().Closed[ReasonTLSHandshake] == 1 })
	})
}

func TestIdleTimeout(t *testing.T) {
	bothPaths(t, func(t *testing.T) {
		c := newCluster(t, 1, func(p *Proxy) { p.IdleTimeout = 300 * time.Millisecond })
		busy, _ := c.connect("dev-busy")
		defer busy.Close()
		idle, _ := c.connect("dev-idle")
		defer idle.Close()
		br := bufio.NewReader(busy)
		for i := 0; i < 8; i++ { // heartbeats every 100ms for 800ms keep it open
			busy.Write(mkframe(2, `{"hb":1}`))
			if _, _, err := readFrame(br); err != nil {
				t.Fatalf("busy device cut after %d heartbeats: %v", i, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		if !refused(idle) {
			t.Fatal("idle device not closed")
		}
		waitFor(t, "idle_timeout counted", func() bool { return c.proxy.Stats().Closed[ReasonIdleTimeout] == 1 })
	})
}

func FuzzProxyHeader(f *testing.F) {
	v2, _ := proxyproto.HeaderProxyFromAddrs(2, &net.TCPAddr{IP: net.ParseIP("203.0.113.7"), Port: 1}, &net.TCPAddr{IP: net.ParseIP("10.0.0.1"), Port: 2}).Format()
	f.Add(v2)
	f.Add([]byte("PROXY TCP4 203.0.113.7 198.51.100.1 5555 9000\r\n\x01\x01"))
	f.Add([]byte("PROXY UNKNOWN\r\n"))
	f.Add(login("dev-1"))
	f.Fuzz(func(t *testing.T, b []byte) {
		n, err := proxyHeaderLen(b)
		if err != nil || n == 0 {
			return
		}
		if n > len(b) || n > maxV2Header {
			t.Fatalf("header length %d beyond input %d", n, len(b))
		}
		src, err := parseProxyHeader(b[:n])
		if err == nil && src != nil && src.String() == "" {
			t.Fatal("parsed a header with an empty source")
		}
	})
}

// writeCert writes a self-signed server certificate for 127.0.0.1 named
// cn as dir/tls.crt and dir/tls.key (the key first: a reload in between
// keeps the old pair).
func writeCert(t *testing.T, dir, cn string) {
	t.Helper()
	testkit.Issue(t, nil, cn, nil, net.IPv4(127, 0, 0, 1)).WriteFiles(t, filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"))
}

// Backends reached over TLS, verified against their CA.
func TestBackendTLS(t *testing.T) {
	dir := t.TempDir()
	writeCert(t, dir, "backend")
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"))
	if err != nil {
		t.Fatal(err)
	}
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	b := &demo.Backend{ID: "tls-backend"}
	done := make(chan struct{})
	go func() { defer close(done); b.Serve(l) }()
	defer func() { b.Close(); <-done }()
	pool := x509.NewCertPool()
	pem, _ := os.ReadFile(filepath.Join(dir, "tls.crt"))
	pool.AppendCertsFromPEM(pem)
	r, _ := ring.New(ring.ModeConsistent, []ring.Backend{{ID: "tls-backend", Addr: l.Addr().String()}})
	p := &Proxy{Source: NewAtomicRing(r), BackendTLS: &tls.Config{RootCAs: pool}}
	addr := startProxy(t, p)
	conn := dialFrom(t, "127.0.0.1", addr)
	defer conn.Close()
	conn.Write(login("dev-1"))
	_, body, err := readFrame(bufio.NewReader(conn))
	if err != nil || !bytes.Contains(body, []byte(`"backend":"tls-backend"`)) {
		t.Fatalf("through TLS to the backend: %q %v", body, err)
	}
	// An untrusted backend certificate is a failed dial, not a connection.
	p2 := &Proxy{Source: NewAtomicRing(r), BackendTLS: &tls.Config{RootCAs: x509.NewCertPool()}, MaxTries: 1}
	addr2 := startProxy(t, p2)
	c2 := dialFrom(t, "127.0.0.1", addr2)
	defer c2.Close()
	c2.Write(login("dev-2"))
	if !refused(c2) {
		t.Fatal("served through a backend whose certificate does not verify")
	}
	waitFor(t, "dial_failed", func() bool { return p2.Stats().Closed[ReasonDialFailed] == 1 })
}

// With no burst set, an address may open twice its rate at once (the
// documented default), and not one more until tokens refill.
func TestPerIPDefaultBurstIsTwiceTheRate(t *testing.T) {
	l := newIPLimiter(0, 5, 0, 16)
	ip := netip.MustParseAddr("127.0.0.9")
	now := time.Unix(1000, 0)
	admitted := 0
	for i := 0; i < 20; i++ {
		if ok, _ := l.acquire(ip, now); ok {
			admitted++
		}
	}
	if admitted != 10 {
		t.Fatalf("burst at one instant: %d admitted, want 10 (2 x rate 5)", admitted)
	}
	if ok, reason := l.acquire(ip, now.Add(200*time.Millisecond)); !ok {
		t.Fatalf("one token refilled after 200 ms at 5/s, but refused: %s", reason)
	}
}
