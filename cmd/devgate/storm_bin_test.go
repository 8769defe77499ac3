package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/devgate/devgate/internal/etcdserver"
	"github.com/devgate/devgate/internal/testkit"
	"github.com/devgate/devgate/pkg/demo"
	"github.com/devgate/devgate/pkg/registry"
	"github.com/devgate/devgate/pkg/sim"
)

// The reconnect storm of issue 16, through two real `devgate serve`
// replicas on an embedded etcd: 3 backends registered with the meta
// loginsPerSecond=100, 600 devices that reconnect at once without backoff,
// and one backend closed with its registration left in etcd (as after a
// SIGKILL, before its lease expires: its devices' dials are refused and
// they fall back to their next owners in ring order). Its devices must
// reach the next owners at no more than 100/s per backend (+10%, measured
// at the backends over 500ms and 1s windows), none refused. The same run
// without pacing shows the peak it prevents. Then a fourth backend joins
// with slowStart=4s and takes new devices along the ramp.
//
// Timing on 2 shared cores: rates are counted at the backends over
// windows; the bound is the pace plus 10%, and the paced run's tail may
// be slower than the pace (one replica can hold more of a backend's
// devices than the other), which is reported, not asserted.
func TestStormThroughBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("storm: two replicas and 600 devices")
	}
	bin := devgateBin(t)
	unpaced := stormRun(t, bin, false)
	paced := stormRun(t, bin, true)
	for id, s := range paced.survivors {
		u := unpaced.survivors[id]
		t.Logf("backend %s: paced %d logins, mean %.0f/s, peak %.0f/s (100ms) %.0f/s (500ms) %d (1s); unpaced %d logins, mean %.0f/s, peak %.0f/s (100ms) %.0f/s (500ms) %d (1s)",
			id, s.n, s.mean, s.peak100, s.peak500, s.peak1s, u.n, u.mean, u.peak100, u.peak500, u.peak1s)
	}
	t.Logf("all back after the kill: paced %v, unpaced %v; refused: paced %d, unpaced %d",
		paced.allBack, unpaced.allBack, paced.refused, unpaced.refused)

	if paced.refused != 0 {
		t.Errorf("paced: %d device logins refused, want 0", paced.refused)
	}
	for id, s := range paced.survivors {
		if s.peak500 > 110 || s.peak1s > 110 {
			t.Errorf("paced: backend %s peaked at %.0f/s over 500ms, %d over 1s; want at most 100/s +10%%", id, s.peak500, s.peak1s)
		}
	}
	peak := 0.0
	for _, s := range unpaced.survivors {
		peak = max(peak, s.peak100)
	}
	if peak <= 110 {
		t.Errorf("unpaced peak %.0f/s: the storm is too small to tell pacing from none", peak)
	}
}

type backendRates struct {
	n                      int
	mean, peak100, peak500 float64
	peak1s                 int
	perSecondWindow        []int
}

type stormResult struct {
	survivors map[string]backendRates
	allBack   time.Duration
	refused   int64
}

// stormRun is one run: paced (meta loginsPerSecond=100 on every backend)
// or not.
func stormRun(t *testing.T, bin string, paced bool) stormResult {
	t.Helper()
	name := map[bool]string{true: "paced", false: "unpaced"}[paced]
	etcd := etcdserver.StartT(t)
	cli := etcdserver.ClientT(t, etcd)
	prefix := "/storm-" + name
	keys := registry.Keys{Prefix: prefix, Cluster: "c"}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	logs := map[string]*testkit.AcceptLog{}
	backends := map[string]*demo.Backend{}
	var bwg sync.WaitGroup
	t.Cleanup(bwg.Wait)
	addBackend := func(id string, meta map[string]string) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		al := &testkit.AcceptLog{Listener: l}
		b := &demo.Backend{ID: id, MaxConns: -1}
		logs[id], backends[id] = al, b
		bwg.Add(1)
		go func() { defer bwg.Done(); b.Serve(al) }()
		t.Cleanup(func() { b.Close() })
		reg, err := registry.RegisterBackend(ctx, cli, keys, id, registry.BackendValue{Addr: l.Addr().String(), Meta: meta},
			registry.RegisterOptions{TTL: 30 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { reg.Close() })
	}
	meta := func(extra ...string) map[string]string {
		if !paced {
			return nil
		}
		m := map[string]string{"loginsPerSecond": "100"}
		for i := 0; i+1 < len(extra); i += 2 {
			m[extra[i]] = extra[i+1]
		}
		return m
	}
	for _, id := range []string{"b1", "b2", "b3"} {
		addBackend(id, meta())
	}

	dir := t.TempDir()
	var gws, https []string
	for i := 1; i <= 2; i++ {
		listen, admin, httpAddr := freeAddrOn(t, "127.0.0.1"), freeAddrOn(t, "127.0.0.1"), freeAddrOn(t, "127.0.0.1")
		cfg := writeFile(t, dir, fmt.Sprintf("gw%d.yaml", i), fmt.Sprintf(`listen: %s
etcd: {endpoints: [%s], prefix: %s, cluster: c}
gateway: {id: gw-%d}
admin: {listen: %s, httpListen: %s}
limits: {maxConnectionsPerIP: -1, acceptRatePerIP: -1}
admission: {maxWait: 30s, slowStart: 60s}
log: {level: warn}
`, listen, etcd.Endpoint(), prefix, i, admin, httpAddr))
		startChild(t, bin, "serve", "--config", cfg, "--grace", "1s")
		gws, https = append(gws, listen), append(https, httpAddr)
	}
	for _, h := range https {
		until(t, 30*time.Second, "gateway ready", func() bool { code, _ := get(h, "/readyz"); return code == 200 })
	}

	// The devices: each logs in through the replicas in turn, and at once
	// again whenever its connection ends.
	var (
		connected, refused atomic.Int64
		killedAt, lastBack atomic.Int64 // unix nanos
		mu                 sync.Mutex
		conns              = map[net.Conn]struct{}{}
		on                 = map[string]string{} // device -> backend
		dwg                sync.WaitGroup
	)
	dctx, dcancel := context.WithCancel(ctx)
	stopDevices := func() {
		dcancel()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		dwg.Wait()
	}
	defer stopDevices()
	device := func(i int, id string) {
		defer dwg.Done()
		for attempt := i; dctx.Err() == nil; attempt++ {
			c, backend, err := stormLogin(dctx, gws[attempt%2], id)
			if err != nil {
				if dctx.Err() == nil {
					refused.Add(1)
				}
				continue
			}
			mu.Lock()
			conns[c], on[id] = struct{}{}, backend
			mu.Unlock()
			connected.Add(1)
			if killedAt.Load() != 0 {
				lastBack.Store(time.Now().UnixNano())
			}
			io.Copy(io.Discard, c)
			connected.Add(-1)
			mu.Lock()
			delete(conns, c)
			mu.Unlock()
			c.Close()
		}
	}
	const n = 600
	for i := range n {
		dwg.Add(1)
		go device(i, fmt.Sprintf("storm-%d", i))
	}
	until(t, 60*time.Second, "600 devices in", func() bool { return connected.Load() == n })
	if paced { // both replicas split each pace: 50/s each
		for _, h := range https {
			until(t, 20*time.Second, "the pace split over 2 replicas", func() bool {
				m := testkit.Scrape(t, "http://"+h+"/metrics")
				return m[`devgate_admission_rate{backend="b1"}`] == 50 && m[`devgate_admission_rate{backend="b2"}`] == 50 &&
					m[`devgate_admission_rate{backend="b3"}`] == 50
			})
		}
	}
	mu.Lock()
	lost := 0
	for _, b := range on {
		if b == "b1" {
			lost++
		}
	}
	mu.Unlock()

	kill := time.Now()
	killedAt.Store(kill.UnixNano())
	backends["b1"].Close() // its registration stays: SIGKILL before the lease expires
	until(t, 60*time.Second, "every device back", func() bool {
		mu.Lock()
		defer mu.Unlock()
		left := 0
		for _, b := range on {
			if b == "b1" {
				left++
			}
		}
		return left == 0 && connected.Load() == n
	})
	res := stormResult{survivors: map[string]backendRates{}, allBack: time.Duration(lastBack.Load() - kill.UnixNano()), refused: refused.Load()}
	for _, id := range []string{"b2", "b3"} {
		ts := logs[id].Since(kill)
		r := backendRates{n: len(ts), mean: testkit.Rate(ts), peak500: float64(peakIn(ts, 500*time.Millisecond)) * 2,
			peak100: float64(peakIn(ts, 100*time.Millisecond)) * 10,
			peak1s:  peakIn(ts, time.Second)}
		if len(ts) > 0 {
			r.perSecondWindow = testkit.PerWindow(ts, ts[0], time.Second)
		}
		res.survivors[id] = r
	}
	t.Logf("%s: %d devices of b1 back on b2, b3 in %v (%d refused); logins after the kill: b2 %+v, b3 %+v",
		name, lost, res.allBack, res.refused, res.survivors["b2"], res.survivors["b3"])
	if !paced {
		return res
	}

	// Slow start: b4 joins with a 4s ramp; new devices that it owns come
	// in at 10% of its pace, rising to 100% over 4s.
	addBackend("b4", meta("slowStart", "4s"))
	for _, h := range https {
		until(t, 20*time.Second, "b4 in the ring", func() bool {
			return testkit.Scrape(t, "http://"+h+"/metrics")[`devgate_ring_backends{state="active"}`] == 4
		})
	}
	joined := time.Now()
	for i := range 500 {
		dwg.Add(1)
		go device(i, fmt.Sprintf("late-%d", i))
	}
	until(t, 60*time.Second, "late devices in", func() bool { return connected.Load() == n+500 })
	ts := logs["b4"].Since(joined)
	w := testkit.PerWindow(ts, joined, time.Second)
	t.Logf("slow start: b4 (100/s, ramp 4s) took %d logins; per second after its join: %v", len(ts), w)
	if len(w) < 3 || w[0] > 40 || w[0] >= w[1] {
		t.Errorf("b4's logins per second %v: want a ramp from about 10-30/s in its first second", w)
	}
	if refused.Load() != 0 {
		t.Errorf("%d device logins refused, want 0", refused.Load())
	}
	// /metrics: the backends' logins are the pacing's, some waited, none
	// timed out.
	var admitted, waited, timedOut, waiting float64
	for _, h := range https {
		m := testkit.Scrape(t, "http://"+h+"/metrics")
		for _, id := range []string{"b2", "b3", "b4"} {
			admitted += m[`devgate_admission_admitted_total{backend="`+id+`"}`]
			waiting += m[`devgate_admission_waiting{backend="`+id+`"}`]
		}
		waited += m[`devgate_admission_wait_seconds_count`]
		timedOut += m[`devgate_connections_closed_total{reason="admission_timeout"}`]
	}
	took := len(logs["b2"].Times()) + len(logs["b3"].Times()) + len(logs["b4"].Times())
	t.Logf("metrics: admitted %v (backends took %d), waited %v, timed out %v, waiting %v", admitted, took, waited, timedOut, waiting)
	if int(admitted) != took || waited == 0 || timedOut != 0 || waiting != 0 {
		t.Errorf("metrics: admitted %v for %d logins at the backends, %v waited, %v timed out, %v waiting", admitted, took, waited, timedOut, waiting)
	}
	return res
}

// peakIn is the most of ts (sorted) within any window of w.
func peakIn(ts []time.Time, w time.Duration) int {
	sort.Slice(ts, func(i, j int) bool { return ts[i].Before(ts[j]) })
	best, j := 0, 0
	for i := range ts {
		for ts[i].Sub(ts[j]) >= w {
			j++
		}
		best = max(best, i-j+1)
	}
	return best
}

// stormLogin logs devid in through addr and returns the connection and the
// backend that answered; the wait covers the longest admission wait.
func stormLogin(ctx context.Context, addr, devid string) (net.Conn, string, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, "", err
	}
	conn.SetDeadline(time.Now().Add(40 * time.Second))
	login := sim.AppendFrame(nil, sim.TypeLogin, 1, 0, []byte(fmt.Sprintf(`{"devid":%q}`, devid)))
	var hdr [sim.HeaderLen]byte
	if _, err = conn.Write(login); err == nil {
		_, err = io.ReadFull(conn, hdr[:])
	}
	body := make([]byte, int(hdr[4])<<8|int(hdr[5]))
	if err == nil {
		_, err = io.ReadFull(conn, body)
	}
	var reply struct{ Backend string }
	if err == nil {
		err = json.Unmarshal(body, &reply)
	}
	if err != nil {
		conn.Close()
		return nil, "", err
	}
	conn.SetDeadline(time.Time{})
	return conn, reply.Backend, nil
}
