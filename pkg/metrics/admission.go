package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/devgate/devgate/pkg/proxy"
)

// AdmissionSource is what NewAdmissionCollector reads; *proxy.Proxy is one.
type AdmissionSource interface {
	AdmissionStats() map[string]proxy.AdmissionStats
}

type admissionCollector struct {
	src                     AdmissionSource
	waiting, admitted, rate *prometheus.Desc
}

// NewAdmissionCollector exposes a proxy's login pacing per backend
// (Proxy.Admission), read at scrape time: only backends that have a pace
// appear. Refusals count in devgate_connections_closed_total as
// reason="admission_timeout".
func NewAdmissionCollector(p AdmissionSource) prometheus.Collector {
	return &admissionCollector{
		src:      p,
		waiting:  desc("admission_waiting", "Connections waiting in this replica for their backend's turn (login pacing), by backend.", "backend"),
		admitted: desc("admission_admitted_total", "Connections the login pacing let through to dial a backend, by backend.", "backend"),
		rate:     desc("admission_rate", "This replica's share of a backend's login pace now, per second (slow start included), by backend.", "backend"),
	}
}

func (c *admissionCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.waiting
	ch <- c.admitted
	ch <- c.rate
}

func (c *admissionCollector) Collect(ch chan<- prometheus.Metric) {
	for id, s := range c.src.AdmissionStats() {
		ch <- prometheus.MustNewConstMetric(c.waiting, prometheus.GaugeValue, float64(s.Waiting), id)
		ch <- prometheus.MustNewConstMetric(c.admitted, prometheus.CounterValue, float64(s.Admitted), id)
		ch <- prometheus.MustNewConstMetric(c.rate, prometheus.GaugeValue, s.Rate, id)
	}
}

// NewAdmissionWaitHistogram returns devgate_admission_wait_seconds: how long
// each connection that waited for its backend's turn waited (until its
// turn, or until it was refused or left), buckets 10ms .. 60s. Register it,
// and feed it through Proxy.OnAdmissionWait = ObserveSeconds(h).
func NewAdmissionWaitHistogram() prometheus.Histogram {
	return prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: namespace,
		Name:      "admission_wait_seconds",
		Help:      "Time a connection waited for its backend's turn (login pacing): until its turn, its refusal or its leaving.",
		Buckets:   []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
	})
}
