//go:build e2e

package e2e

import (
	"context"
	"math"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	adminv1 "github.com/devgate/devgate/api/devgate/admin/v1"
	"github.com/devgate/devgate/pkg/sim"
)

// TestRehome: 1,000 devices send a numbered heartbeat every 100 ms through
// HAProxy and 3 gateway replicas to Go backends and the Java reference
// backend, all opted in to moves. A drain, a rebalance after the drained
// backend returns, a rebalance after a backend joins and the SIGKILL of the
// Java backend each move devices live: no device is disconnected, every
// heartbeat is answered once and in order (only those in flight at the
// kill may go unanswered), by the new owner, which saw the device's login
// on that connection, and no device is sent a partial or extra frame.
func TestRehome(t *testing.T) {
	c := newClusterWith(t, true)
	const devices = 1000
	chk, err := sim.NewChecker(sim.CheckConfig{Config: sim.Config{Target: c.lbAddr, Devices: devices, Prefix: "rh-",
		Concurrency: 64, Interval: 100 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan sim.CheckReport, 1)
	go func() { done <- chk.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	eventually(t, time.Minute, "every device connected", func() bool { return chk.Status().Connected == devices })
	time.Sleep(time.Second) // heartbeats flow before anything moves

	// phase runs act and waits until the devices on from (or any backend,
	// when "") that the checker sees switching reach want; it returns the
	// switches of the phase, from>to.
	phase := func(name string, want int, act func()) map[string]int {
		before := chk.Status()
		c.t = t
		start := time.Now()
		act()
		for deadline := time.Now().Add(30 * time.Second); int(chk.Status().Switches-before.Switches) < want; time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				st := chk.Status()
				for k, v := range sumByKey(c.metrics(), "devgate_rehome_") {
					if v != 0 && !strings.Contains(k, "_bucket") {
						t.Logf("%s %v", k, v)
					}
				}
				t.Fatalf("%s: %d of %d devices switched in 30 s; checker %+v", name, st.Switches-before.Switches, want, st)
			}
		}
		time.Sleep(500 * time.Millisecond) // anything more would show up now
		after := chk.Status()
		moves := map[string]int{}
		for k, n := range after.Moves {
			if d := n - before.Moves[k]; d != 0 {
				moves[k] = d
			}
		}
		t.Logf("%s: %d devices switched in %v: %v; disconnects %d, missing %d", name, after.Switches-before.Switches,
			time.Since(start).Round(time.Millisecond), moves, after.Disconnects-before.Disconnects, after.Missing-before.Missing)
		if after.Disconnects != 0 || len(after.Problems()) > 0 && !(name == "kill" && onlyMissing(after)) {
			t.Errorf("%s: disconnects %d, problems %v", name, after.Disconnects, after.Problems())
		}
		return moves
	}

	// 1. Drain go-1: its devices move to the owners the ring gives now.
	onGo1 := chk.Status().PerBackend["go-1"]
	moves := phase("drain", onGo1, func() {
		if _, err := c.gateways[0].api.DrainBackend(c.ctx(5*time.Second), &adminv1.DrainBackendRequest{
			Id: "go-1", Deadline: durationpb.New(0), EvictPerSecond: 200, Reason: "e2e rehome"}); err != nil {
			t.Fatal(err)
		}
	})
	expectMoves(t, "drain", moves, onGo1, func(from, to string) bool { return from == "go-1" })
	m := c.metrics()
	if got := sum(m, `devgate_rehome_total{cause="drain",result="moved"}`); got != float64(onGo1) {
		t.Errorf("devgate_rehome_total{cause=drain,result=moved} = %v, want %d", got, onGo1)
	}

	// 2. Undrain go-1 and rebalance: the same devices move back, and only they.
	if _, err := c.gateways[1].api.UndrainBackend(c.ctx(5*time.Second), &adminv1.UndrainBackendRequest{Id: "go-1"}); err != nil {
		t.Fatal(err)
	}
	c.awaitRing(4)
	moves = phase("rebalance back", onGo1, func() {
		last := c.rebalance(c.gateways[2], &adminv1.RebalanceRequest{EvictPerSecond: 200})
		t.Logf("rebalance: misplaced %d, moved %d, evicted %d", last.Misplaced, last.Moved, last.Evicted)
	})
	expectMoves(t, "rebalance back", moves, onGo1, func(from, to string) bool { return to == "go-1" })

	// 3. A fifth backend joins: a rebalance moves to it only the devices
	// the new ring gives it.
	c.startGoBackend("go-5")
	c.awaitRing(5)
	ring := c.lookup(c.gateways[0], "rh-", devices)
	toGo5 := 0
	for _, b := range ring {
		if b == "go-5" {
			toGo5++
		}
	}
	moves = phase("scale out", toGo5, func() { c.rebalance(c.gateways[0], &adminv1.RebalanceRequest{EvictPerSecond: 200}) })
	expectMoves(t, "scale out", moves, toGo5, func(from, to string) bool { return to == "go-5" })

	// 4. SIGKILL the Java backend: its devices move to their next owners.
	victim := c.nettyID()
	onVictim := chk.Status().PerBackend[victim]
	moves = phase("kill", onVictim, func() { c.backends[victim].p.kill() })
	expectMoves(t, "kill", moves, onVictim, func(from, to string) bool { return from == victim })

	m = c.metrics()
	for _, cause := range []string{"drain", "rebalance", "backend_lost"} {
		p50, p99, n := histQuantiles(m, "devgate_rehome_pause_seconds", `cause="`+cause+`"`)
		t.Logf("pause of a move (%s, %.0f moves, gateways' histogram): p50 %.1f ms, p99 %.1f ms", cause, n, 1000*p50, 1000*p99)
	}
	for key, v := range sumByKey(m, "devgate_rehome_total{") {
		if v != 0 && !strings.Contains(key, `result="moved"`) {
			t.Errorf("%s = %v: a move fell back to an eviction", key, v)
		}
	}

	cancel()
	r := <-done
	done <- r // for the deferred receive
	t.Logf("checker: %d devices, sent %d, answered %d, missing %d, in flight %d, switches %d, reconnects %d, gap between answers at a switch p50 %v p99 %v max %v",
		r.Devices, r.Sent, r.Answered, r.Missing, r.InFlight, r.Switches, r.Reconnects, r.PauseP50, r.PauseP99, r.PauseMax)
	if r.Disconnects != 0 || r.Duplicate != 0 || r.OutOfOrder != 0 || r.BadAnswers != 0 || r.ExtraFrames != 0 ||
		r.DevidEmpty != 0 || r.DevidWrong != 0 || r.StaleAnswers != 0 || r.InFlight != 0 {
		t.Errorf("report %+v", r)
	}
	// Only heartbeats in flight at the kill go unanswered: at most one
	// interval's worth, plus one, per device on the killed backend.
	if r.Missing > int64(2*onVictim) {
		t.Errorf("%d heartbeats unanswered; %d devices were on %s", r.Missing, onVictim, victim)
	}
}

// onlyMissing says whether r's only problem is unanswered heartbeats.
func onlyMissing(r sim.CheckReport) bool {
	for _, p := range r.Problems() {
		if !strings.HasPrefix(p, "missing") {
			return false
		}
	}
	return true
}

// expectMoves checks that a phase switched want devices, each as ok says.
func expectMoves(t *testing.T, name string, moves map[string]int, want int, ok func(from, to string) bool) {
	t.Helper()
	n := 0
	for k, v := range moves {
		from, to, _ := strings.Cut(k, ">")
		if !ok(from, to) {
			t.Errorf("%s: %d devices switched %s", name, v, k)
		}
		n += v
	}
	if n != want || want == 0 {
		t.Errorf("%s: %d devices switched, want %d (> 0)", name, n, want)
	}
}

// sumByKey sums, over the gateways, every series whose key starts with prefix.
func sumByKey(ms map[string]map[string]float64, prefix string) map[string]float64 {
	out := map[string]float64{}
	for _, m := range ms {
		for k, v := range m {
			if strings.HasPrefix(k, prefix) {
				out[k] += v
			}
		}
	}
	return out
}

// histQuantiles sums a histogram's buckets over the gateways for the series
// with labels and returns its p50 and p99 (linear within a bucket, as
// Prometheus' histogram_quantile) and its count.
func histQuantiles(ms map[string]map[string]float64, name, labels string) (p50, p99 float64, n float64) {
	buckets := map[float64]float64{}
	for k, v := range sumByKey(ms, name+"_bucket{"+labels+",le=") {
		le := strings.TrimSuffix(strings.TrimPrefix(k, name+"_bucket{"+labels+`,le="`), `"}`)
		b, err := strconv.ParseFloat(le, 64)
		if le == "+Inf" {
			b, err = math.Inf(1), nil
		}
		if err == nil {
			buckets[b] += v
		}
	}
	var les []float64
	for b := range buckets {
		les = append(les, b)
	}
	sort.Float64s(les)
	if len(les) == 0 {
		return 0, 0, 0
	}
	n = buckets[les[len(les)-1]]
	q := func(q float64) float64 {
		rank, lo, prev := q*n, 0.0, 0.0
		for _, b := range les {
			if c := buckets[b]; c >= rank && c > prev {
				if math.IsInf(b, 1) {
					return lo
				}
				return lo + (b-lo)*(rank-prev)/(c-prev)
			} else {
				prev = c
			}
			lo = b
		}
		return lo
	}
	return q(0.5), q(0.99), n
}
