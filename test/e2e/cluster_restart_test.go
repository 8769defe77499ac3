//go:build e2e

package e2e

import (
	"fmt"
	"testing"
	"time"
)

// 5. Rolling restart: SIGTERM each replica in turn with devices connected:
// no device changes backend, no replica closes faster than its pace.
func scenarioRollingRestart(t *testing.T, c *cluster) {
	const n = 1500
	f := startFleet(t, c.lbAddr, "s5-", n)
	cur := f.current()
	for _, g := range c.gateways {
		m, err := scrape(g.http)
		if err != nil {
			t.Fatal(err)
		}
		conns, fds := m["devgate_connections_proxied"], m["process_open_fds"]
		want := conns / (0.8 * gatewayGrace.Seconds())
		samples := make(chan []sample, 1)
		go func() { samples <- sampleProxied(g) }()
		t0 := time.Now()
		took, clean := g.p.stop(gatewayGrace + 5*time.Second)
		gwRate, gwMax := sampledRate(<-samples)
		closes := f.closesSince(t0)
		measured, span, maxWin := rate(closes)
		buckets := make([]int, int(took/time.Second)+1)
		for _, c := range closes {
			if b := int(c.Sub(t0) / time.Second); b < len(buckets) {
				buckets[b]++
			}
		}
		t.Logf("restart %s: %v connections (%v fds open, %.1f per connection), SIGTERM -> exit %v (clean %v); pace %.1f/s = conns/(0.8 x grace %v); gateway side (its metrics every 100 ms): %.1f/s overall, max %.1f/s over 1 s; device side: %d closes over %v = %.1f/s, max in 1 s %d, per second since SIGTERM %v",
			g.id, conns, fds, fds/max(conns, 1), took.Round(time.Millisecond), clean, want, gatewayGrace, gwRate, gwMax,
			len(closes), span.Round(time.Millisecond), measured, maxWin, buckets)
		if !clean {
			t.Errorf("%s did not exit within grace + 5 s", g.id)
		}
		// Overall rate within 10%; any 1 s window, measured by the gateway
		// itself, within 20% (100 ms sampling on a 2-CPU machine).
		if measured > want*1.1 || gwRate > want*1.1 || gwMax > want*1.2+2 {
			t.Errorf("%s closed faster than its pace %.1f/s: device side %.1f/s, gateway side %.1f/s, max %.1f/s over 1 s", g.id, want, measured, gwRate, gwMax)
		}
		c.startGateway(g)
		time.Sleep(1500 * time.Millisecond) // HAProxy: rise 2 x 500 ms
		eventually(t, 20*time.Second, "fleet reconnected", func() bool { return f.connected() == n })
	}
	now := f.current()
	changed := 0
	h := f.history()
	for i := range cur {
		if now[i] != cur[i] {
			changed++
			var rs []string
			for _, r := range h[i] {
				rs = append(rs, fmt.Sprintf("%s %s-%s", r.backend, r.opened.Format("15:04:05.000"), r.closed.Format("15:04:05.000")))
			}
			t.Logf("changed: %s %v", f.ids[i], rs)
		}
	}
	t.Logf("rolling restart: %d devices, %d changed backend, login failures while replicas restarted %d", n, changed, f.failures())
	if changed != 0 {
		t.Errorf("%d devices changed backend", changed)
	}
	f.stop()
}

type sample struct {
	at      time.Time
	proxied float64
}

// sampleProxied scrapes g's proxied connections every 100 ms until its
// admin HTTP port stops answering (the process exits).
func sampleProxied(g *gateway) []sample {
	var out []sample
	for range 200 {
		m, err := scrape(g.http)
		if err != nil {
			break
		}
		out = append(out, sample{time.Now(), m["devgate_connections_proxied"]})
		time.Sleep(100 * time.Millisecond)
	}
	return out
}

// sampledRate is the eviction rate from the first decrease to the last
// sample, and the highest rate over any window of at least 1 s.
func sampledRate(s []sample) (overall, maxPerSec float64) {
	i0 := 0
	for i0+1 < len(s) && s[i0+1].proxied >= s[0].proxied {
		i0++
	}
	s = s[i0:]
	if len(s) < 2 {
		return 0, 0
	}
	last := len(s) - 1
	for last > 0 && s[last-1].proxied == s[last].proxied {
		last--
	}
	if d := s[last].at.Sub(s[0].at).Seconds(); d > 0 {
		overall = (s[0].proxied - s[last].proxied) / d
	}
	for i := range s {
		for j := i + 1; j < len(s); j++ {
			if d := s[j].at.Sub(s[i].at); d >= time.Second {
				maxPerSec = max(maxPerSec, (s[i].proxied-s[j].proxied)/d.Seconds())
				break
			}
		}
	}
	return overall, maxPerSec
}
