package metrics

import (
	"slices"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/devgate/devgate/pkg/registry"
)

// RegistrySource is what NewRegistryCollector reads; *registry.Watcher is one.
type RegistrySource interface {
	Stats() registry.WatcherStats
	Snapshot() *registry.Snapshot
}

// states are the member states exported, 0 when no member is in them.
var states = []registry.State{registry.StateActive, registry.StateDraining, registry.StateHeld}

type registryCollector struct {
	src RegistrySource

	revision, backends, connected, staleness, relists, badValues, builds, panicHolds *prometheus.Desc
	relistReasons, regressions, repairs, panicExtended                               *prometheus.Desc
	drainDeadline                                                                    *prometheus.Desc
}

// relistReasons are the reasons exported, 0 until they happen.
var relistReasons = []string{registry.ReasonStart, registry.ReasonCompacted, registry.ReasonRegression,
	registry.ReasonReconnect, registry.ReasonSilent, registry.ReasonEnded, registry.ReasonError}

// NewRegistryCollector exposes a watcher's WatcherStats and its snapshot
// (ring revision, backends by state), read at scrape time. See the package
// comment for the metrics.
func NewRegistryCollector(w RegistrySource) prometheus.Collector {
	return &registryCollector{
		src:        w,
		revision:   desc("ring_revision", "etcd revision of the snapshot this replica routes on; 0 before the first."),
		backends:   desc("ring_backends", "Backends of the current snapshot by state; active and held ones are in the ring.", "state"),
		connected:  desc("etcd_connected", "1 while the etcd watch is open and etcd answers, else 0."),
		staleness:  desc("etcd_staleness_seconds", "Seconds since etcd last answered; 0 before the first answer."),
		relists:    desc("registry_relists_total", "Full lists of the cluster's keys (start, compaction, restore, broken watch)."),
		badValues:  desc("registry_bad_values_total", "Keys in etcd rejected as untrusted input."),
		builds:     desc("registry_builds_total", "Snapshots (rings) built from etcd."),
		panicHolds: desc("panic_holds_total", "Times the panic threshold held departed backends in the ring."),
		relistReasons: desc("registry_relist_reasons_total",
			"Full lists by the reason the watch ended: start, compacted, regression (etcd restored), reconnect, silent, ended, error.", "reason"),
		regressions: desc("registry_regressions_total", "Lists that found etcd's revision or cluster id gone back (a restore)."),
		repairs:     desc("registry_relist_repairs_total", "Lists that found changes the watch had not delivered (missed while away, or lost in a restore)."),
		panicExtended: desc("panic_hold_extended_total",
			"Times a panic hold went on past panicHold because etcd could not confirm the departures or nothing routable would be left."),
		drainDeadline: desc("drain_deadline_timestamp_seconds",
			"Unix time of the deadline of each backend's drain (alert: past it with connections left).", "backend"),
	}
}

func (c *registryCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.revision, c.backends, c.connected, c.staleness,
		c.relists, c.badValues, c.builds, c.panicHolds, c.relistReasons, c.regressions, c.repairs, c.panicExtended, c.drainDeadline} {
		ch <- d
	}
}

func (c *registryCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.src.Stats()
	snap := c.src.Snapshot() // revision and members from one snapshot
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v))
	}
	byState := make(map[registry.State]int, len(states))
	var rev int64
	if snap != nil {
		rev = snap.Revision
		for _, m := range snap.Members {
			byState[m.State]++
		}
	}
	gauge(c.revision, float64(rev))
	if snap != nil {
		for id, d := range snap.Drains {
			gauge(c.drainDeadline, float64(d.Deadline.UnixMilli())/1e3, id)
		}
	}
	for _, st := range states {
		gauge(c.backends, float64(byState[st]), string(st))
	}
	for st, n := range byState { // a state added later still shows
		if !slices.Contains(states, st) {
			gauge(c.backends, float64(n), string(st))
		}
	}
	connected := 0.0
	if s.Connected {
		connected = 1
	}
	gauge(c.connected, connected)
	gauge(c.staleness, s.Staleness.Seconds())
	counter(c.relists, s.Relists)
	counter(c.badValues, s.BadValues)
	counter(c.builds, s.Builds)
	counter(c.panicHolds, s.PanicHolds)
	counter(c.regressions, s.Regressions)
	counter(c.repairs, s.Repairs)
	counter(c.panicExtended, s.PanicExtended)
	for _, r := range relistReasons {
		ch <- prometheus.MustNewConstMetric(c.relistReasons, prometheus.CounterValue, float64(s.RelistReasons[r]), r)
	}
	for r, n := range s.RelistReasons { // a reason added later still shows
		if !slices.Contains(relistReasons, r) {
			ch <- prometheus.MustNewConstMetric(c.relistReasons, prometheus.CounterValue, float64(n), r)
		}
	}
}
