package metrics

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/devgate/devgate/pkg/proxy"
)

type fixedGuard struct {
	ej  []proxy.Ejection
	s   proxy.GuardStats
	sup map[proxy.Reason]uint64
}

func (f fixedGuard) Ejections() []proxy.Ejection               { return f.ej }
func (f fixedGuard) GuardStats() proxy.GuardStats              { return f.s }
func (f fixedGuard) AccessSuppressed() map[proxy.Reason]uint64 { return f.sup }

func TestGuardCollector(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewGuardCollector(fixedGuard{
		ej:  []proxy.Ejection{{Backend: "b1", Ejected: true, Ejections: 2}, {Backend: "b2", Ejections: 1}},
		s:   proxy.GuardStats{FlapHeld: 5, FlapHolding: 1, FlapRefused: 3, EjectedSkips: 7, NoticeSent: 4, NoticeSkipped: 2},
		sup: map[proxy.Reason]uint64{"rate_limited": 9},
	}))
	lint(t, reg)
	want(t, scrape(t, reg), map[string]float64{
		`devgate_backend_ejected{backend="b1"}`:                        1,
		`devgate_backend_ejected{backend="b2"}`:                        0,
		`devgate_backend_ejections_total{backend="b1"}`:                2,
		`devgate_backend_ejections_total{backend="b2"}`:                1,
		`devgate_backend_eject_skips_total`:                            7,
		`devgate_flap_held_total`:                                      5,
		`devgate_flap_holding`:                                         1,
		`devgate_flap_refused_total`:                                   3,
		`devgate_evict_notices_total{result="sent"}`:                   4,
		`devgate_evict_notices_total{result="skipped"}`:                2,
		`devgate_access_lines_suppressed_total{reason="rate_limited"}`: 9,
	})
}
