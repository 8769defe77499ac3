package demo_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/devgate/devgate/internal/testkit"
	"github.com/devgate/devgate/pkg/demo"
	"github.com/devgate/devgate/pkg/frame"
	"github.com/devgate/devgate/pkg/sim"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// start serves b on a loopback port until the test ends, then checks that
// Close made Serve return nil.
func start(t *testing.T, b *demo.Backend) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- b.Serve(l) }()
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return l.Addr().String()
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(5 * time.Second))
	return c
}

// readFrame reads one original-protocol frame.
var readFrame = testkit.ReadFrame

func roundTrip(t *testing.T, c net.Conn, typ byte, body string) (byte, string) {
	t.Helper()
	if _, err := c.Write(sim.AppendFrame(nil, typ, 1, 0x1234, []byte(body))); err != nil {
		t.Fatal(err)
	}
	rtyp, rbody, err := readFrame(c)
	if err != nil {
		t.Fatalf("reading reply to type %d: %v", typ, err)
	}
	return rtyp, string(rbody)
}

// expectClosed checks that the backend closes c without answering.
func expectClosed(t *testing.T, c net.Conn) {
	t.Helper()
	n, err := c.Read(make([]byte, 64))
	if n != 0 || err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("want the connection closed, got %d bytes, err %v", n, err)
	}
}

const login = `{"devid":"dev-000001","token":"0123456789abcdef","os":"android","ver":"1.0"}`

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	testkit.WaitFor(t, 5*time.Second, 5*time.Millisecond, "the condition", cond)
}

func TestLoginHeartbeatEcho(t *testing.T) {
	b := &demo.Backend{ID: "b1"}
	c := dial(t, start(t, b))

	typ, body := roundTrip(t, c, sim.TypeLogin, login)
	var got struct{ Backend, Devid string }
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatalf("login reply %q: %v", body, err)
	}
	if typ != sim.TypeLogin || got.Backend != "b1" || got.Devid != "dev-000001" {
		t.Fatalf("login reply type %d body %s", typ, body)
	}

	for _, tc := range []struct {
		typ  byte
		body string
	}{
		{sim.TypeHeartbeat, `{"hb":1}`},
		{sim.TypeHeartbeat, ``},
		{7, `not json at all`},
		{sim.TypeLogin, `{"os":"ios"}`}, // no key: echoed
	} {
		typ, body := roundTrip(t, c, tc.typ, tc.body)
		if typ != tc.typ || body != tc.body {
			t.Errorf("sent type %d %q, got type %d %q", tc.typ, tc.body, typ, body)
		}
	}

	s := b.Stats()
	if s.Accepted != 1 || s.Active != 1 || s.Frames != 5 || s.Logins != 1 || s.BadFrames != 0 {
		t.Errorf("stats %+v", s)
	}
}

func TestReplyHeaderKept(t *testing.T) {
	c := dial(t, start(t, &demo.Backend{ID: "b1"}))
	if _, err := c.Write(sim.AppendFrame(nil, sim.TypeHeartbeat, 9, 0xBEEF, []byte("{}"))); err != nil {
		t.Fatal(err)
	}
	hdr := make([]byte, 8)
	if _, err := io.ReadFull(c, hdr); err != nil {
		t.Fatal(err)
	}
	if want := []byte{2, 9, 0xBE, 0xEF, 0, 2, '{', '}'}; string(hdr) != string(want) {
		t.Fatalf("reply % x, want % x", hdr, want)
	}
}

// TestPipelined sends many frames in one write: each gets its reply, in order.
func TestPipelined(t *testing.T) {
	c := dial(t, start(t, &demo.Backend{ID: "b1"}))
	var out []byte
	for i := range 200 {
		out = sim.AppendFrame(out, sim.TypeHeartbeat, 1, uint16(i), []byte(strings.Repeat("x", i)))
	}
	go c.Write(out) // the replies may not fit the socket buffers before we read
	for i := range 200 {
		typ, body, err := readFrame(c)
		if err != nil || typ != sim.TypeHeartbeat || len(body) != i {
			t.Fatalf("reply %d: type %d, %d bytes, %v", i, typ, len(body), err)
		}
	}
}

// TestLongFrame echoes a frame longer than the read buffer.
func TestLongFrame(t *testing.T) {
	cfg := frame.DefaultConfig()
	cfg.MaxFrameLength = 10000
	c := dial(t, start(t, &demo.Backend{ID: "b1", Frame: cfg}))
	long := `{"pad":"` + strings.Repeat("y", 6000) + `"}`
	for _, body := range []string{long, `{"hb":1}`, long} {
		typ, got := roundTrip(t, c, sim.TypeHeartbeat, body)
		if typ != sim.TypeHeartbeat || got != body {
			t.Fatalf("echo of %d bytes: type %d, %d bytes", len(body), typ, len(got))
		}
	}
	typ, got := roundTrip(t, c, sim.TypeLogin, `{"devid":"d1","pad":"`+strings.Repeat("z", 5000)+`"}`)
	if typ != sim.TypeLogin || got != `{"backend":"b1","devid":"d1"}` {
		t.Fatalf("long login: type %d body %.80s", typ, got)
	}
}

func TestBadFrameCloses(t *testing.T) {
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"over cap", []byte{1, 1, 0, 0, 0x10, 0x00}}, // 4096 body + 6 > 4096
		{"max u16", []byte{2, 1, 0, 0, 0xFF, 0xFF}},
		{"http", []byte("GET / HTTP/1.1\r\nHost: gw\r\n\r\n")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := &demo.Backend{ID: "b1"}
			c := dial(t, start(t, b))
			if _, body := roundTrip(t, c, sim.TypeLogin, login); !strings.Contains(body, `"b1"`) {
				t.Fatalf("login reply %s", body)
			}
			if _, err := c.Write(tc.data); err != nil {
				t.Fatal(err)
			}
			expectClosed(t, c)
			if s := b.Stats(); s.BadFrames != 1 || s.Frames != 1 {
				t.Errorf("stats %+v", s)
			}
		})
	}
}

func TestMaxConns(t *testing.T) {
	b := &demo.Backend{ID: "b1", MaxConns: 2}
	addr := start(t, b)
	c1, c2 := dial(t, addr), dial(t, addr)
	roundTrip(t, c1, sim.TypeLogin, login) // both registered once answered
	roundTrip(t, c2, sim.TypeLogin, login)

	c3 := dial(t, addr)
	c3.Write(sim.AppendFrame(nil, sim.TypeLogin, 1, 0, []byte(login)))
	expectClosed(t, c3)
	if s := b.Stats(); s.Rejected != 1 || s.Active != 2 {
		t.Fatalf("stats %+v", s)
	}

	c1.Close()
	waitFor(t, func() bool { return b.Stats().Active == 1 })
	roundTrip(t, dial(t, addr), sim.TypeLogin, login)
}

func TestIdleTimeout(t *testing.T) {
	b := &demo.Backend{ID: "b1", IdleTimeout: 100 * time.Millisecond}
	c := dial(t, start(t, b))
	roundTrip(t, c, sim.TypeLogin, login)
	start := time.Now()
	expectClosed(t, c)
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("idle connection closed after %v", d)
	}
}

// TestCloseWithOpenConns checks Close is prompt with clients connected and
// idle, and that their connections are closed.
func TestCloseWithOpenConns(t *testing.T) {
	b := &demo.Backend{ID: "b1"}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- b.Serve(l) }()

	var conns []net.Conn
	for range 20 {
		c := dial(t, l.Addr().String())
		roundTrip(t, c, sim.TypeLogin, login)
		conns = append(conns, c)
	}
	// One connection mid-frame: header sent, body never comes.
	half := dial(t, l.Addr().String())
	half.Write([]byte{1, 1, 0, 0, 0, 50, '{'})
	waitFor(t, func() bool { return b.Stats().Accepted == 21 })

	begin := time.Now()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-served; err != nil {
		t.Fatalf("Serve after Close: %v", err)
	}
	if d := time.Since(begin); d > time.Second {
		t.Fatalf("Close took %v", d)
	}
	if s := b.Stats(); s.Active != 0 || s.Accepted != 21 {
		t.Errorf("stats after Close %+v", s)
	}
	for _, c := range append(conns, half) {
		expectClosed(t, c)
	}
	if _, err := net.DialTimeout("tcp", l.Addr().String(), time.Second); err == nil {
		t.Error("listener still accepting after Close")
	}
	if err := b.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestServeAfterClose(t *testing.T) {
	b := &demo.Backend{ID: "b1"}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Serve(l); err != nil {
		t.Fatalf("Serve after Close: %v", err)
	}
	if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("listener left open: %v", err)
	}
}

func TestServeManyListeners(t *testing.T) {
	b := &demo.Backend{ID: "b1"}
	a1, a2 := start(t, b), start(t, b)
	for _, a := range []string{a1, a2} {
		if _, body := roundTrip(t, dial(t, a), sim.TypeLogin, login); !strings.Contains(body, `"b1"`) {
			t.Fatalf("reply %s", body)
		}
	}
}

func TestBadConfig(t *testing.T) {
	cfg := frame.DefaultConfig()
	cfg.LengthFieldLength = 5
	b := &demo.Backend{ID: "b1", Frame: cfg}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Serve(l); !errors.Is(err, frame.ErrBadConfig) {
		t.Fatalf("Serve with a bad Config: %v", err)
	}
	b.Close()
}

// TestSeqReply: a numbered heartbeat is answered with the backend, the
// device id this connection logged in with, and its seq.
func TestSeqReply(t *testing.T) {
	b := &demo.Backend{ID: "b1"}
	addr := start(t, b)
	c := dial(t, addr)
	for _, tc := range []struct {
		typ        byte
		body, want string
	}{
		{sim.TypeHeartbeat, `{"seq":1}`, `{"backend":"b1","devid":"","seq":1}`}, // before any login
		{sim.TypeLogin, login, `{"backend":"b1","devid":"dev-000001"}`},
		{sim.TypeHeartbeat, `{"seq":2}`, `{"backend":"b1","devid":"dev-000001","seq":2}`},
		{7, ` {"x":[1,{"seq":5}], "seq" : 9223372036854775807 } `, `{"backend":"b1","devid":"dev-000001","seq":9223372036854775807}`},
		{sim.TypeHeartbeat, `{"seq":-3}`, `{"backend":"b1","devid":"dev-000001","seq":-3}`},
		{sim.TypeHeartbeat, `{"seq":"0042"}`, `{"backend":"b1","devid":"dev-000001","seq":42}`}, // read as the key is
		// Not an integer, or no seq: echoed.
		{sim.TypeHeartbeat, `{"seq":1.5}`, `{"seq":1.5}`},
		{sim.TypeHeartbeat, `{"seq":9223372036854775808}`, `{"seq":9223372036854775808}`},
		{sim.TypeHeartbeat, `{"seq":true}`, `{"seq":true}`},
		{sim.TypeHeartbeat, `{"seq":1,"seq":2}`, `{"seq":1,"seq":2}`},
		{sim.TypeHeartbeat, `{"seq":1`, `{"seq":1`},
		{sim.TypeHeartbeat, `{"hb":3}`, `{"hb":3}`},
		// A key makes it a login, seq or not; the connection's devid follows the last login.
		{sim.TypeLogin, `{"devid":"dev-2","seq":7}`, `{"backend":"b1","devid":"dev-2"}`},
		{sim.TypeHeartbeat, `{"seq":8}`, `{"backend":"b1","devid":"dev-2","seq":8}`},
	} {
		typ, body := roundTrip(t, c, tc.typ, tc.body)
		if typ != tc.typ || body != tc.want {
			t.Errorf("sent type %d %s: got type %d %s, want %s", tc.typ, tc.body, typ, body, tc.want)
		}
	}
	// Another connection has not logged in: its devid is its own.
	if _, body := roundTrip(t, dial(t, addr), sim.TypeHeartbeat, `{"seq":1}`); body != `{"backend":"b1","devid":"","seq":1}` {
		t.Errorf("fresh connection: %s", body)
	}
	if s := b.Stats(); s.Logins != 2 || s.Seqs != 7 || s.Frames != 15 {
		t.Errorf("stats %+v", s)
	}
}

// TestHalfCloseAnswersThenCloses: a gateway moving a device half-closes the
// old backend's connection after whole frames; the backend answers every
// frame it read, then closes its side.
func TestHalfCloseAnswersThenCloses(t *testing.T) {
	b := &demo.Backend{ID: "b1"}
	c := dial(t, start(t, b))
	const n = 2000 // replies (~100 KB) overflow the socket buffers before we read
	req := sim.AppendFrame(nil, sim.TypeLogin, 1, 0, []byte(login))
	for i := range n {
		req = sim.AppendFrame(req, sim.TypeHeartbeat, 1, 0, fmt.Appendf(nil, `{"seq":%d}`, i))
	}
	if _, err := c.Write(req); err != nil {
		t.Fatal(err)
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if _, body, err := readFrame(c); err != nil || !strings.Contains(string(body), `"devid":"dev-000001"`) {
		t.Fatalf("login reply %s, %v", body, err)
	}
	for i := range n {
		_, body, err := readFrame(c)
		want := fmt.Sprintf(`{"backend":"b1","devid":"dev-000001","seq":%d}`, i)
		if err != nil || string(body) != want {
			t.Fatalf("reply %d: %s, %v; want %s", i, body, err, want)
		}
	}
	if n, err := c.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("after the last answer: %d bytes, %v; want EOF", n, err)
	}
	waitFor(t, func() bool { return b.Stats().Active == 0 })
}
