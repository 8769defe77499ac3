package proxy

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"

	"github.com/devgate/devgate/internal/testkit"
	"github.com/devgate/devgate/pkg/ring"
)

// Helpers of the tests of moves on the goroutine path (gomove_test.go).

// goMovePaths runs f with the device's TLS terminated by the gateway
// ("tls", the production case) and with plain devices on Proxy.Goroutines
// ("goroutines"): both copy with goroutines.
func goMovePaths(t *testing.T, f func(t *testing.T, tlsOn bool)) {
	t.Helper()
	for _, v := range []string{"tls", "goroutines", "loop"} {
		t.Run(v, func(t *testing.T) { f(t, v == "tls") })
	}
}

// moveBackend is a test backend that says who answered: it answers a frame
// of type t and body x with type t and body "<id>|x", and records the
// devices that logged in (a type 1 frame with a "devid") on each connection.
type moveBackend struct {
	id       string
	optIn    bool
	holdOpen bool             // on the gateway's FIN keep the connection open (an old owner that never closes)
	proxyV2  bool             // asks for a PROXY v2 header (meta proxy=v2) and records its sources
	mute     bool             // never answers a login
	partial  bool             // answers a frame with body "partial" with only its first 8 bytes
	split    bool             // answers a frame with body "split" in two writes 200 ms apart
	tlsCert  *tls.Certificate // serves TLS with it

	l     net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[net.Conn]string // the device that logged in on it ("" before)
	seen  []string            // logins, in order
	srcs  []string            // with proxyV2: the source of each connection's header
	done  bool
	quit  chan struct{} // closed by kill
}

func newMoveBackend(t *testing.T, id string, optIn bool, configure func(*moveBackend)) *moveBackend {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &moveBackend{id: id, optIn: optIn, l: l, conns: map[net.Conn]string{}, quit: make(chan struct{})}
	if configure != nil {
		configure(b)
	}
	if b.tlsCert != nil {
		b.l = tls.NewListener(l, &tls.Config{Certificates: []tls.Certificate{*b.tlsCert}})
	}
	b.wg.Add(1)
	go b.serve()
	t.Cleanup(b.kill)
	return b
}

// ring is b's registration; with optIn it takes moved devices.
func (b *moveBackend) ring() ring.Backend {
	rb := ring.Backend{ID: b.id, Addr: b.l.Addr().String()}
	rb.Meta = map[string]string{}
	if b.optIn {
		rb.Meta[MetaRehome] = RehomeLogin
	}
	if b.proxyV2 {
		rb.Meta["proxy"] = "v2"
	}
	return rb
}

func (b *moveBackend) serve() {
	defer b.wg.Done()
	for {
		c, err := b.l.Accept()
		if err != nil {
			return
		}
		b.mu.Lock()
		if b.done {
			b.mu.Unlock()
			c.Close()
			return
		}
		b.conns[c] = ""
		b.wg.Add(1)
		b.mu.Unlock()
		go b.handle(c)
	}
}

func (b *moveBackend) handle(c net.Conn) {
	defer b.wg.Done()
	r := bufio.NewReader(c)
	if b.proxyV2 {
		h, err := proxyproto.Read(r)
		src := "none"
		if err == nil {
			src = h.SourceAddr.String()
		}
		b.mu.Lock()
		b.srcs = append(b.srcs, src)
		b.mu.Unlock()
	}
	for {
		typ, body, err := testkit.ReadFrame(r)
		if err != nil {
			break
		}
		if typ == 1 {
			var lg struct{ Devid string }
			if json.Unmarshal(body, &lg) == nil && lg.Devid != "" {
				b.mu.Lock()
				b.conns[c] = lg.Devid
				b.seen = append(b.seen, lg.Devid)
				b.mu.Unlock()
			}
		}
		out := testkit.Frame(typ, b.id+"|"+string(body))
		switch {
		case typ == 1 && b.mute:
			continue
		case string(body) == "partial" && b.partial:
			out = out[:8]
		case string(body) == "split" && b.split:
			c.Write(out[:8])
			time.Sleep(200 * time.Millisecond)
			out = out[8:]
		}
		if _, err := c.Write(out); err != nil {
			break
		}
	}
	if b.holdOpen {
		<-b.quit
	}
	b.mu.Lock()
	delete(b.conns, c)
	b.mu.Unlock()
	c.Close()
}

// sources are the device addresses of the PROXY headers b got, in order.
func (b *moveBackend) sources() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.srcs...)
}

// logins are the devices that logged in, in order.
func (b *moveBackend) logins() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.seen...)
}

// closeDevice closes, on purpose, the connection devid logged in on.
func (b *moveBackend) closeDevice(devid string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	for c, d := range b.conns {
		if d == devid {
			c.Close()
			return true
		}
	}
	return false
}

// kill stops b: its listener and every connection close (dials are refused).
func (b *moveBackend) kill() {
	b.mu.Lock()
	if !b.done {
		close(b.quit)
	}
	b.done = true
	b.l.Close()
	for c := range b.conns {
		c.Close()
	}
	b.mu.Unlock()
	b.wg.Wait()
}

// moveEnv is a proxy with rehome on in front of test backends.
type moveEnv struct {
	t     *testing.T
	tlsOn bool
	hdr   string // a PROXY header each device sends first (it comes through a trusted balancer)
	ring  *AtomicRing
	proxy *Proxy
	addr  string
}

func newMoveEnv(t *testing.T, tlsOn bool, bs []*moveBackend, configure func(*Proxy)) *moveEnv {
	t.Helper()
	e := &moveEnv{t: t, tlsOn: tlsOn}
	e.setRing(bs...)
	e.proxy = &Proxy{Source: e.ring, PrereadTimeout: 2 * time.Second, DialTimeout: time.Second,
		MaxConnsPerIP: -1, AcceptRatePerIP: -1, Goroutines: !tlsOn && !strings.HasSuffix(t.Name(), "/loop"),
		Rehome: Rehome{Enabled: true, Timeout: 3 * time.Second, DrainGrace: time.Second}}
	if tlsOn {
		cert := testkit.Issue(t, nil, "gateway", nil, net.IPv4(127, 0, 0, 1))
		e.proxy.TLS = &tls.Config{Certificates: []tls.Certificate{cert.TLS}, MinVersion: tls.VersionTLS12}
	}
	if configure != nil {
		configure(e.proxy)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.addr = l.Addr().String()
	done := make(chan error, 1)
	go func() { done <- e.proxy.Serve(l) }()
	t.Cleanup(func() {
		e.proxy.Close()
		if err := <-done; err != ErrServerClosed {
			t.Errorf("Serve returned %v", err)
		}
	})
	return e
}

// setRing routes on bs from now on (a drained backend leaves the ring).
func (e *moveEnv) setRing(bs ...*moveBackend) {
	var rbs []ring.Backend
	for _, b := range bs {
		rbs = append(rbs, b.ring())
	}
	r, err := ring.New(ring.ModeConsistent, rbs)
	if err != nil {
		e.t.Fatal(err)
	}
	if e.ring == nil {
		e.ring = NewAtomicRing(r)
		return
	}
	e.ring.Store(r)
}

// deviceOn is a device id the current ring gives to backend id.
func (e *moveEnv) deviceOn(id string) string {
	r := e.ring.Ring()
	for i := 0; i < 10000; i++ {
		dev := fmt.Sprintf("dev-%d", i)
		if r.Backends()[r.Lookup([]byte(dev))].ID == id {
			return dev
		}
	}
	e.t.Fatalf("no device on %s", id)
	return ""
}

// moveDevice is a test device: it logs in and sends numbered heartbeats.
type moveDevice struct {
	t    *testing.T
	id   string
	conn net.Conn
	r    *bufio.Reader
}

// connect logs devid in and checks that backend want answered.
func (e *moveEnv) connect(devid, want string) *moveDevice {
	e.t.Helper()
	conn, err := net.Dial("tcp", e.addr)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { conn.Close() })
	if e.hdr != "" {
		if _, err := conn.Write([]byte(e.hdr)); err != nil {
			e.t.Fatal(err)
		}
	}
	if e.tlsOn {
		tc := tls.Client(conn, &tls.Config{InsecureSkipVerify: true})
		tc.SetDeadline(time.Now().Add(5 * time.Second))
		if err := tc.Handshake(); err != nil {
			e.t.Fatal(err)
		}
		conn = tc
	}
	d := &moveDevice{t: e.t, id: devid, conn: conn, r: bufio.NewReader(conn)}
	d.send(1, fmt.Sprintf(`{"devid":%q,"token":"t0k3n"}`, devid))
	if from, _ := d.answer(1); from != want {
		e.t.Fatalf("%s logged in on %s, want %s", devid, from, want)
	}
	return d
}

func (d *moveDevice) send(typ byte, body string) {
	d.t.Helper()
	d.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := d.conn.Write(testkit.Frame(typ, body)); err != nil {
		d.t.Fatalf("%s: send: %v", d.id, err)
	}
}

// answer reads the next frame, of type typ, and returns who answered and
// the body it answered.
func (d *moveDevice) answer(typ byte) (from, body string) {
	d.t.Helper()
	from, body, err := d.tryAnswer(typ)
	if err != nil {
		d.t.Fatalf("%s: %v", d.id, err)
	}
	return from, body
}

func (d *moveDevice) tryAnswer(typ byte) (from, body string, err error) {
	d.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	t, b, err := testkit.ReadFrame(d.r)
	if err != nil {
		return "", "", fmt.Errorf("read answer: %w", err)
	}
	from, body, ok := strings.Cut(string(b), "|")
	if t != typ || !ok {
		return "", "", fmt.Errorf("answer type %d %q, want type %d", t, b, typ)
	}
	return from, body, nil
}

// closed reports whether the gateway closed the device (EOF or reset
// within 5 s, with no frame before it).
func (d *moveDevice) closed() bool {
	d.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := d.r.ReadByte()
	return err != nil && !isTimeout(err)
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}
