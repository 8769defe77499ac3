package metrics

import (
	"context"
	"io"
	"net"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/devgate/devgate/internal/testkit"
	"github.com/devgate/devgate/pkg/admin"
	"github.com/devgate/devgate/pkg/demo"
	"github.com/devgate/devgate/pkg/proxy"
	"github.com/devgate/devgate/pkg/ring"
)

// serveAdminHTTP serves g on a real admin HTTP server on loopback and
// returns the /metrics URL.
func serveAdminHTTP(t *testing.T, g prometheus.Gatherer) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := admin.NewHTTPServer(l.Addr().String(), admin.NewHTTPHandler(admin.HTTPOptions{
		Gatherer: g, Ready: func() (bool, string) { return true, "ok" }}))
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(l) }()
	t.Cleanup(func() { srv.Close(); <-done })
	return "http://" + l.Addr().String() + "/metrics"
}

// TestBytesMoveWhileOpen holds one proxied connection open, moves bytes
// both ways, and scrapes a real admin HTTP server: devgate_bytes_total
// counts them before the connection closes, on both copy paths.
func TestBytesMoveWhileOpen(t *testing.T) {
	for _, mode := range []struct {
		name string
		opts func(*proxy.Proxy)
	}{
		{"goroutines", func(p *proxy.Proxy) { p.Goroutines = true }},
		{"goroutines-idle", func(p *proxy.Proxy) { p.Goroutines, p.IdleTimeout = true, time.Minute }},
		{"eventloop", func(*proxy.Proxy) {}},
	} {
		t.Run(mode.name, func(t *testing.T) {
			bl, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			b := &demo.Backend{ID: "b1"}
			bdone := make(chan struct{})
			go func() { defer close(bdone); b.Serve(bl) }()
			t.Cleanup(func() { b.Close(); <-bdone })
			r, err := ring.New(ring.ModeConsistent, []ring.Backend{{ID: "b1", Addr: bl.Addr().String()}})
			if err != nil {
				t.Fatal(err)
			}
			p := &proxy.Proxy{Source: proxy.NewAtomicRing(r), MaxConnsPerIP: -1, AcceptRatePerIP: -1}
			mode.opts(p)
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			served := make(chan error, 1)
			go func() { served <- p.Serve(l) }()
			t.Cleanup(func() { p.Close(); <-served })

			reg := prometheus.NewPedanticRegistry()
			reg.MustRegister(NewProxyCollector(p))
			url := serveAdminHTTP(t, reg)
			in, out := `devgate_bytes_total{direction="in"}`, `devgate_bytes_total{direction="out"}`

			c, reply, err := (&gateway{addr: l.Addr().String()}).connect(t, login("dev-1"))
			if err != nil {
				t.Fatal(err)
			}
			hb := mkframe(2, `{"hb":"`+strings.Repeat("x", 1000)+`"}`)
			echo := func(times int) {
				for range times {
					if _, err := c.Write(hb); err != nil {
						t.Fatal(err)
					}
					if _, err := io.ReadFull(c, make([]byte, len(hb))); err != nil {
						t.Fatal(err)
					}
				}
			}
			// A copy counts just after its write, so the client may read an
			// echo a moment before the count shows it: poll, briefly.
			counted := func(wantIn, wantOut float64) func(map[string]float64) bool {
				return func(m map[string]float64) bool {
					if m[in] > wantIn || m[out] > wantOut {
						t.Fatalf("counted more than moved: in %v > %v or out %v > %v", m[in], wantIn, m[out], wantOut)
					}
					return m[in] == wantIn && m[out] == wantOut
				}
			}
			echo(3)
			wantIn := float64(len(login("dev-1")) + 3*len(hb))
			wantOut := float64(len(reply) + 3*len(hb))
			m := waitScrapeText(t, url, counted(wantIn, wantOut))
			if m["devgate_connections_proxied"] != 1 {
				t.Fatalf("proxied %v: the connection is not open", m["devgate_connections_proxied"])
			}
			echo(2)
			m = waitScrapeText(t, url, counted(wantIn+float64(2*len(hb)), wantOut+float64(2*len(hb))))
			if m["devgate_connections_proxied"] != 1 {
				t.Fatalf("proxied %v: the connection is not open", m["devgate_connections_proxied"])
			}

			// Closing folds the connection's counts: the totals neither jump
			// nor go back.
			c.Close()
			m = waitScrapeText(t, url, func(m map[string]float64) bool { return m["devgate_connections_proxied"] == 0 })
			if m[in] != wantIn+float64(2*len(hb)) || m[out] != wantOut+float64(2*len(hb)) {
				t.Fatalf("after close: in %v, out %v", m[in], m[out])
			}
		})
	}
}

func waitScrapeText(t *testing.T, url string, cond func(map[string]float64) bool) map[string]float64 {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		m := testkit.Scrape(t, url)
		if cond(m) {
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out; last scrape %v", m)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestBuildInfoAndGRPC scrapes build info and the gRPC server metrics of
// a real gRPC server (the health service, as the admin server has) from a
// real admin HTTP server, and lints them.
func TestBuildInfoAndGRPC(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	gm := NewGRPCServerMetrics()
	reg.MustRegister(NewBuildInfo("v9.9.9", "abc123"), gm)
	srv := grpc.NewServer(grpc.ChainUnaryInterceptor(gm.UnaryServerInterceptor()),
		grpc.ChainStreamInterceptor(gm.StreamServerInterceptor()))
	healthpb.RegisterHealthServer(srv, health.NewServer())
	gm.InitializeMetrics(srv)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	defer srv.Stop()
	url := serveAdminHTTP(t, reg)

	ok := `grpc_server_handled_total{grpc_code="OK",grpc_method="Check",grpc_service="grpc.health.v1.Health",grpc_type="unary"}`
	notFound := `grpc_server_handled_total{grpc_code="NotFound",grpc_method="Check",grpc_service="grpc.health.v1.Health",grpc_type="unary"}`
	m := testkit.Scrape(t, url)
	if v, found := m[ok]; !found || v != 0 {
		t.Fatalf("before any call %s = %v, %v (InitializeMetrics shows every method at 0)", ok, v, found)
	}
	build := `devgate_build_info{goversion="` + runtime.Version() + `",revision="abc123",version="v9.9.9"}`
	if m[build] != 1 {
		t.Errorf("%s = %v; scrape has %v", build, m[build], keysMatching(m, regexp.MustCompile(`build_info`)))
	}

	cc, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	hc := healthpb.NewHealthClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for range 2 {
		if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "nope"}); err == nil {
		t.Fatal("Check of an unknown service succeeded")
	}
	m = testkit.Scrape(t, url)
	if m[ok] != 2 || m[notFound] != 1 {
		t.Errorf("%s = %v, %s = %v", ok, m[ok], notFound, m[notFound])
	}
	hist := `grpc_server_handling_seconds_count{grpc_method="Check",grpc_service="grpc.health.v1.Health",grpc_type="unary"}`
	if m[hist] != 3 {
		t.Errorf("%s = %v", hist, m[hist])
	}
	lint(t, reg)
}

func keysMatching(m map[string]float64, re *regexp.Regexp) []string {
	var out []string
	for k := range m {
		if re.MatchString(k) {
			out = append(out, k)
		}
	}
	return out
}
