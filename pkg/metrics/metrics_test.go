package metrics

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/devgate/devgate/internal/etcdserver"
	"github.com/devgate/devgate/pkg/demo"
	"github.com/devgate/devgate/pkg/proxy"
	"github.com/devgate/devgate/pkg/registry"
)

var testKeys = registry.Keys{Prefix: "/devgate-metrics", Cluster: "c1"}

// gateway is a proxy routing on a watcher of embedded etcd, in front of
// demo backends b1 and b2; b2 is drained, so every device lands on b1.
type gateway struct {
	proxy   *proxy.Proxy
	watcher *registry.Watcher
	addr    string
}

func startGateway(t *testing.T, hist prometheus.Histogram) *gateway {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cli := etcdserver.ClientT(t, etcdserver.StartT(t))
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	for _, id := range []string{"b1", "b2"} {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		b := &demo.Backend{ID: id}
		wg.Add(1)
		go func() { defer wg.Done(); b.Serve(l) }()
		t.Cleanup(func() { b.Close() })
		val, _ := json.Marshal(registry.BackendValue{Addr: l.Addr().String()})
		put(ctx, t, cli, testKeys.Backend(id), string(val))
	}
	put(ctx, t, cli, testKeys.Drain("b2"), `{"deadline":"2030-01-01T00:00:00Z","evictPerSecond":10}`)
	put(ctx, t, cli, testKeys.Backend("b3"), `not json`) // counted as a bad value

	w := &registry.Watcher{Client: cli, Keys: testKeys, Settle: 20 * time.Millisecond,
		ProgressInterval: 300 * time.Millisecond}
	wctx, wcancel := context.WithCancel(context.Background())
	wdone := make(chan struct{})
	go func() { defer close(wdone); w.Run(wctx) }()
	t.Cleanup(func() { wcancel(); <-wdone })
	select {
	case <-w.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("no first snapshot in 10s")
	}

	p := &proxy.Proxy{Source: w, PrereadTimeout: 2 * time.Second, DialTimeout: time.Second,
		OnPreread: ObserveSeconds(hist), Rehome: proxy.Rehome{Enabled: true}}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- p.Serve(l) }()
	t.Cleanup(func() {
		p.Close()
		if err := <-served; err != proxy.ErrServerClosed {
			t.Errorf("Serve returned %v", err)
		}
	})
	return &gateway{proxy: p, watcher: w, addr: l.Addr().String()}
}

func put(ctx context.Context, t *testing.T, cli *clientv3.Client, key, val string) {
	t.Helper()
	if _, err := cli.Put(ctx, key, val); err != nil {
		t.Fatal(err)
	}
}

// connect sends frame and returns the connection and the reply frame, or
// nil and the read error when the gateway closed it.
func (g *gateway) connect(t *testing.T, frame []byte) (net.Conn, []byte, error) {
	t.Helper()
	c, err := net.Dial("tcp", g.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(frame); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(c)
	h := make([]byte, 6)
	if _, err := io.ReadFull(r, h); err != nil {
		return nil, nil, err
	}
	body := make([]byte, int(h[4])<<8|int(h[5]))
	if _, err := io.ReadFull(r, body); err != nil {
		t.Fatal(err)
	}
	return c, append(h, body...), nil
}

func TestCollectorsOnALiveGateway(t *testing.T) {
	hist := NewPrereadHistogram()
	g := startGateway(t, hist)
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewProxyCollector(g.proxy), NewRegistryCollector(g.watcher), hist)

	// Before any traffic every known reason and cause is there, at 0.
	m := scrape(t, reg)
	for _, r := range []string{"not_json", "preread_timeout", "dial_failed", "evicted_drain", "evicted_gateway_drain"} {
		want(t, m, map[string]float64{`devgate_connections_closed_total{reason="` + r + `"}`: 0})
	}
	want(t, m, map[string]float64{`devgate_relogin_replaced_total`: 0})
	for _, c := range EvictionCauses {
		want(t, m, map[string]float64{`devgate_evictions_total{cause="` + string(c) + `"}`: 0})
	}

	// One good login, proxied to b1 (b2 is drained).
	good := login("dev-1")
	c1, reply, err := g.connect(t, good)
	if err != nil || !strings.Contains(string(reply), `"backend":"b1"`) {
		t.Fatalf("login: reply %q, %v", reply, err)
	}
	// A heartbeat through the pipe, echoed by the backend.
	hb := mkframe(2, `{"hb":1}`)
	if _, err := c1.Write(hb); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c1, make([]byte, len(hb))); err != nil {
		t.Fatalf("heartbeat echo: %v", err)
	}
	want(t, scrape(t, reg), map[string]float64{
		`devgate_connections_active`:                          1,
		`devgate_connections_proxied`:                         1,
		`devgate_backend_connections{backend="b1"}`:           1,
		`devgate_routed_total`:                                1,
		`devgate_connections_closed_total{reason="replaced"}`: 0,
		`devgate_connections_closed_total{reason="kicked"}`:   0,
	})

	// One bad frame: closed before any backend sees it.
	if c, _, err := g.connect(t, mkframe(1, "not json at all")); err == nil {
		t.Fatalf("bad frame answered on %v", c.LocalAddr())
	}
	// The same device again: the older connection is replaced.
	_, reply2, err := g.connect(t, good)
	if err != nil {
		t.Fatalf("second login: %v", err)
	}
	waitScrape(t, reg, "replaced", func(m map[string]float64) bool {
		return m[`devgate_connections_closed_total{reason="replaced"}`] == 1
	})
	// A drain evicts the newer one.
	if n := g.proxy.Evict("b1", 0, "drain"); n != 1 {
		t.Fatalf("Evict closed %d, want 1", n)
	}
	m = waitScrape(t, reg, "every connection closed", func(m map[string]float64) bool {
		return m[`devgate_connections_active`] == 0 && m[`devgate_connections_closed_total{reason="evicted_drain"}`] == 1
	})
	snap := g.watcher.Snapshot()
	want(t, m, map[string]float64{
		`devgate_connections_accepted_total`:                         3,
		`devgate_connections_active`:                                 0,
		`devgate_connections_proxied`:                                0,
		`devgate_routed_total`:                                       2,
		`devgate_fallbacks_total`:                                    0,
		`devgate_dial_failures_total`:                                0,
		`devgate_device_moved_total`:                                 0,
		`devgate_bytes_total{direction="out"}`:                       float64(len(reply) + len(hb) + len(reply2)),
		`devgate_connections_closed_total{reason="not_json"}`:        1,
		`devgate_connections_closed_total{reason="replaced"}`:        1,
		`devgate_connections_closed_total{reason="evicted_drain"}`:   1,
		`devgate_connections_closed_total{reason="client_closed"}`:   0,
		`devgate_connections_closed_total{reason="preread_timeout"}`: 0,
		`devgate_evictions_total{cause="drain"}`:                     1,
		`devgate_relogin_replaced_total`:                             1,
		`devgate_evictions_total{cause="rebalance"}`:                 0,
		`devgate_evictions_total{cause="gateway_drain"}`:             0,
		`devgate_preread_seconds_count`:                              3,
		`devgate_ring_revision`:                                      float64(snap.Revision),
		`devgate_ring_backends{state="active"}`:                      1,
		`devgate_ring_backends{state="draining"}`:                    1,
		`devgate_ring_backends{state="held"}`:                        0,
		`devgate_etcd_connected`:                                     1,
		`devgate_registry_relists_total`:                             1,
		`devgate_registry_bad_values_total`:                          1,
		`devgate_panic_holds_total`:                                  0,
		`devgate_registry_relist_reasons_total{reason="start"}`:      1,
		`devgate_registry_relist_reasons_total{reason="reconnect"}`:  0,
		`devgate_registry_regressions_total`:                         0,
		`devgate_panic_hold_extended_total`:                          0,
	})
	if _, ok := m[`devgate_evictions_total{cause="replaced"}`]; ok {
		t.Errorf("a relogin counted as an eviction")
	}
	if _, ok := m[`devgate_backend_connections{backend="b1"}`]; ok {
		t.Errorf("backend_connections still has b1 with no connection open")
	}
	// In: both login frames (written before the copy starts) and the
	// heartbeat; the bad frame never reached a backend.
	if in := m[`devgate_bytes_total{direction="in"}`]; in != float64(2*len(good)+len(hb)) || in != float64(g.proxy.Stats().BytesIn) {
		t.Errorf("bytes in %v; heartbeat %d, Stats().BytesIn %d", in, len(hb), g.proxy.Stats().BytesIn)
	}
	if d := m[`devgate_drain_deadline_timestamp_seconds{backend="b2"}`]; d <= 0 {
		t.Errorf("drain deadline of b2: %v", d)
	}
	if _, ok := m[`devgate_drain_deadline_timestamp_seconds{backend="b1"}`]; ok {
		t.Errorf("a drain deadline for b1, which is not draining")
	}
	if snap.Revision <= 0 {
		t.Errorf("snapshot revision %d", snap.Revision)
	}
	if s := m[`devgate_etcd_staleness_seconds`]; s < 0 || s > 5 {
		t.Errorf("staleness %vs", s)
	}
	if s := m[`devgate_preread_seconds_sum`]; s <= 0 || s > 5 {
		t.Errorf("preread sum %vs", s)
	}
	if m[`devgate_registry_builds_total`] < 1 {
		t.Errorf("builds %v", m[`devgate_registry_builds_total`])
	}
	lint(t, reg)

	// The same through the text format a Prometheus server scrapes.
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	text, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, line := range []string{
		`devgate_evictions_total{cause="drain"} 1`,
		`devgate_connections_closed_total{reason="not_json"} 1`,
		`devgate_preread_seconds_bucket{le="10"} 3`,
		`# TYPE devgate_ring_backends gauge`,
	} {
		if !strings.Contains(string(text), line+"\n") {
			t.Errorf("scrape has no line %q", line)
		}
	}
}
