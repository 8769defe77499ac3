package metrics

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/devgate/devgate/pkg/proxy"
	"github.com/devgate/devgate/pkg/registry"
)

func TestEvictionCause(t *testing.T) {
	for _, tc := range []struct {
		reason, cause string
		ok            bool
	}{
		{"evicted_drain", "drain", true},
		{"evicted_rebalance", "rebalance", true},
		{"evicted_gateway_drain", "gateway_drain", true},
		{"replaced", "", false}, // devgate_relogin_replaced_total
		{"evicted", "other", true},
		{"evicted_", "other", true},
		{"shutdown", "", false},
		{"client_closed", "", false},
		{"not_json", "", false},
	} {
		cause, ok := evictionCause(tc.reason)
		if cause != tc.cause || ok != tc.ok {
			t.Errorf("evictionCause(%q) = %q, %v; want %q, %v", tc.reason, cause, ok, tc.cause, tc.ok)
		}
	}
}

type fixedProxy struct {
	stats proxy.Stats
	conns map[string]int
}

func (f fixedProxy) Stats() proxy.Stats    { return f.stats }
func (f fixedProxy) Conns() map[string]int { return f.conns }

type fixedWatcher struct {
	stats registry.WatcherStats
	snap  *registry.Snapshot
}

func (f fixedWatcher) Stats() registry.WatcherStats { return f.stats }
func (f fixedWatcher) Snapshot() *registry.Snapshot { return f.snap }

// Reasons and causes nobody declared still show, and sum into their cause.
func TestUndeclaredReasonsShow(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewProxyCollector(fixedProxy{
		stats: proxy.Stats{Closed: map[proxy.Reason]uint64{"evicted_custom": 2, "evicted_drain": 3, "brand_new": 1}},
		conns: map[string]int{"b9": 4},
	}))
	want(t, scrape(t, reg), map[string]float64{
		`devgate_connections_closed_total{reason="brand_new"}`:      1,
		`devgate_connections_closed_total{reason="evicted_custom"}`: 2,
		`devgate_evictions_total{cause="custom"}`:                   2,
		`devgate_evictions_total{cause="drain"}`:                    3,
		`devgate_backend_connections{backend="b9"}`:                 4,
		`devgate_connections_closed_total{reason="bad_header"}`:     0,
	})
	lint(t, reg)
}

// Before the first snapshot the registry collector reports zeros, not a panic.
func TestRegistryBeforeFirstSnapshot(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewRegistryCollector(fixedWatcher{}))
	want(t, scrape(t, reg), map[string]float64{
		`devgate_ring_revision`:                   0,
		`devgate_ring_backends{state="active"}`:   0,
		`devgate_ring_backends{state="draining"}`: 0,
		`devgate_ring_backends{state="held"}`:     0,
		`devgate_etcd_connected`:                  0,
		`devgate_etcd_staleness_seconds`:          0,
	})
	lint(t, reg)
}
