package admin

import (
	"fmt"
	"net/http"
	"net/http/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// HTTPOptions configures the admin HTTP handler: Prometheus metrics,
// health and readiness for Kubernetes probes, and optionally pprof.
type HTTPOptions struct {
	// Gatherer serves /metrics. If nil, prometheus.DefaultGatherer.
	Gatherer prometheus.Gatherer

	// Ready answers /readyz: 200 while it returns true, 503 otherwise, with
	// its detail in the body either way (why not ready; or, when ready,
	// such as how stale etcd is). If nil, /readyz answers as /healthz.
	Ready func() (ready bool, detail string)

	// Pprof serves /debug/pprof/ when true; otherwise those paths are 404.
	// /debug/pprof/cmdline is never served: flags may carry secrets.
	Pprof bool

	// API, if set, serves the JSON API under APIPrefix and the dashboard
	// under /ui/.
	API *API
}

// MaxProfileSeconds caps the seconds parameter of /debug/pprof/profile and
// /debug/pprof/trace, so a client cannot hold a connection and the
// process's single CPU profiler for hours.
const MaxProfileSeconds = 120

// maxScrapesInFlight bounds concurrent /metrics requests; more get 503.
const maxScrapesInFlight = 4

// NewHTTPHandler returns the admin HTTP handler:
//
//	GET /metrics        Prometheus text format from o.Gatherer
//	GET /healthz        200 "ok" while the process serves
//	GET /readyz         200 "ok[: detail]" or 503 "<reason>", from o.Ready
//	POST /api/v1/<M>    the JSON API (api.go), only with o.API
//	GET /ui/            the dashboard (ui.go), only with o.API
//	/debug/pprof/...    net/http/pprof, only when o.Pprof
//
// Serve it with NewHTTPServer, whose timeouts bound what a client can hold.
func NewHTTPHandler(o HTTPOptions) http.Handler {
	g := o.Gatherer
	if g == nil {
		g = prometheus.DefaultGatherer
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{
		MaxRequestsInFlight: maxScrapesInFlight,
	}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeText(w, http.StatusOK, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		code, body := readyBody(o.Ready)
		writeText(w, code, body)
	})
	paths := "/metrics /healthz /readyz"
	if o.API != nil {
		o.API.register(mux)
		mux.Handle("GET /ui/", uiHandler())
		paths += " " + APIPrefix + " /ui/"
	}
	if o.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index) // named profiles: heap, goroutine, ...
		mux.HandleFunc("/debug/pprof/profile", capSeconds(pprof.Profile))
		mux.HandleFunc("/debug/pprof/trace", capSeconds(pprof.Trace))
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/cmdline", http.NotFound)
		paths += " /debug/pprof/"
	}
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		writeText(w, http.StatusOK, "devgate admin: "+paths)
	})
	return mux
}

// readyBody turns Ready's answer into a status and a one-line body.
func readyBody(ready func() (bool, string)) (int, string) {
	if ready == nil {
		return http.StatusOK, "ok"
	}
	ok, detail := ready()
	detail = strings.TrimSpace(detail)
	switch {
	case !ok && detail == "":
		return http.StatusServiceUnavailable, "not ready"
	case !ok:
		return http.StatusServiceUnavailable, detail
	case detail == "" || strings.HasPrefix(detail, "ok"):
		return http.StatusOK, orString(detail, "ok")
	}
	return http.StatusOK, "ok: " + detail
}

func orString(s, def string) string {
	if s != "" {
		return s
	}
	return def
}

func writeText(w http.ResponseWriter, code int, body string) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	fmt.Fprintln(w, body)
}

// capSeconds rejects a pprof request asking for more than MaxProfileSeconds.
func capSeconds(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s := r.FormValue("seconds"); s != "" {
			sec, err := strconv.ParseFloat(s, 64)
			if err != nil || sec > MaxProfileSeconds {
				writeText(w, http.StatusBadRequest,
					fmt.Sprintf("seconds must be a number up to %d", MaxProfileSeconds))
				return
			}
		}
		h(w, r)
	}
}

// Timeouts of NewHTTPServer.
const (
	httpReadHeaderTimeout = 5 * time.Second
	httpReadTimeout       = 10 * time.Second
	httpWriteTimeout      = 30 * time.Second
	httpIdleTimeout       = 60 * time.Second
	httpMaxHeaderBytes    = 16 << 10
)

// NewHTTPServer returns a server for h on addr whose timeouts bound what a
// client can make it hold: 5s to send the headers, 10s the whole request,
// 30s to take the response, 60s idle between requests, 16 KiB of headers.
// The pprof profile and trace endpoints extend their own write deadline by
// the seconds asked for (capped at MaxProfileSeconds), so a 30s CPU
// profile works under the 30s WriteTimeout.
func NewHTTPServer(addr string, h http.Handler) *http.Server {
	return &http.Server{
		Addr:              addr,
		Handler:           h,
		ReadHeaderTimeout: httpReadHeaderTimeout,
		ReadTimeout:       httpReadTimeout,
		WriteTimeout:      httpWriteTimeout,
		IdleTimeout:       httpIdleTimeout,
		MaxHeaderBytes:    httpMaxHeaderBytes,
	}
}
