package proxy

import (
	"bufio"
	"fmt"
	"net"
	"runtime"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/devgate/devgate/internal/testkit"
	"github.com/devgate/devgate/pkg/demo"
	"github.com/devgate/devgate/pkg/ring"
)

// pacedCluster is demo backends behind a proxy, each backend's accepts
// recorded (its login rate, measured at the backend).
type pacedCluster struct {
	t     *testing.T
	proxy *Proxy
	addr  string
	ring  *AtomicRing
	logs  map[string]*testkit.AcceptLog
}

// newPacedCluster starts a backend for each of bs (an empty Addr gets a
// listener; a set one is kept, as a dead address) and a proxy.
func newPacedCluster(t *testing.T, bs []ring.Backend, configure func(*Proxy)) *pacedCluster {
	t.Helper()
	c := &pacedCluster{t: t, logs: map[string]*testkit.AcceptLog{}}
	var wg sync.WaitGroup
	var backends []*demo.Backend
	for i := range bs {
		if bs[i].Addr != "" {
			continue
		}
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		al := &testkit.AcceptLog{Listener: l}
		b := &demo.Backend{ID: bs[i].ID}
		backends = append(backends, b)
		c.logs[b.ID] = al
		bs[i].Addr = l.Addr().String()
		wg.Add(1)
		go func() { defer wg.Done(); b.Serve(al) }()
	}
	c.ring = ringOf(t, bs...)
	c.proxy = &Proxy{Source: c.ring, PrereadTimeout: 2 * time.Second, DialTimeout: time.Second,
		MaxConnsPerIP: -1, AcceptRatePerIP: -1, Goroutines: onGoroutines(t)}
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
		for _, b := range backends {
			b.Close()
		}
		wg.Wait()
	})
	return c
}

// storm logs n devices in at once (dev-<i>); each result is when its
// login was answered, or the error that ended it. The connections are
// closed when the test ends.
func (c *pacedCluster) storm(n int, prefix string, wait time.Duration) (answered []time.Time, errs []error) {
	c.t.Helper()
	answered, errs = make([]time.Time, n), make([]error, n)
	conns := make([]net.Conn, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conns[i], answered[i], errs[i] = loginOnce(c.addr, fmt.Sprintf("%s-%d", prefix, i), wait)
		}()
	}
	wg.Wait()
	c.t.Cleanup(func() {
		for _, cn := range conns {
			if cn != nil {
				cn.Close()
			}
		}
	})
	return answered, errs
}

// loginOnce dials addr, sends devid's login and waits for its answer.
func loginOnce(addr, devid string, wait time.Duration) (net.Conn, time.Time, error) {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, time.Time{}, err
	}
	conn.SetDeadline(time.Now().Add(wait))
	if _, err := conn.Write(login(devid)); err != nil {
		return conn, time.Time{}, err
	}
	if _, _, err := readFrame(bufio.NewReader(conn)); err != nil {
		return conn, time.Time{}, err
	}
	conn.SetDeadline(time.Time{})
	return conn, time.Now(), nil
}

func noErrors(t *testing.T, errs []error) {
	t.Helper()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("device %d: %v", i, err)
		}
	}
}

// A paced backend takes logins at its pace, measured at the backend, and
// the pacing forgets nobody: every device is answered, none waits after.
func TestPacingRate(t *testing.T) {
	bothPaths(t, func(t *testing.T) {
		c := newPacedCluster(t, []ring.Backend{{ID: "b1"}}, func(p *Proxy) { p.Admission.LoginsPerSecond = 100 })
		fds := openFDs(t)
		_, errs := c.storm(250, "dev", 10*time.Second)
		noErrors(t, errs)
		ts := c.logs["b1"].Times()
		rate := testkit.Rate(ts)
		t.Logf("%d logins at %.1f/s (pace 100/s); per 500ms: %v", len(ts), rate, testkit.PerWindow(ts, ts[0], 500*time.Millisecond))
		if rate < 90 || rate > 110 {
			t.Errorf("rate %.1f/s, want 100 +-10%%", rate)
		}
		st := c.proxy.AdmissionStats()["b1"]
		if st.Admitted != 250 || st.Waiting != 0 {
			t.Errorf("admission stats %+v, want 250 admitted, 0 waiting", st)
		}
		if fds0 := openFDs(t); fds0 < fds {
			t.Logf("fds %d -> %d", fds, fds0)
		}
	})
}

// Each replica takes its share of the fleet-wide pace.
func TestPacingSplitsOverReplicas(t *testing.T) {
	c := newPacedCluster(t, []ring.Backend{{ID: "b1", Meta: map[string]string{MetaLoginsPerSecond: "100"}}}, nil)
	c.proxy.SetAdmissionFleet(2, nil)
	_, errs := c.storm(100, "dev", 10*time.Second)
	noErrors(t, errs)
	ts := c.logs["b1"].Times()
	rate := testkit.Rate(ts)
	t.Logf("one of 2 replicas: %d logins at %.1f/s (fleet pace 100/s from meta)", len(ts), rate)
	if rate < 45 || rate > 55 {
		t.Errorf("rate %.1f/s, want 50 +-10%%", rate)
	}
}

// Devices waiting for the same backend get their turns in the order they
// came.
func TestPacingFIFO(t *testing.T) {
	bothPaths(t, func(t *testing.T) {
		c := newPacedCluster(t, []ring.Backend{{ID: "b1"}}, func(p *Proxy) { p.Admission.LoginsPerSecond = 20 })
		const n = 12
		answered := make([]time.Time, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			// One at a time into the pacer: a device's login is read (it
			// is let through or waits) before the next dials.
			wg.Add(1)
			go func() {
				defer wg.Done()
				var conn net.Conn
				conn, answered[i], errs[i] = loginOnce(c.addr, fmt.Sprintf("dev-%d", i), 10*time.Second)
				if conn != nil {
					defer conn.Close()
				}
			}()
			want := int64(i)
			waitFor(t, "device in the pacer", func() bool {
				st := c.proxy.AdmissionStats()["b1"]
				return int64(st.Admitted)+st.Waiting > want
			})
		}
		wg.Wait()
		noErrors(t, errs)
		if !sort.SliceIsSorted(answered, func(i, j int) bool { return answered[i].Before(answered[j]) }) {
			t.Errorf("answers out of the order the devices came in: %v", answered)
		}
	})
}

// A device that waits past MaxWait is refused as admission_timeout,
// counted; nothing is left behind (goleak in TestMain; fds).
func TestPacingMaxWait(t *testing.T) {
	bothPaths(t, func(t *testing.T) {
		c := newPacedCluster(t, []ring.Backend{{ID: "b1"}}, func(p *Proxy) {
			p.Admission = Admission{LoginsPerSecond: 0.5, MaxWait: 300 * time.Millisecond}
		})
		first, _, err := loginOnce(c.addr, "first", 5*time.Second) // takes the one token
		if err != nil {
			t.Fatal(err)
		}
		defer first.Close()
		fds := openFDs(t)
		start := time.Now()
		_, errs := c.storm(5, "dev", 5*time.Second)
		took := time.Since(start)
		for i, err := range errs {
			if err == nil {
				t.Fatalf("device %d was let through; want every one refused (MaxWait 300ms, next token in 2s)", i)
			}
		}
		if took > 3*time.Second {
			t.Errorf("refusals took %v, want about MaxWait", took)
		}
		waitFor(t, "counted", func() bool { return c.proxy.Stats().Closed[ReasonAdmissionTimeout] == 5 })
		waitFor(t, "nobody waits", func() bool { return c.proxy.AdmissionStats()["b1"].Waiting == 0 })
		if n := len(c.logs["b1"].Times()); n != 1 {
			t.Errorf("backend took %d logins, want 1", n)
		}
		// Only the test's 5 device sockets (closed when it ends) are left:
		// a waiter's socket left open in the gateway would show.
		waitFor(t, "fds back", func() bool { return openFDs(t) <= fds+5 })
	})
}

// A device that leaves while it waits gives its place up: it is counted
// as client_gone, and the next in line gets the turn it would have had.
func TestPacingDeviceLeavesWhileWaiting(t *testing.T) {
	bothPaths(t, func(t *testing.T) {
		c := newPacedCluster(t, []ring.Backend{{ID: "b1"}}, func(p *Proxy) { p.Admission.LoginsPerSecond = 2 })
		first, _, err := loginOnce(c.addr, "first", 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer first.Close()
		gone, err := net.Dial("tcp", c.addr)
		if err != nil {
			t.Fatal(err)
		}
		gone.Write(login("gone"))
		waitFor(t, "waiting", func() bool { return c.proxy.AdmissionStats()["b1"].Waiting == 1 })
		gone.Close()
		if !onGoroutines(t) { // the loops see the hang-up; a goroutine sees it at its turn
			waitFor(t, "counted gone", func() bool { return c.proxy.Stats().Closed[ReasonClientGone] == 1 })
			waitFor(t, "left the queue", func() bool { return c.proxy.AdmissionStats()["b1"].Waiting == 0 })
		}
		next, _, err := loginOnce(c.addr, "next", 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		next.Close()
		if !onGoroutines(t) {
			if n := len(c.logs["b1"].Times()); n != 2 {
				t.Errorf("backend took %d logins, want 2 (first, next)", n)
			}
		}
	})
}

// A dial that fails gives its token back: a dead owner's pace does not hold
// its devices back from the next owner, whose pace applies.
func TestPacingDeadOwnerDoesNotHoldBack(t *testing.T) {
	bothPaths(t, func(t *testing.T) {
		dead, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		deadAddr := dead.Addr().String()
		dead.Close()
		c := newPacedCluster(t, []ring.Backend{
			{ID: "dead", Addr: deadAddr, Meta: map[string]string{MetaLoginsPerSecond: "1"}},
			{ID: "b2", Meta: map[string]string{MetaLoginsPerSecond: "1000"}},
		}, nil)
		start := time.Now()
		_, errs := c.storm(40, "dev", 10*time.Second)
		noErrors(t, errs)
		if took := time.Since(start); took > 5*time.Second {
			t.Errorf("40 devices took %v; the dead owner's 1/s held them back", took)
		}
		st := c.proxy.AdmissionStats()
		t.Logf("took %v; admission %+v", time.Since(start), st)
	})
}

// A backend that joined ramps from 10% of its pace to 100% over its slow
// start.
func TestPacingSlowStart(t *testing.T) {
	c := newPacedCluster(t, []ring.Backend{{ID: "b1", Meta: map[string]string{MetaSlowStart: "2s"}}}, func(p *Proxy) {
		p.Admission.LoginsPerSecond = 100
	})
	c.proxy.SetAdmissionFleet(1, []string{"b1"})
	joined := time.Now()
	_, errs := c.storm(260, "dev", 15*time.Second)
	noErrors(t, errs)
	ts := c.logs["b1"].Times()
	w := testkit.PerWindow(ts, joined, 500*time.Millisecond)
	rates := make([]float64, len(w))
	for i, n := range w {
		rates[i] = float64(n) * 2
	}
	t.Logf("logins/s per 500ms after the join (ramp 10 -> 100/s over 2s): %v", rates)
	// Expected per 500ms: about 11, 22, 33, 44, then 50.
	if len(w) < 6 {
		t.Fatalf("windows %v: too few", w)
	}
	if !(w[0] < w[1] && w[1] < w[2] && w[2] < w[3]) {
		t.Errorf("no ramp over the first 2s: %v", w)
	}
	if w[0] > 20 || w[0] < 5 {
		t.Errorf("first 500ms took %d logins, want about 11 (10%% -> 30%% of 100/s)", w[0])
	}
	if first2s := w[0] + w[1] + w[2] + w[3]; first2s < 90 || first2s > 135 {
		t.Errorf("first 2s took %d logins, want about 110", first2s)
	}
	if w[4] < 43 || w[4] > 57 {
		t.Errorf("after the ramp %d logins per 500ms, want 50 +-10%%", w[4])
	}
}

// On the loops a waiting device costs its one socket in the gateway: no
// goroutine, no backend socket.
func TestPacingWaitCostsNoGoroutineNorBackendFD(t *testing.T) {
	c := newPacedCluster(t, []ring.Backend{{ID: "b1"}}, func(p *Proxy) {
		p.Admission = Admission{LoginsPerSecond: 0.1, MaxWait: time.Minute}
	})
	first, _, err := loginOnce(c.addr, "first", 5*time.Second) // takes the token; starts the loops
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	const n = 200
	fds, gs := openFDs(t), runtime.NumGoroutine()
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, cn := range conns {
			cn.Close()
		}
	}()
	for i := range n {
		cn, err := net.Dial("tcp", c.addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, cn)
		cn.Write(login(fmt.Sprintf("dev-%d", i)))
	}
	waitFor(t, "all waiting", func() bool { return c.proxy.AdmissionStats()["b1"].Waiting == n })
	dfd, dg := openFDs(t)-fds, runtime.NumGoroutine()-gs
	t.Logf("%d waiting devices: %d more fds (the test's and the gateway's socket of each), %d more goroutines", n, dfd, dg)
	if dfd > 2*n+10 || dg > 10 {
		t.Errorf("%d waiting devices took %d fds and %d goroutines; want 2 fds each (device and gateway side), no goroutine", n, dfd, dg)
	}
	for _, cn := range conns {
		cn.Close()
	}
	conns = nil
	waitFor(t, "all gone", func() bool {
		return c.proxy.AdmissionStats()["b1"].Waiting == 0 && c.proxy.Stats().Closed[ReasonClientGone] == n
	})
	if got := len(c.logs["b1"].Times()); got != 1 {
		t.Errorf("backend took %d logins, want 1", got)
	}
}

// The stats list every paced backend in the ring before its first login
// (one that joined, or came back from a drain), with its own pace; with
// no pace anywhere they list none.
func TestAdmissionStatsBeforeFirstLogin(t *testing.T) {
	c := newPacedCluster(t, []ring.Backend{{ID: "b1"}, {ID: "b2", Meta: map[string]string{MetaLoginsPerSecond: "40"}}},
		func(p *Proxy) { p.Admission.LoginsPerSecond = 100 })
	st := c.proxy.AdmissionStats()
	if len(st) != 2 || st["b1"].Rate != 100 || st["b2"].Rate != 40 || st["b1"].Admitted != 0 {
		t.Fatalf("stats before any login %+v, want b1 at 100/s and b2 at 40/s", st)
	}
	off := newPacedCluster(t, []ring.Backend{{ID: "b1"}}, nil)
	if st := off.proxy.AdmissionStats(); len(st) != 0 {
		t.Fatalf("unpaced stats %+v, want none", st)
	}
}
