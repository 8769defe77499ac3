package metrics

import (
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/devgate/devgate/pkg/frame"
	"github.com/devgate/devgate/pkg/proxy"
)

const namespace = "devgate"

// EvictionCauses are the causes exported as 0 in devgate_evictions_total
// (and as evicted_<cause> in devgate_connections_closed_total) before the
// first eviction; NewProxyCollector copies it. Other causes appear when
// they first happen.
var EvictionCauses = []proxy.Cause{proxy.CauseDrain, proxy.CauseRebalance, proxy.CauseGatewayDrain, proxy.CauseShutdown}

// ProxySource is what NewProxyCollector reads; *proxy.Proxy is one.
type ProxySource interface {
	Stats() proxy.Stats
	Conns() map[string]int
}

// closedReasons are the reasons exported before they first happen: the
// proxy's own and the frame package's bad-input labels.
func closedReasons() []proxy.Reason {
	rs := []proxy.Reason{
		proxy.ReasonMaxConns, proxy.ReasonShutdown, proxy.ReasonEmpty, proxy.ReasonClientGone,
		proxy.ReasonPrereadTimeout, proxy.ReasonReadError, proxy.ReasonNoBackends,
		proxy.ReasonDialFailed, proxy.ReasonBackendWrite, proxy.ReasonClientClosed,
		proxy.ReasonBackendClosed, proxy.ReasonReplaced,
		proxy.ReasonMaxConnsPerIP, proxy.ReasonRateLimited, proxy.ReasonProxyUntrusted,
		proxy.ReasonProxyHeader, proxy.ReasonTLSHandshake, proxy.ReasonIdleTimeout,
		proxy.ReasonClientFinTimeout, proxy.ReasonServerFinTimeout,
		proxy.ReasonAdmissionTimeout, proxy.ReasonFlapping, proxy.ReasonKicked,
	}
	for _, err := range []error{
		frame.ErrBadHeader, frame.ErrTooLarge, frame.ErrNoKey, frame.ErrKeyTooLong, frame.ErrNotJSON,
		frame.ErrTooManyFrames, frame.ErrPrereadCap, frame.ErrBadKey,
		frame.ErrDupKey,
	} {
		rs = append(rs, proxy.Reason(frame.Reason(err)))
	}
	for _, c := range EvictionCauses {
		rs = append(rs, proxy.Evicted(c))
	}
	return rs
}

// evictionCause returns the cause a closed reason counts under in
// devgate_evictions_total, and false if it is not an eviction. A
// replaced connection is not one: see devgate_relogin_replaced_total.
func evictionCause(reason string) (string, bool) {
	switch {
	case reason == string(proxy.ReasonEvicted):
		return "other", true
	case strings.HasPrefix(reason, string(proxy.ReasonEvicted)+"_"):
		if c := strings.TrimPrefix(reason, string(proxy.ReasonEvicted)+"_"); c != "" {
			return c, true
		}
		return "other", true
	}
	return "", false
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(prometheus.BuildFQName(namespace, "", name), help, labels, nil)
}

type proxyCollector struct {
	src ProxySource

	accepted, acceptErrors, active, proxied, backend, closed, routed, fallbacks,
	dialFailures, moved, bytes, evictions, relogin, rehome, moving *prometheus.Desc

	reasons []proxy.Reason // pre-declared closed reasons
	causes  []proxy.Cause  // pre-declared eviction causes
}

// NewProxyCollector exposes a proxy's Stats() and Conns(), read at scrape
// time. See the package comment for the metrics.
func NewProxyCollector(p ProxySource) prometheus.Collector {
	return &proxyCollector{
		src:          p,
		accepted:     desc("connections_accepted_total", "Connections accepted, including those refused at once (max_conns)."),
		acceptErrors: desc("accept_errors_total", "Failed accepts, such as when file descriptors run out (the loop backs off)."),
		active:       desc("connections_active", "Connections open now, prereading or proxied."),
		proxied:      desc("connections_proxied", "Connections open now and routed to a backend."),
		backend:      desc("backend_connections", "Proxied connections open now, by backend id.", "backend"),
		closed:       desc("connections_closed_total", "Connections ended or refused, by reason.", "reason"),
		routed:       desc("routed_total", "Connections routed to a backend."),
		fallbacks:    desc("fallbacks_total", "Connections routed to a backend other than the key's owner, because the owner's dial failed."),
		dialFailures: desc("dial_failures_total", "Failed dials to backends, each try counted."),
		moved:        desc("device_moved_total", "Devices that reconnected through this replica to a different backend than last time."),
		bytes:        desc("bytes_total", "Bytes proxied, counted as they are copied (open connections too): in is client to backend, out is backend to client.", "direction"),
		evictions:    desc("evictions_total", "Proxied connections closed by an operator action, by cause (drain, rebalance, gateway_drain, shutdown).", "cause"),
		relogin: desc("relogin_replaced_total", "Older connections of a device closed because the device logged in again through this replica "+
			"(it gave up on a half-open connection, or reconnected before its close reached the gateway): normal device behaviour, not an eviction."),
		rehome: desc("rehome_total", "Moves of live devices to their new backend that ended, by cause "+
			"(drain, rebalance, backend_lost) and result (moved, evicted_<reason>, device_gone).", "cause", "result"),
		moving:  desc("rehome_in_progress", "Moves of live devices in progress on this replica."),
		reasons: closedReasons(),
		causes:  slices.Clone(EvictionCauses),
	}
}

func (c *proxyCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.accepted, c.acceptErrors, c.active, c.proxied, c.backend, c.closed,
		c.routed, c.fallbacks, c.dialFailures, c.moved, c.bytes, c.evictions, c.relogin, c.rehome, c.moving} {
		ch <- d
	}
}

func (c *proxyCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.src.Stats()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter(c.accepted, s.Accepted)
	counter(c.acceptErrors, s.AcceptErrors)
	gauge(c.active, float64(s.Active))
	gauge(c.proxied, float64(s.Proxied))
	counter(c.routed, s.Routed)
	counter(c.fallbacks, s.Fallbacks)
	counter(c.dialFailures, s.DialFailures)
	counter(c.moved, s.Moved)
	counter(c.bytes, s.BytesIn, "in")
	counter(c.bytes, s.BytesOut, "out")
	for id, n := range c.src.Conns() {
		gauge(c.backend, float64(n), id)
	}

	closed := make(map[proxy.Reason]uint64, len(c.reasons)+len(s.Closed))
	for _, r := range c.reasons {
		closed[r] = 0
	}
	for r, n := range s.Closed {
		closed[r] = n
	}
	evictions := make(map[string]uint64, len(c.causes))
	for _, cause := range c.causes {
		evictions[string(cause)] = 0
	}
	for r, n := range closed {
		counter(c.closed, n, string(r))
		if cause, ok := evictionCause(string(r)); ok {
			evictions[cause] += n
		}
	}
	for cause, n := range evictions {
		counter(c.evictions, n, cause)
	}
	counter(c.relogin, closed[proxy.ReasonReplaced])

	gauge(c.moving, float64(s.Moving))
	rehomes := make(map[proxy.MoveKey]uint64, len(proxy.MoveCauses)*len(proxy.MoveResults)+len(s.Rehomes))
	for _, cause := range proxy.MoveCauses {
		for _, r := range proxy.MoveResults {
			rehomes[proxy.MoveKey{Cause: cause, Result: r}] = 0
		}
	}
	for k, n := range s.Rehomes {
		rehomes[k] = n
	}
	for k, n := range rehomes {
		counter(c.rehome, n, string(k.Cause), string(k.Result))
	}
}

// NewRehomePauseHistogram returns devgate_rehome_pause_seconds{cause}: how
// long each device that moved was paused, buckets 1ms .. 10s (a move gives
// up at rehome.timeout, 5s by default). Register it, and feed it through
// Proxy.OnMove = ObserveMove(h).
func NewRehomePauseHistogram() *prometheus.HistogramVec {
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: namespace,
		Name:      "rehome_pause_seconds",
		Help:      "How long a device that moved to its new backend was paused, by cause of the move.",
		Buckets:   []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	}, []string{"cause"})
	for _, c := range proxy.MoveCauses {
		h.WithLabelValues(string(c))
	}
	return h
}

// ObserveMove returns a hook for Proxy.OnMove that records the pause of
// each move that ended with the device on its new owner; a move that fell
// back to an eviction paused nobody (the device reconnects). It runs on an
// event loop: an Observe does not block.
func ObserveMove(h *prometheus.HistogramVec) func(proxy.Cause, proxy.MoveResult, time.Duration) {
	return func(cause proxy.Cause, r proxy.MoveResult, pause time.Duration) {
		if r == proxy.MoveMoved {
			h.WithLabelValues(string(cause)).Observe(pause.Seconds())
		}
	}
}

// NewPrereadHistogram returns the devgate_preread_seconds histogram, with
// buckets from 100us to 10s. Register it, and feed it through
// Proxy.OnPreread = ObserveSeconds(h).
func NewPrereadHistogram() prometheus.Histogram {
	return prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: namespace,
		Name:      "preread_seconds",
		Help:      "Time a client took to send its key frame, or to fail to.",
		Buckets: []float64{
			.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05,
			.1, .25, .5, 1, 2.5, 5, 10,
		},
	})
}

// ObserveSeconds returns a hook for Proxy.OnPreread that records each
// duration in o, in seconds.
func ObserveSeconds(o prometheus.Observer) func(time.Duration) {
	return func(d time.Duration) { o.Observe(d.Seconds()) }
}
