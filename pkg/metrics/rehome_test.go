package metrics

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/devgate/devgate/pkg/proxy"
)

// Every cause x result pair shows at 0 before it happens; counted ones and
// undeclared ones show with their counts.
func TestRehomeCounters(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewProxyCollector(fixedProxy{stats: proxy.Stats{
		Moving: 2,
		Rehomes: map[proxy.MoveKey]uint64{
			{Cause: proxy.CauseDrain, Result: proxy.MoveMoved}:           3,
			{Cause: proxy.CauseBackendLost, Result: proxy.MoveTimeout}:   1,
			{Cause: "custom", Result: proxy.MoveResult("evicted_other")}: 4,
		},
	}}))
	m := scrape(t, reg)
	for _, c := range proxy.MoveCauses {
		for _, r := range proxy.MoveResults {
			if _, ok := m[fmt.Sprintf(`devgate_rehome_total{cause=%q,result=%q}`, c, r)]; !ok {
				t.Errorf("devgate_rehome_total{cause=%q,result=%q} missing", c, r)
			}
		}
	}
	want(t, m, map[string]float64{
		`devgate_rehome_in_progress`:                                          2,
		`devgate_rehome_total{cause="drain",result="moved"}`:                  3,
		`devgate_rehome_total{cause="backend_lost",result="evicted_timeout"}`: 1,
		`devgate_rehome_total{cause="rebalance",result="moved"}`:              0,
		`devgate_rehome_total{cause="custom",result="evicted_other"}`:         4,
		`devgate_rehome_total{cause="rebalance",result="evicted_no_optin"}`:   0,
		`devgate_rehome_total{cause="drain",result="evicted_old_owner_open"}`: 0,
	})
	lint(t, reg)
}

// ObserveMove records the pause of moves that ended with the device moved,
// by cause; fallbacks to an eviction paused nobody.
func TestObserveMove(t *testing.T) {
	h := NewRehomePauseHistogram()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(h)
	if got := countSamples(t, reg, "devgate_rehome_pause_seconds"); got != len(proxy.MoveCauses) {
		t.Fatalf("%d series before any move, want one per cause (%d)", got, len(proxy.MoveCauses))
	}
	on := ObserveMove(h)
	on(proxy.CauseDrain, proxy.MoveMoved, 30*time.Millisecond)
	on(proxy.CauseDrain, proxy.MoveMoved, 2*time.Second)
	on(proxy.CauseDrain, proxy.MoveDialFailed, time.Second)
	on(proxy.CauseBackendLost, proxy.MoveMoved, 4*time.Millisecond)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]uint64{}
	var sum float64
	for _, mf := range mfs {
		for _, mm := range mf.GetMetric() {
			got[labelString(mm.GetLabel())] = mm.GetHistogram().GetSampleCount()
			sum += mm.GetHistogram().GetSampleSum()
		}
	}
	if got[`{cause="drain"}`] != 2 || got[`{cause="backend_lost"}`] != 1 || got[`{cause="rebalance"}`] != 0 {
		t.Fatalf("counts %v", got)
	}
	if sum < 2.033 || sum > 2.035 {
		t.Fatalf("sum %v, want 2.034", sum)
	}
	lint(t, reg)
}

func countSamples(t *testing.T, g prometheus.Gatherer, name string) int {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return len(mf.GetMetric())
		}
	}
	return 0
}

// On a live gateway, a relocation (moved, or evicted where it cannot move)
// is counted under its cause, and the tally agrees.
func TestRehomeOnALiveGateway(t *testing.T) {
	g := startGateway(t, NewPrereadHistogram())
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewProxyCollector(g.proxy))
	if _, reply, err := g.connect(t, login("dev-r")); err != nil || !strings.Contains(string(reply), `"backend":"b1"`) {
		t.Fatalf("login: %q, %v", reply, err)
	}
	var tally proxy.MoveTally
	if n := g.proxy.Relocate("b1", 0, proxy.CauseRebalance, &tally); n != 1 {
		t.Fatalf("Relocate began %d, want 1", n)
	}
	m := waitScrape(t, reg, "the relocation counted", func(m map[string]float64) bool {
		total := 0.0
		for _, r := range proxy.MoveResults {
			total += m[fmt.Sprintf(`devgate_rehome_total{cause="rebalance",result=%q}`, r)]
		}
		return total == 1
	})
	if ended := tally.Moved.Load() + tally.Evicted.Load() + tally.Gone.Load(); ended != 1 {
		t.Fatalf("tally %d moved %d evicted %d gone", tally.Moved.Load(), tally.Evicted.Load(), tally.Gone.Load())
	}
	if m[`devgate_rehome_total{cause="drain",result="moved"}`] != 0 {
		t.Fatal("counted under the wrong cause")
	}
	lint(t, reg)
}
