package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/devgate/devgate/pkg/proxy"
)

// GuardSource is what NewGuardCollector reads; *proxy.Proxy is one.
type GuardSource interface {
	Ejections() []proxy.Ejection
	GuardStats() proxy.GuardStats
	AccessSuppressed() map[proxy.Reason]uint64
}

type guardCollector struct {
	src GuardSource

	ejections, ejected, skips, flapHeld, flapHolding, flapRefused, notices, accessSuppressed *prometheus.Desc
}

// NewGuardCollector exposes passive ejection, the hold of flapping devices
// and the evict notice of a proxy, read at scrape time:
//
//	devgate_backend_ejections_total{backend}  counter  times a backend was ejected on this replica
//	devgate_backend_ejected{backend}          gauge    1 while ejected here (backends with failed dials)
//	devgate_backend_eject_skips_total         counter  dials skipped because the owner was ejected
//	devgate_flap_held_total                   counter  logins of flapping devices held
//	devgate_flap_holding                      gauge    logins held now
//	devgate_flap_refused_total                counter  logins refused as flapping (reason "flapping")
//	devgate_evict_notices_total{result}       counter  evict notices: sent, or skipped (not at a frame
//	                                                   boundary, or a connection copied by goroutines)
//	devgate_access_lines_suppressed_total{reason}  counter  access error lines over log.accessErrorsPerSecond
func NewGuardCollector(src GuardSource) prometheus.Collector {
	return &guardCollector{
		src:         src,
		ejections:   desc("backend_ejections_total", "Times a backend was ejected on this replica after consecutive failed dials.", "backend"),
		ejected:     desc("backend_ejected", "1 while a backend is ejected on this replica (listed once a dial to it failed).", "backend"),
		skips:       desc("backend_eject_skips_total", "Dials skipped because the owner was ejected: the device went to its next owner at once."),
		flapHeld:    desc("flap_held_total", "Logins of devices over admission.flap.max within the window, held before their dial."),
		flapHolding: desc("flap_holding", "Logins of flapping devices held now."),
		flapRefused: desc("flap_refused_total", "Logins refused as flapping after their hold."),
		notices:     desc("evict_notices_total", "Evict notices sent to devices before an eviction, or skipped.", "result"),
		accessSuppressed: desc("access_lines_suppressed_total",
			"Access log error lines not written: over log.accessErrorsPerSecond for their reason.", "reason"),
	}
}

func (c *guardCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.ejections, c.ejected, c.skips, c.flapHeld, c.flapHolding, c.flapRefused, c.notices, c.accessSuppressed} {
		ch <- d
	}
}

func (c *guardCollector) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for _, e := range c.src.Ejections() {
		counter(c.ejections, e.Ejections, e.Backend)
		v := 0.0
		if e.Ejected {
			v = 1
		}
		gauge(c.ejected, v, e.Backend)
	}
	s := c.src.GuardStats()
	counter(c.skips, s.EjectedSkips)
	counter(c.flapHeld, s.FlapHeld)
	gauge(c.flapHolding, float64(s.FlapHolding))
	counter(c.flapRefused, s.FlapRefused)
	counter(c.notices, s.NoticeSent, "sent")
	counter(c.notices, s.NoticeSkipped, "skipped")
	for r, n := range c.src.AccessSuppressed() {
		counter(c.accessSuppressed, n, string(r))
	}
}
