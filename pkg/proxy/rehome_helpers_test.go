package proxy

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/devgate/devgate/pkg/ring"
)

// Test parts for moves: a backend that says who answered and which device
// logged in on the connection, and a device that sends numbered heartbeats
// and checks every answer.

// hbBackend answers a login {"devid"} with {"backend","devid"} (type 1) and
// a heartbeat {"seq"} with {"backend","devid","seq"} (type 2), devid being
// the one that logged in on that connection ("" if none did).
type hbBackend struct {
	id, addr   string
	l          net.Listener
	neverClose atomic.Bool // keep a connection open after the gateway's FIN
	optOut     bool        // no rehome=login in its registration
	logins     atomic.Int64

	mu    sync.Mutex
	conns map[net.Conn]string
	wg    sync.WaitGroup
	quit  chan struct{}
}

func newHBBackend(t *testing.T, id string) *hbBackend {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &hbBackend{id: id, addr: l.Addr().String(), l: l, conns: map[net.Conn]string{}, quit: make(chan struct{})}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			b.mu.Lock()
			b.conns[c] = ""
			b.mu.Unlock()
			b.wg.Add(1)
			go b.serve(c)
		}
	}()
	t.Cleanup(b.kill)
	return b
}

func (b *hbBackend) backend() ring.Backend {
	rb := ring.Backend{ID: b.id, Addr: b.addr}
	if !b.optOut {
		rb.Meta = map[string]string{MetaRehome: RehomeLogin}
	}
	return rb
}

func (b *hbBackend) serve(c net.Conn) {
	defer b.wg.Done()
	defer c.Close()
	r := bufio.NewReader(c)
	devid := ""
	for {
		_, body, err := readFrame(r)
		if err != nil {
			if err == io.EOF && b.neverClose.Load() {
				<-b.quit
			}
			return
		}
		var m struct {
			Devid *string
			Seq   *int
		}
		json.Unmarshal(body, &m)
		var out []byte
		switch {
		case m.Devid != nil:
			devid = *m.Devid
			b.mu.Lock()
			b.conns[c] = devid
			b.mu.Unlock()
			b.logins.Add(1)
			out = mkframe(1, fmt.Sprintf(`{"backend":%q,"devid":%q}`, b.id, devid))
		case m.Seq != nil:
			out = mkframe(2, fmt.Sprintf(`{"backend":%q,"devid":%q,"seq":%d}`, b.id, devid, *m.Seq))
		default:
			out = mkframe(3, string(body))
		}
		if _, err := c.Write(out); err != nil {
			return
		}
	}
}

// kill closes the listener and every connection, as a crash would.
func (b *hbBackend) kill() {
	b.l.Close()
	b.mu.Lock()
	for c := range b.conns {
		c.Close()
	}
	b.mu.Unlock()
	select {
	case <-b.quit:
	default:
		close(b.quit)
	}
	b.wg.Wait()
}

// closeDevice closes devid's connection on purpose (the backend stays up).
func (b *hbBackend) closeDevice(devid string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	for c, d := range b.conns {
		if d == devid {
			c.Close()
			delete(b.conns, c)
			return true
		}
	}
	return false
}

// hbDevice logs in and sends numbered heartbeats; its reader checks that
// each is answered once, in order, by a backend that saw its login.
type hbDevice struct {
	id   string
	conn net.Conn
	sent atomic.Int64

	mu       sync.Mutex
	answered int64 // answers, each for a later seq than the one before
	lastSeq  int64
	backends []string // the backend of each answer where it changed
	problems []string
	closed   error // how the connection ended, if it did
	readDone chan struct{}
}

func dialHBDevice(t *testing.T, addr, id string) *hbDevice {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.Write(login(id)); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(c)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, body, err := readFrame(r)
	if err != nil {
		t.Fatalf("%s: login: %v", id, err)
	}
	c.SetReadDeadline(time.Time{})
	var rep struct{ Backend, Devid string }
	json.Unmarshal(body, &rep)
	d := &hbDevice{id: id, conn: c, backends: []string{rep.Backend}, readDone: make(chan struct{})}
	go d.read(r)
	return d
}

func (d *hbDevice) read(r *bufio.Reader) {
	defer close(d.readDone)
	for {
		typ, body, err := readFrame(r)
		if err != nil {
			d.mu.Lock()
			d.closed = err
			d.mu.Unlock()
			return
		}
		var a struct {
			Backend, Devid string
			Seq            int64
		}
		json.Unmarshal(body, &a)
		d.mu.Lock()
		d.answered++
		switch {
		case typ != 2:
			d.problems = append(d.problems, fmt.Sprintf("frame of type %d: %s", typ, body))
		case a.Seq <= d.lastSeq:
			d.problems = append(d.problems, fmt.Sprintf("seq %d answered after seq %d", a.Seq, d.lastSeq))
		case a.Devid != d.id:
			d.problems = append(d.problems, fmt.Sprintf("seq %d answered by %s for device %q", a.Seq, a.Backend, a.Devid))
		}
		d.lastSeq = max(d.lastSeq, a.Seq)
		if last := d.backends[len(d.backends)-1]; a.Backend != last {
			d.backends = append(d.backends, a.Backend)
		}
		d.mu.Unlock()
	}
}

// beat sends the next heartbeat.
func (d *hbDevice) beat() error {
	n := d.sent.Add(1)
	_, err := d.conn.Write(mkframe(2, fmt.Sprintf(`{"seq":%d}`, n)))
	return err
}

// settle waits until every heartbeat sent is answered or the connection ends.
func (d *hbDevice) settle(t *testing.T) {
	t.Helper()
	waitFor(t, d.id+" answered", func() bool {
		d.mu.Lock()
		defer d.mu.Unlock()
		return d.lastSeq == d.sent.Load() || d.closed != nil
	})
}

func (d *hbDevice) state() (answered int64, backends []string, problems []string, closed error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.answered, append([]string(nil), d.backends...), append([]string(nil), d.problems...), d.closed
}

// beatAll sends heartbeats from every device every interval until stop.
func beatAll(devs []*hbDevice, interval time.Duration, stop <-chan struct{}) *sync.WaitGroup {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			for _, d := range devs {
				d.beat()
			}
		}
	}()
	return &wg
}

// moveCluster is a proxy with moves on in front of hbBackends.
type moveCluster struct {
	t        *testing.T
	backends map[string]*hbBackend
	ring     *AtomicRing
	proxy    *Proxy
	addr     string
}

func newMoveCluster(t *testing.T, ids []string, configure func(*Proxy)) *moveCluster {
	t.Helper()
	c := &moveCluster{t: t, backends: map[string]*hbBackend{}, ring: &AtomicRing{}}
	for _, id := range ids {
		c.backends[id] = newHBBackend(t, id)
	}
	c.route(ids...)
	c.proxy = &Proxy{Source: c.ring, PrereadTimeout: 2 * time.Second, DialTimeout: time.Second,
		MaxConnsPerIP: -1, AcceptRatePerIP: -1, Goroutines: onGoroutines(t),
		Rehome: Rehome{Enabled: true, Timeout: 3 * time.Second}}
	if configure != nil {
		configure(c.proxy)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c.addr = l.Addr().String()
	done := make(chan error, 1)
	go func() { done <- c.proxy.Serve(l) }()
	t.Cleanup(func() {
		c.proxy.Close()
		<-done
	})
	return c
}

// route puts backends ids (and only them) on the ring.
func (c *moveCluster) route(ids ...string) {
	c.t.Helper()
	var bs []ring.Backend
	for _, id := range ids {
		bs = append(bs, c.backends[id].backend())
	}
	r, err := ring.New(ring.ModeConsistent, bs)
	if err != nil {
		c.t.Fatal(err)
	}
	c.ring.Store(r)
}

// devices logs in n devices and returns them with the backend each reached.
func (c *moveCluster) devices(n int) []*hbDevice {
	c.t.Helper()
	var out []*hbDevice
	for i := range n {
		out = append(out, dialHBDevice(c.t, c.addr, fmt.Sprintf("dev-%d", i)))
	}
	waitFor(c.t, "all proxied", func() bool { return c.proxy.Proxied() == int64(n) })
	return out
}

// rehomes returns the count of moves for cause ending in r.
func (c *moveCluster) rehomes(cause Cause, r MoveResult) uint64 {
	return c.proxy.Stats().Rehomes[MoveKey{cause, r}]
}

// warm starts the proxy's loops (their epoll and wake fds) with one device
// that comes and goes, so fd counts taken after it compare like with like.
func (c *moveCluster) warm() {
	c.t.Helper()
	d := dialHBDevice(c.t, c.addr, "warm-up")
	d.conn.Close()
	<-d.readDone
	waitFor(c.t, "warm-up gone", func() bool { return c.proxy.Stats().Active == 0 })
}
