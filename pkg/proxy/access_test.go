package proxy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/devgate/devgate/pkg/ring"
)

// accessBuf is an access log writing JSON lines into memory.
type accessBuf struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *accessBuf) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *accessBuf) Sync() error { return nil }

// lines parses every line as JSON.
func (b *accessBuf) lines(t *testing.T) []map[string]any {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(b.buf.String()), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("access line %q is not JSON: %v", l, err)
		}
		out = append(out, m)
	}
	return out
}

// line waits for the line of device dev (or of reason, for dev "").
func (b *accessBuf) line(t *testing.T, dev string, reason Reason) map[string]any {
	t.Helper()
	var got map[string]any
	waitFor(t, fmt.Sprintf("access line of %q (%s)", dev, reason), func() bool {
		for _, m := range b.lines(t) {
			if m["devid"] == dev && (dev != "" || m["reason"] == string(reason)) {
				got = m
				return true
			}
		}
		return false
	})
	if got["reason"] != string(reason) || got["msg"] != accessMsg || got["logger"] != "access" || got["gateway"] != "gw-test" {
		t.Fatalf("access line %v: want reason %s from logger access on gw-test", got, reason)
	}
	for _, k := range []string{"client", "backend", "duration", "bytesIn", "bytesOut", "fallbacks", "moves"} {
		if _, ok := got[k]; !ok {
			t.Fatalf("access line %v has no %s", got, k)
		}
	}
	return got
}

func newAccess(mode AccessMode, sample int) (*AccessLog, *accessBuf) {
	b := &accessBuf{}
	enc := zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
	l := zap.New(zapcore.NewCore(enc, b, zap.InfoLevel)).Named("access")
	return &AccessLog{Logger: l, Mode: mode, Sample: sample, Gateway: "gw-test"}, b
}

// One JSON line per connection that ends, with its reason, for every
// reason a test can provoke.
func TestAccessLogReasons(t *testing.T) {
	bothPaths(t, func(t *testing.T) {
		acc, buf := newAccess(AccessAll, 0)
		c := newCluster(t, 2, func(p *Proxy) { p.Access = acc; p.PrereadTimeout = 300 * time.Millisecond })

		conn, backend := c.connect("dev-client-closed")
		local := conn.LocalAddr().String()
		conn.Close()
		m := buf.line(t, "dev-client-closed", ReasonClientClosed)
		if m["backend"] != backend || m["client"] != local || m["fallbacks"] != 0.0 || m["moves"] != 0.0 {
			t.Fatalf("client close line %v: want backend %s, client %s, no fallback or move", m, backend, local)
		}

		conn, _ = c.connect("dev-kicked")
		defer conn.Close()
		c.proxy.Kick("dev-kicked")
		buf.line(t, "dev-kicked", ReasonKicked)

		old, _ := c.connect("dev-relogin")
		defer old.Close()
		conn, _ = c.connect("dev-relogin") // the older connection is closed: replaced
		defer conn.Close()
		buf.line(t, "dev-relogin", ReasonReplaced)

		conn, backend = c.connect("dev-drained")
		defer conn.Close()
		c.proxy.Evict(backend, 0, CauseDrain)
		buf.line(t, "dev-drained", Evicted(CauseDrain))

		raw := func(b []byte) {
			conn, err := net.Dial("tcp", c.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.Write(b)
			conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			io.Copy(io.Discard, conn) // until the proxy closes it
		}
		raw(mkframe(1, "not json"))
		buf.line(t, "", "not_json")
		raw(mkframe(1, "{")[:4]) // part of a header, then nothing
		buf.line(t, "", ReasonPrereadTimeout)

		c.ring.Store(nil)
		raw(login("dev-no-backends"))
		buf.line(t, "dev-no-backends", ReasonNoBackends)

		dead := deadAddr(t)
		r, err := ring.New(ring.ModeConsistent, []ring.Backend{{ID: "dead", Addr: dead}})
		if err != nil {
			t.Fatal(err)
		}
		c.ring.Store(r)
		raw(login("dev-dial-failed"))
		buf.line(t, "dev-dial-failed", ReasonDialFailed)

		// A backend that answers the login, then closes; a dead owner
		// first, so the device falls back once.
		closer := closingBackend(t)
		r, err = ring.New(ring.ModeConsistent, []ring.Backend{{ID: "dead", Addr: dead}, {ID: "closer", Addr: closer}})
		if err != nil {
			t.Fatal(err)
		}
		c.ring.Store(r)
		dev := deviceOwnedBy(t, r, "dead")
		raw(login(dev))
		m = buf.line(t, dev, ReasonBackendClosed)
		if m["backend"] != "closer" || m["fallbacks"] != 1.0 {
			t.Fatalf("backend close line %v: want backend closer after one fallback", m)
		}
	})
}

// In errors mode only the ends that are not a normal close get a line;
// in all mode the sample keeps 1 in N of the normal ones.
func TestAccessLogModes(t *testing.T) {
	acc, buf := newAccess(AccessErrors, 0)
	c := newCluster(t, 1, func(p *Proxy) { p.Access = acc })
	conn, _ := c.connect("dev-normal")
	conn.Close()
	waitFor(t, "closed", func() bool { return c.proxy.Stats().Closed[ReasonClientClosed] == 1 })
	r, _ := ring.New(ring.ModeConsistent, []ring.Backend{{ID: "dead", Addr: deadAddr(t)}})
	c.ring.Store(r)
	conn, err := net.Dial("tcp", c.addr)
	if err != nil {
		t.Fatal(err)
	}
	conn.Write(login("dev-error"))
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	conn.Read(make([]byte, 1))
	conn.Close()
	buf.line(t, "dev-error", ReasonDialFailed)
	if ls := buf.lines(t); len(ls) != 1 {
		t.Fatalf("errors mode wrote %d lines, want only the dial failure: %v", len(ls), ls)
	}

	acc, buf = newAccess(AccessAll, 3)
	c = newCluster(t, 1, func(p *Proxy) { p.Access = acc })
	for i := range 6 {
		conn, _ := c.connect(fmt.Sprintf("dev-%d", i))
		conn.Close()
	}
	waitFor(t, "closed", func() bool { return c.proxy.Stats().Closed[ReasonClientClosed] == 6 })
	if ls := buf.lines(t); len(ls) != 2 {
		t.Fatalf("sample 3 of 6 closes wrote %v, want 2 lines", ls)
	}

	off := &AccessLog{Mode: AccessOff}
	if off.want(ReasonDialFailed) || (*AccessLog)(nil).want(ReasonDialFailed) {
		t.Fatal("an access log that is off wants a line")
	}
}

func TestParseAccessMode(t *testing.T) {
	for s, want := range map[string]AccessMode{"all": AccessAll, "errors": AccessErrors, "off": AccessOff} {
		if got, err := ParseAccessMode(s); err != nil || got != want {
			t.Fatalf("%s: %v %v", s, got, err)
		}
	}
	if _, err := ParseAccessMode("some"); err == nil {
		t.Fatal("mode some parsed")
	}
}

// The device id in a line is bounded (the matcher already admits only
// printable ASCII keys of up to 128 bytes; sanitize also replaces others).
func TestAccessLogSanitisesDevid(t *testing.T) {
	acc, buf := newAccess(AccessAll, 0)
	c := newCluster(t, 1, func(p *Proxy) { p.Access = acc })
	dev := "dev-" + strings.Repeat("x", 100)
	conn, _ := c.connect(dev)
	conn.Close()
	waitFor(t, "a line", func() bool { return len(buf.lines(t)) == 1 })
	got := buf.lines(t)[0]["devid"].(string)
	if len(got) != 67 || !strings.HasPrefix(got, "dev-xx") || !strings.HasSuffix(got, "x...") {
		t.Fatalf("devid logged as %q", got)
	}
}

// deadAddr is a loopback address nothing listens on.
func deadAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := l.Addr().String()
	l.Close()
	return a
}

// closingBackend answers each connection's first frame with a frame, then
// closes it.
func closingBackend(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { l.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.SetDeadline(time.Now().Add(5 * time.Second))
			if _, _, err := readFrame(bufio.NewReader(c)); err == nil {
				c.Write(mkframe(1, `{"ok":true}`))
			}
			c.Close()
		}
	}()
	return l.Addr().String()
}

// A device moved live (rehome) is found on its new backend with one move,
// and its access line says so.
func TestAccessLogMoves(t *testing.T) {
	bothPaths(t, func(t *testing.T) {
		acc, buf := newAccess(AccessAll, 0)
		c := newMoveCluster(t, []string{"b1", "b2"}, func(p *Proxy) { p.Access = acc })
		d := c.devices(1)[0]
		if err := d.beat(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "answered", func() bool { a, _, _, _ := d.state(); return a == 1 })
		from := c.proxy.FindDevice(d.id)[0].Backend
		to := map[string]string{"b1": "b2", "b2": "b1"}[from]
		c.route(to)
		var tally MoveTally
		c.proxy.Relocate(from, 0, CauseDrain, &tally)
		waitFor(t, "moved", func() bool { return tally.Moved.Load() == 1 })
		if got := c.proxy.FindDevice(d.id); len(got) != 1 || got[0].Backend != to || got[0].Moves != 1 {
			t.Fatalf("after the move FindDevice = %+v, want on %s with one move", got, to)
		}
		d.conn.Close()
		if m := buf.line(t, d.id, ReasonClientClosed); m["backend"] != to || m["moves"] != 1.0 {
			t.Fatalf("access line %v, want backend %s and one move", m, to)
		}
	})
}

// A line the access log does not keep costs no allocation: off, a normal
// close in errors mode, or one sampled out.
func TestAccessLogSkipAllocsNothing(t *testing.T) {
	errorsOnly, _ := newAccess(AccessErrors, 0)
	sampled, _ := newAccess(AccessAll, 1000)
	sampled.n.Store(1) // the next 999 are sampled out
	pc := &conn{device: "dev-1", backendID: "b1", since: time.Now()}
	for name, a := range map[string]*AccessLog{"nil": nil, "off": {Mode: AccessOff}, "errors": errorsOnly, "sampled": sampled} {
		p := &Proxy{Access: a}
		e := ending{pc: pc}
		if n := testing.AllocsPerRun(100, func() { p.access(&e, ReasonClientClosed) }); n != 0 {
			t.Errorf("%s: %v allocations per skipped line", name, n)
		}
	}
	if n := testing.AllocsPerRun(100, func() { sanitize("dev-000042") }); n != 0 {
		t.Errorf("sanitize of a clean id allocates %v", n)
	}
}
