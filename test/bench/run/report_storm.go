package main

import (
	"fmt"
	"strings"
)

// stormColumn is the storm variant shown in the main table's column of
// each proxy: devgate paced (the intent), HAProxy with maxconn and
// a queue (the best effort for it), nginx as it is.
var stormColumn = map[string]string{"devgate": "devgate-paced", "haproxy": "haproxy", "nginx": "nginx"}

// stormMetrics are the storm's rows of the main table.
func stormMetrics(o options) []metric {
	st := func(f func(*stormStats) float64) func(record) (float64, bool) {
		return func(r record) (float64, bool) {
			if r.Storm == nil {
				return 0, false
			}
			return f(r.Storm), true
		}
	}
	paced := func(ok func(v float64) bool) func(map[string]float64) (bool, bool) {
		return func(m map[string]float64) (bool, bool) { v, k := m["devgate"]; return ok(v), k }
	}
	pace := float64(o.stormPace)
	return []metric{
		{run: "storm", name: fmt.Sprintf("peak logins/s at a backend, 100 ms windows (%d reconnect at once; devgate paced at %d/s)", o.stormDevices, o.stormPace),
			get: st(func(s *stormStats) float64 { return s.Peak100msPS }), from: stormColumn},
		{run: "storm", name: "peak logins/s at a backend, 1 s windows", from: stormColumn,
			get:    st(func(s *stormStats) float64 { return s.Peak1sPS }),
			target: fmt.Sprintf("devgate paced <= %d (the pace, +10%%)", o.stormPace),
			met:    paced(func(v float64) bool { return v <= 1.1*pace })},
		{run: "storm", name: "peak new connections/s at a backend (accepts), 1 s windows", from: stormColumn,
			get: st(func(s *stormStats) float64 { return s.AcceptPeak1sPS })},
		{run: "storm", name: "seconds until all are back (restart to last login reply)", from: stormColumn,
			get: st(func(s *stormStats) float64 { return s.AllBackSec })},
		{run: "storm", name: "devices back", higher: true, from: stormColumn,
			get:    st(func(s *stormStats) float64 { return float64(s.Back) }),
			target: fmt.Sprintf("all %d", o.stormDevices),
			met:    paced(func(v float64) bool { return v >= float64(o.stormDevices) })},
		{run: "storm", name: "failed re-login attempts (refused, closed, timed out)", from: stormColumn,
			get:    st(func(s *stormStats) float64 { return float64(s.FailedTries) }),
			target: "devgate paced: 0 refused", met: paced(func(v float64) bool { return v == 0 })},
		{run: "storm", name: "proxy peak RSS MB during the storm", from: stormColumn,
			get: st(func(s *stormStats) float64 { return float64(s.PeakRSSKB) / 1024 })},
	}
}

// renderStorm is the storm section: every variant's medians and settings.
func renderStorm(all []record, variants []string, o options) string {
	var sb strings.Builder
	p := func(f string, a ...any) { fmt.Fprintf(&sb, f, a...) }
	settings := map[string]string{}
	var rows []string
	for _, v := range variants {
		var recs []record
		for _, r := range all {
			if r.Run == "storm" && r.Target == v && r.Storm != nil {
				recs = append(recs, r)
				settings[v] = r.Storm.Settings
			}
		}
		if len(recs) == 0 {
			continue
		}
		med := func(f func(*stormStats) float64) string {
			var vs []float64
			for _, r := range recs {
				vs = append(vs, f(r.Storm))
			}
			return fmtNum(median(vs))
		}
		rows = append(rows, fmt.Sprintf("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |", v,
			med(func(s *stormStats) float64 { return s.Peak100msPS }),
			med(func(s *stormStats) float64 { return s.Peak1sPS }),
			med(func(s *stormStats) float64 { return float64(s.SecondMax) }),
			med(func(s *stormStats) float64 { return s.AcceptPeak1sPS }),
			med(func(s *stormStats) float64 { return s.AllBackSec }),
			med(func(s *stormStats) float64 { return s.ReloginP50ms }),
			med(func(s *stormStats) float64 { return s.ReloginP99ms }),
			med(func(s *stormStats) float64 { return float64(s.Back) }),
			med(func(s *stormStats) float64 { return float64(s.FailedTries) }),
			med(func(s *stormStats) float64 { return float64(s.FailedDevs) }),
			med(func(s *stormStats) float64 { return float64(s.RSSBeforeKB) / 1024 }),
			med(func(s *stormStats) float64 { return float64(s.PeakRSSKB) / 1024 })))
	}
	if len(rows) == 0 {
		return ""
	}
	p("\n## Reconnect storm (issue 16)\n\n")
	p("%d devices held through the proxy (3 demo backends, in the runner, every login timestamped where it lands); then every backend restarts at once: it closes all its connections and serves its listening socket again at once. ", o.stormDevices)
	p("Each proxy closes the devices, which log in again at once (a failed attempt is retried after 10 ms, no backoff). ")
	p("Peaks: the most logins one backend took within any 100 ms or 1 s window (sliding), per second; and within one of the whole seconds counted from the restart. Back: from the restart to the last device's login reply. Re-login: a device's drop to its login reply. Medians of %d.\n\n", o.reps)
	p("| variant | peak logins/s per backend (100 ms) | (1 s) | most in a whole second from the restart | peak accepts/s per backend (1 s) | s until all back | re-login p50 ms | re-login p99 ms | devices back | failed attempts | devices with a failure | RSS MB holding | peak RSS MB in the storm |\n")
	p("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	p("%s\n\n", strings.Join(rows, "\n"))
	for _, v := range variants {
		if s, ok := settings[v]; ok {
			p("- %s: %s\n", v, s)
		}
	}
	p("\nThe main table's storm rows show devgate-paced in the devgate column.\n")
	return sb.String()
}
