package admin

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// httpGet fetches path from h and returns the status and the body.
func httpGet(t *testing.T, h http.Handler, method, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
	return rec.Code, rec.Body.String()
}

func TestHTTPHealthzAndIndex(t *testing.T) {
	h := NewHTTPHandler(HTTPOptions{Gatherer: prometheus.NewRegistry()})
	if code, body := httpGet(t, h, "GET", "/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz: %d %q", code, body)
	}
	if code, _ := httpGet(t, h, "HEAD", "/healthz"); code != 200 {
		t.Errorf("HEAD /healthz: %d", code)
	}
	if code, _ := httpGet(t, h, "POST", "/healthz"); code != http.StatusMethodNotAllowed {
		t.Errorf("POST /healthz: %d, want 405", code)
	}
	if code, body := httpGet(t, h, "GET", "/"); code != 200 || !strings.Contains(body, "/metrics") {
		t.Errorf("/: %d %q", code, body)
	}
	if code, _ := httpGet(t, h, "GET", "/nothing"); code != 404 {
		t.Errorf("/nothing: %d, want 404", code)
	}
}

func TestHTTPMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "devgate_test_total", Help: "A test counter."})
	reg.MustRegister(c)
	c.Add(3)
	h := NewHTTPHandler(HTTPOptions{Gatherer: reg})
	code, body := httpGet(t, h, "GET", "/metrics")
	if code != 200 || !strings.Contains(body, "\ndevgate_test_total 3\n") {
		t.Errorf("/metrics: %d\n%s", code, body)
	}
}

func TestHTTPReadyz(t *testing.T) {
	for _, tc := range []struct {
		name  string
		ready func() (bool, string)
		code  int
		body  string
	}{
		{"nil", nil, 200, "ok\n"},
		{"ready", func() (bool, string) { return true, "" }, 200, "ok\n"},
		{"ready with detail", func() (bool, string) { return true, "etcd stale 35s (routing on revision 42)" },
			200, "ok: etcd stale 35s (routing on revision 42)\n"},
		{"ready, detail says ok", func() (bool, string) { return true, "ok: revision 7, 3 backends in the ring" },
			200, "ok: revision 7, 3 backends in the ring\n"},
		{"no ring", func() (bool, string) { return false, "no ring yet" }, 503, "no ring yet\n"},
		{"shutting down", func() (bool, string) { return false, "shutting down" }, 503, "shutting down\n"},
		{"no reason", func() (bool, string) { return false, "" }, 503, "not ready\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := NewHTTPHandler(HTTPOptions{Gatherer: prometheus.NewRegistry(), Ready: tc.ready})
			code, body := httpGet(t, h, "GET", "/readyz")
			if code != tc.code || body != tc.body {
				t.Errorf("/readyz: %d %q, want %d %q", code, body, tc.code, tc.body)
			}
		})
	}
}

func TestHTTPPprofOff(t *testing.T) {
	h := NewHTTPHandler(HTTPOptions{Gatherer: prometheus.NewRegistry()})
	for _, p := range []string{"/debug/pprof/", "/debug/pprof/heap", "/debug/pprof/profile?seconds=1",
		"/debug/pprof/trace", "/debug/pprof/symbol", "/debug/pprof/cmdline"} {
		if code, _ := httpGet(t, h, "GET", p); code != 404 {
			t.Errorf("%s with pprof off: %d, want 404", p, code)
		}
	}
}

func TestHTTPPprofOn(t *testing.T) {
	h := NewHTTPHandler(HTTPOptions{Gatherer: prometheus.NewRegistry(), Pprof: true})
	if code, body := httpGet(t, h, "GET", "/debug/pprof/"); code != 200 || !strings.Contains(body, "goroutine") {
		t.Errorf("/debug/pprof/: %d", code)
	}
	if code, body := httpGet(t, h, "GET", "/debug/pprof/goroutine?debug=1"); code != 200 || !strings.Contains(body, "goroutine profile") {
		t.Errorf("goroutine profile: %d", code)
	}
	if code, _ := httpGet(t, h, "GET", "/debug/pprof/cmdline"); code != 404 {
		t.Errorf("cmdline: %d, want 404 (flags may hold secrets)", code)
	}
	for _, p := range []string{"/debug/pprof/profile?seconds=3600", "/debug/pprof/trace?seconds=x"} {
		if code, _ := httpGet(t, h, "GET", p); code != 400 {
			t.Errorf("%s: %d, want 400", p, code)
		}
	}
}

// NewHTTPServer has the documented bounds, and its WriteTimeout leaves room
// for a CPU profile: pprof extends the write deadline by the seconds asked for.
func TestHTTPServerServesProfile(t *testing.T) {
	srv := NewHTTPServer("127.0.0.1:0", NewHTTPHandler(HTTPOptions{Gatherer: prometheus.NewRegistry(), Pprof: true}))
	if srv.ReadHeaderTimeout != 5*time.Second || srv.ReadTimeout != 10*time.Second ||
		srv.WriteTimeout != 30*time.Second || srv.IdleTimeout <= 0 || srv.MaxHeaderBytes != 16<<10 {
		t.Errorf("timeouts: %+v", srv)
	}
	l, err := net.Listen("tcp", srv.Addr)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	}()
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	base := "http://" + l.Addr().String()

	resp, err := client.Get(base + "/debug/pprof/profile?seconds=1")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || len(b) == 0 {
		t.Errorf("profile: %d, %d bytes: %.200s", resp.StatusCode, len(b), b)
	}

	// Headers over MaxHeaderBytes are refused.
	req, _ := http.NewRequest("GET", base+"/healthz", nil)
	req.Header.Set("X-Big", strings.Repeat("a", 64<<10))
	resp, err = client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("64 KiB header: %d, want 431", resp.StatusCode)
	}
}
