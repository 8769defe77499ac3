package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"
)

// metric is one row of the table.
type metric struct {
	run, name string
	higher    bool // higher is better
	get       func(record) (float64, bool)
	// target checks devgate's median against the same run's medians.
	target string
	met    func(med map[string]float64) (bool, bool) // (met, known)
	// vs judges devgate against HAProxy at matched threads (d devgate's
	// median, h HAProxy's), once per pair run: 2 threads each, and 1.
	vs func(d, h float64) bool
	// from names the records shown in a target's column, if not its own
	// (the storm: devgate-paced under devgate).
	from map[string]string
}

func metrics(o options) []metric {
	held := func(r record) bool { return r.Target != "direct" && r.Load.Ok > 0 }
	ms := []metric{
		{run: "hold", name: fmt.Sprintf("RSS KB per idle device (%d held)", o.holdDevices),
			get: func(r record) (float64, bool) { return r.KBPerDevice, held(r) }, target: "devgate <= 4 KB",
			met: func(m map[string]float64) (bool, bool) { v, ok := m["devgate"]; return v <= 4, ok }},
		{run: "hold", name: "fds per idle device",
			get: func(r record) (float64, bool) { return r.FDsPerDevice, held(r) }, target: "devgate <= 2",
			met: func(m map[string]float64) (bool, bool) { v, ok := m["devgate"]; return v <= 2.05, ok }},
		{run: "hold", name: "devices held", higher: true,
			get: func(r record) (float64, bool) { return float64(r.Load.Ok), true }, target: fmt.Sprintf("all %d", o.holdDevices),
			met: func(m map[string]float64) (bool, bool) {
				v, ok := m["devgate"]
				return v >= float64(o.holdDevices), ok
			}},
		{run: "churn", name: fmt.Sprintf("churn conns/s (C=%d)", o.churnConc), higher: true,
			get: func(r record) (float64, bool) { return r.Load.ConnsPerSec, true }, target: ">= 1.0x haproxy",
			vs: func(d, h float64) bool { return d >= h }},
		{run: "churn", name: "proxy CPU us per connection", get: func(r record) (float64, bool) {
			return r.ProxyCPUms * 1000 / float64(r.Load.Ok), r.ProxyCPUms > 0 && r.Load.Ok > 0
		}, target: "<= 0.8x haproxy", vs: func(d, h float64) bool { return d <= 0.8*h }},
		{run: "churn", name: "churn setup p50 us", get: func(r record) (float64, bool) { return r.Load.P50us, true }},
		{run: "churn", name: "churn setup p99 us", get: func(r record) (float64, bool) { return r.Load.P99us, true },
			target: "<= haproxy", vs: func(d, h float64) bool { return d <= h }},
		{run: "pingpong", name: fmt.Sprintf("pingpong exchanges/s (C=%d)", o.pingConc), higher: true,
			get: func(r record) (float64, bool) { return r.Load.OpsPerSec, true }},
		{run: "pingpong", name: "proxy CPU us per exchange", get: func(r record) (float64, bool) {
			return r.ProxyCPUms * 1000 / float64(r.Load.Ok), r.ProxyCPUms > 0 && r.Load.Ok > 0
		}, target: "<= 0.9x haproxy", vs: func(d, h float64) bool { return d <= 0.9*h }},
		{run: "pingpong", name: "pingpong RTT p50 us", get: func(r record) (float64, bool) { return r.Load.P50us, true }},
		{run: "pingpong", name: "pingpong RTT p99 us", get: func(r record) (float64, bool) { return r.Load.P99us, true },
			target: "<= haproxy", vs: func(d, h float64) bool { return d <= h }},
		{run: "pingpong", name: "pingpong RTT p99.9 us", get: func(r record) (float64, bool) { return r.Load.P999us, true }},
		{run: "pingpong-paced", name: fmt.Sprintf("paced RTT p50 us (C=%d, 1 per %s each)", o.pingConc, o.pingInterval),
			get: func(r record) (float64, bool) { return r.Load.P50us, true }},
		{run: "pingpong-paced", name: "paced RTT p99 us", get: func(r record) (float64, bool) { return r.Load.P99us, true },
			target: "<= haproxy", vs: func(d, h float64) bool { return d <= h }},
		{run: "pingpong-paced", name: "paced RTT p99.9 us", get: func(r record) (float64, bool) { return r.Load.P999us, true }},
	}
	for _, c := range o.bulkConc {
		ms = append(ms, metric{run: fmt.Sprintf("bulk-%d", c), name: fmt.Sprintf("bulk MB/s both ways (%d conn)", c), higher: true,
			get: func(r record) (float64, bool) { return r.Load.MBPerSec, true }, target: ">= 0.9x haproxy",
			vs: func(d, h float64) bool { return d >= 0.9*h }},
			metric{run: fmt.Sprintf("bulk-%d", c), name: "proxy CPU ms per MB", get: func(r record) (float64, bool) {
				mb := float64(r.Load.TxBytes+r.Load.RxBytes) / 1e6
				return r.ProxyCPUms / mb, r.ProxyCPUms > 0 && mb > 0
			}})
	}
	return append(ms, stormMetrics(o)...)
}

// verdict judges a row: its vs once per matched-thread pair run ("2t yes ·
// 1t **no**"), or its met.
func (r row) verdict(pairs [][2]string) string {
	word := map[bool]string{true: "yes", false: "**no**"}
	if r.vs == nil {
		if r.met == nil {
			return ""
		}
		if met, known := r.met(r.med); known {
			return word[met]
		}
		return ""
	}
	var out []string
	for _, pr := range pairs {
		label, ok := map[[2]string]string{{"devgate", "haproxy"}: "2t", {"devgate-1t", "haproxy-1t"}: "1t"}[pr]
		d, okD := r.med[pr[0]]
		h, okH := r.med[pr[1]]
		if ok && okD && okH {
			out = append(out, label+" "+word[r.vs(d, h)])
		}
	}
	return strings.Join(out, " · ")
}

// anchorPairs are the devgate / HAProxy ratio columns for the targets run:
// matched threads first (devgate vs haproxy at 2, devgate-1t vs haproxy-1t),
// then devgate vs the Lua configuration.
func anchorPairs(targets []string) [][2]string {
	var pairs [][2]string
	for _, pr := range [][2]string{{"devgate", "haproxy"}, {"devgate-1t", "haproxy-1t"}, {"devgate", "haproxy-lua"}} {
		if slices.Contains(targets, pr[0]) && slices.Contains(targets, pr[1]) {
			pairs = append(pairs, pr)
		}
	}
	if len(pairs) == 0 { // keep the column: it says the anchor was not run
		pairs = append(pairs, [2]string{"devgate", "haproxy"})
	}
	return pairs
}

// row is a metric's medians per target.
type row struct {
	metric
	med map[string]float64
	n   map[string]int
}

type table struct {
	targets []string
	rows    []row
}

func summarise(all []record, targets []string, o options) table {
	t := table{targets: targets}
	for _, m := range metrics(o) {
		r := row{metric: m, med: map[string]float64{}, n: map[string]int{}}
		for _, tg := range targets {
			var vs []float64
			src := tg
			if f, ok := m.from[tg]; ok {
				src = f
			}
			for _, rec := range all {
				if rec.Run != m.run || rec.Target != src {
					continue
				}
				if v, ok := m.get(rec); ok {
					vs = append(vs, v)
				}
			}
			if len(vs) > 0 {
				r.med[tg], r.n[tg] = median(vs), len(vs)
			}
		}
		if len(r.med) == 0 {
			continue // not run (--modes)
		}
		t.rows = append(t.rows, r)
	}
	return t
}

func median(vs []float64) float64 {
	s := slices.Clone(vs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func fmtNum(v float64) string {
	switch {
	case v >= 1000:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

func ratio(a, b float64, okA, okB bool) string {
	if !okA || !okB || b == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f", a/b)
}

func renderMarkdown(t table, o options, skipped, versions []string, loads []float64) string {
	var sb strings.Builder
	p := func(f string, a ...any) { fmt.Fprintf(&sb, f, a...) }
	p("# Benchmarks: devgate vs HAProxy vs nginx (issue 4)\n\n")
	p("Generated by `make bench-suite` (`go run ./test/bench/run`) on %s, %s.\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"), hostLine())
	p("Medians of %d interleaved repetitions; every load runs straight at the backends (direct), then through each proxy, in an order that rotates per repetition.\n", o.reps)
	p("Backends: 3 `devgate backend` demo servers. Load: `devgate load` (pkg/loadgen). Raw runs: [results.jsonl](results.jsonl). Plot: [plot.png](plot.png).\n\n")
	p("Measured: %s.\n\n", strings.Join(versions, "; "))
	p("Which targets devgate misses and what limits them, with profiles and system call counts: [analysis.md](analysis.md) (written by hand, not by this run).\n\n")
	if len(loads) > 0 {
		p("1-minute load average at the end of each run: median %.1f, max %.1f on %d cores. The runs' own processes (load generator, 3 backends, proxy) count in it: every rate here is the share of 2 cores the proxy leaves to the others, so rates and latency tails move between repetitions; the hold figures (memory, files) and the proxy CPU rows do not depend on that share.\n\n",
			median(loads), slices.Max(loads), runtime.NumCPU())
	}
	for _, s := range skipped {
		p("Left out: %s\n\n", s)
	}
	p("| run | metric | %s |", strings.Join(t.targets, " | "))
	var proxies []string
	for _, tg := range t.targets {
		if tg != "direct" {
			proxies = append(proxies, tg)
			p(" %s / direct |", tg)
		}
	}
	rehome := slices.Contains(t.targets, "devgate-rehome")
	// devgate against HAProxy native at matched threads (GOMAXPROCS vs
	// nbthread), then against the Lua configuration of issue 4.
	pairs := anchorPairs(t.targets)
	for _, pr := range pairs {
		p(" %s / %s |", pr[0], pr[1])
	}
	extra := len(pairs)
	if rehome { // what moves cost when nothing moves: the login kept and frames followed
		p(" devgate-rehome / devgate |")
		extra++
	}
	p(" target | met |\n|")
	for range 2 + len(t.targets) + len(proxies) + 2 + extra {
		p("---|")
	}
	p("\n")
	for _, r := range t.rows {
		p("| %s | %s |", r.run, r.name)
		for _, tg := range t.targets {
			if v, ok := r.med[tg]; ok {
				p(" %s |", fmtNum(v))
			} else {
				p(" – |")
			}
		}
		d, okD := r.med["direct"]
		for _, tg := range proxies {
			v, ok := r.med[tg]
			p(" %s |", ratio(v, d, ok, okD))
		}
		for _, pr := range pairs {
			a, okA := r.med[pr[0]]
			h, okH := r.med[pr[1]]
			p(" %s |", ratio(a, h, okA, okH))
		}
		dv, ok1 := r.med["devgate"]
		if rehome {
			rv, ok := r.med["devgate-rehome"]
			p(" %s |", ratio(rv, dv, ok, ok1))
		}
		p(" %s | %s |\n", r.target, r.verdict(pairs))
	}
	if rehome {
		p("\ndevgate-rehome is devgate with `rehome: {enabled: true}`: each routed connection keeps its login frame and follows the frames of both directions, so that it can be moved; its targets (issue 15): RSS per idle device <= 1.5 KB, and the bulk and pingpong rows within 5%% of devgate.\n")
	}
	p("\nThreads: devgate runs with GOMAXPROCS=%d and HAProxy with nbthread %d; the -1t targets with 1 (GOMAXPROCS=1, nbthread 1), so each devgate / haproxy column compares matched thread counts. haproxy is the native configuration (`req.payload_lv(4,2),json_query('$.devid')`, no Lua); haproxy-lua the Lua fetch of issue 4. The met column judges devgate against HAProxy at matched threads: 2t devgate / haproxy, 1t devgate-1t / haproxy-1t (issue 17's targets).\n", defaultThreads, defaultThreads)
	p("\nRatios to direct: for rates above 1 is impossible, below 1 is the proxy's cost; for latencies above 1 is the added delay. ")
	p("Proxy CPU rows: user + system CPU time of the proxy's processes (all threads, nginx workers included) during the run, divided by the connections, exchanges or MB (sent + received) the load completed: what each proxy pays for the same work. ")
	p("Hold has no direct figure: it measures the proxy process alone (VmRSS and /proc/PID/fd of the process and its children, after minus before, divided by the devices held).\n\n")
	p("Profiles of devgate (first repetition): [heap under hold](profiles/devgate-hold-heap.pprof), [goroutines under hold](profiles/devgate-hold-goroutines.txt), [MemStats under hold](profiles/devgate-hold-heap.txt), ")
	p("[CPU under churn](profiles/devgate-churn-cpu.pprof), [CPU under pingpong](profiles/devgate-pingpong-cpu.pprof); read them with `go tool pprof -top bin/devgate FILE`.\n")
	return sb.String()
}

func hostLine() string {
	cpu := ""
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		n := strings.Count(string(b), "processor\t:")
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "model name\t: "); ok {
				cpu = fmt.Sprintf("%d × %s", n, v)
				break
			}
		}
	}
	return "loopback, " + cpu
}

// plot draws plot.png with gnuplot: ratios to direct per proxy, and memory
// and files per idle device.
func plot(t table, out, dir string) error {
	if _, err := exec.LookPath("gnuplot"); err != nil {
		return fmt.Errorf("gnuplot missing (apt-get install gnuplot-nox): %w", err)
	}
	var proxies []string
	for _, tg := range t.targets {
		if tg != "direct" {
			proxies = append(proxies, tg)
		}
	}
	var rat, hold strings.Builder
	holdRows := 0
	fmt.Fprintf(&rat, "metric %s\n", strings.Join(proxies, " "))
	fmt.Fprintf(&hold, "metric %s\n", strings.Join(proxies, " "))
	for _, r := range t.rows {
		label := strings.ReplaceAll(r.name, " ", "_")
		if r.run == "hold" {
			if strings.HasPrefix(r.name, "devices") {
				continue
			}
			fmt.Fprintf(&hold, "%s", label)
			for _, p := range proxies {
				fmt.Fprintf(&hold, " %g", r.med[p])
			}
			hold.WriteString("\n")
			holdRows++
			continue
		}
		d, ok := r.med["direct"]
		if !ok || d == 0 {
			continue
		}
		fmt.Fprintf(&rat, "%s", label)
		for _, p := range proxies {
			fmt.Fprintf(&rat, " %g", r.med[p]/d)
		}
		rat.WriteString("\n")
	}
	ratF, holdF := filepath.Join(dir, "ratios.dat"), filepath.Join(dir, "hold.dat")
	if err := os.WriteFile(ratF, []byte(rat.String()), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(holdF, []byte(hold.String()), 0o644); err != nil {
		return err
	}
	cols := func(f string) string {
		var s []string
		for i := range proxies {
			s = append(s, fmt.Sprintf("'%s' using %d:xtic(1) title columnheader", f, i+2))
		}
		return strings.Join(s, ", ")
	}
	// Without a hold run (--modes) the hold panel would have no points and
	// gnuplot would fail on it: leave it out.
	layout, holdPanel := 1, ""
	if holdRows > 0 {
		layout = 2
		holdPanel = fmt.Sprintf("set title \"per idle device held (target: <= 4 KB, <= 2 fds)\"\nplot %s\n", cols(holdF))
	}
	script := fmt.Sprintf(`set terminal pngcairo size 1400,900 font ",10"
set termoption noenhanced
set output '%s'
set multiplot layout %d,1 title "devgate vs HAProxy vs nginx (medians; loopback, same backends)"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set grid ytics
set key top left
set xtics rotate by -25
set bmargin 9
set rmargin 22
set datafile separator " "
set title "ratio to direct (rates: < 1 is lost throughput; latencies: > 1 is added delay)"
set logscale y
plot %s
unset logscale y
%sunset multiplot
`, filepath.Join(out, "plot.png"), layout, cols(ratF), holdPanel)
	gp := filepath.Join(dir, "plot.gp")
	if err := os.WriteFile(gp, []byte(script), 0o644); err != nil {
		return err
	}
	if b, err := exec.Command("gnuplot", gp).CombinedOutput(); err != nil {
		return fmt.Errorf("gnuplot: %v: %s", err, b)
	}
	return nil
}
