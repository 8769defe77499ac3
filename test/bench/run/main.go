// Command run is the benchmark suite of issue 4: it starts demo backends,
// devgate, HAProxy and nginx on loopback, runs the `devgate load` modes
// against each of them and straight at the backends, interleaved, and writes
// raw JSON lines, a markdown table and a PNG plot.
//
//	go run ./test/bench/run --devgate bin/devgate --out docs/benchmarks
//
// HAProxy and nginx (with libnginx-mod-stream-js) come from Debian; a proxy
// whose binary is missing is left out of the run and the table says so.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/devgate/devgate/pkg/loadgen"
)

type options struct {
	devgate, out, src string
	reps              int
	holdDevices       int
	perLoadProc       int
	duration          time.Duration
	churnConc         int
	pingConc          int
	pingInterval      time.Duration
	bulkConc          []int
	proxies           []string
	modes             []string // run labels to run; empty: all
	stormDevices      int
	stormPace         int
	stormWait         time.Duration
}

func main() {
	var o options
	flag.StringVar(&o.devgate, "devgate", "bin/devgate", "devgate binary (backends, gateway and load tool)")
	flag.StringVar(&o.out, "out", "docs/benchmarks", "directory for results.jsonl, README.md, plot.png and profiles")
	flag.StringVar(&o.src, "src", "test/bench", "directory of the proxy config templates")
	flag.IntVar(&o.reps, "reps", 5, "repetitions; the table shows medians")
	flag.IntVar(&o.holdDevices, "hold-devices", 9000, "idle devices held per proxy")
	flag.IntVar(&o.perLoadProc, "per-load-process", 5000, "hold devices per load process (each process stays under the 20,000-fd limit)")
	flag.DurationVar(&o.duration, "duration", 4*time.Second, "measured time of churn, pingpong and bulk runs")
	flag.IntVar(&o.churnConc, "churn-concurrency", 32, "churn: connections set up at once")
	flag.IntVar(&o.pingConc, "pingpong-concurrency", 64, "pingpong: devices")
	flag.DurationVar(&o.pingInterval, "pingpong-interval", 10*time.Millisecond, "pingpong-paced: each device sends every interval")
	bulk := flag.String("bulk-concurrency", "1,16", "bulk: connection counts")
	proxies := flag.String("proxies", "devgate-1t,devgate,devgate-rehome,haproxy-1t,haproxy,haproxy-lua,nginx",
		"proxies to measure besides direct (-1t: 1 thread, GOMAXPROCS=1 or nbthread 1; haproxy-lua: the Lua fetch)")
	modes := flag.String("modes", "", "runs to do, comma-separated (hold, churn, pingpong, pingpong-paced, bulk-N, storm); empty: all")
	flag.IntVar(&o.stormDevices, "storm-devices", 9000, "storm: devices held, then reconnecting at once")
	flag.IntVar(&o.stormPace, "storm-pace", 500, "storm: logins a second per backend (devgate-paced's admission.loginsPerSecond, haproxy-ratelimit's rate / backends)")
	flag.DurationVar(&o.stormWait, "storm-wait", time.Minute, "storm: how long after the drop the devices may take to be back")
	flag.Parse()
	if *modes != "" {
		o.modes = strings.Split(*modes, ",")
	}
	for _, s := range strings.Split(*bulk, ",") {
		n, err := strconv.Atoi(s)
		if err != nil {
			log.Fatalf("bulk-concurrency: %v", err)
		}
		o.bulkConc = append(o.bulkConc, n)
	}
	o.proxies = strings.Split(*proxies, ",")
	if err := run(o); err != nil {
		log.Fatal(err)
	}
}

func run(o options) error {
	for _, p := range []*string{&o.devgate, &o.out, &o.src} {
		abs, err := filepath.Abs(*p)
		if err != nil {
			return err
		}
		*p = abs
	}
	if err := os.MkdirAll(filepath.Join(o.out, "profiles"), 0o755); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "devgate-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	ctx := context.Background()

	env := &bench{o: o, dir: dir}
	defer env.stopAll()
	if err := env.startBackends(ctx); err != nil {
		return err
	}
	var skipped []string
	for _, name := range o.proxies {
		if err := env.startProxy(ctx, name); err != nil {
			log.Printf("%s left out: %v", name, err)
			skipped = append(skipped, fmt.Sprintf("%s: %v", name, err))
			continue
		}
		env.targets = append(env.targets, name)
	}
	targets := append([]string{"direct"}, env.targets...)
	storm := stormVariants(env.targets)
	if env.wants("storm") && len(storm) > 0 {
		if env.storm, err = startStormBackends(numBackends, stormBackendBase); err != nil {
			return err
		}
	}

	raw, err := os.Create(filepath.Join(o.out, "results.jsonl"))
	if err != nil {
		return err
	}
	defer raw.Close()
	var all []record
	start := time.Now()
	for rep := 1; rep <= o.reps; rep++ {
		// Interleave: each mode runs every target before the next mode, and
		// the order of targets rotates from one repetition to the next.
		rotate := func(ts []string) []string {
			order := slices.Clone(ts)
			for range (rep - 1) % max(1, len(order)) {
				order = append(order[1:], order[0])
			}
			return order
		}
		for _, m := range env.modes() {
			order := rotate(targets)
			if m.mode == loadgen.Storm {
				order = rotate(storm)
			}
			for _, t := range order {
				r, err := env.runOne(ctx, rep, m, t)
				if err != nil {
					return fmt.Errorf("rep %d %s %s: %w", rep, m.label, t, err)
				}
				r.LoadAvg = loadAvg()
				log.Printf("rep %d %-12s %-14s %s", rep, m.label, t, r.summary())
				all = append(all, r)
				if err := writeJSONLine(raw, r); err != nil {
					return err
				}
			}
		}
	}
	log.Printf("runs took %s", time.Since(start).Round(time.Second))
	tab := summarise(all, targets, o)
	var loads []float64
	for _, r := range all {
		loads = append(loads, r.LoadAvg)
	}
	md := renderMarkdown(tab, o, skipped, env.versions(), loads) + renderStorm(all, storm, o)
	if err := os.WriteFile(filepath.Join(o.out, "README.md"), []byte(md), 0o644); err != nil {
		return err
	}
	if err := plot(tab, o.out, dir); err != nil {
		log.Printf("plot: %v", err)
	}
	fmt.Print(md)
	return nil
}

// versions names what was measured.
func (b *bench) versions() []string {
	var v []string
	out, _ := exec.Command(b.o.devgate, "version").Output()
	v = append(v, "devgate "+strings.TrimSpace(string(out)))
	if out, err := exec.Command("haproxy", "-v").Output(); err == nil {
		v = append(v, strings.SplitN(string(out), "\n", 2)[0])
	}
	if out, err := exec.Command("nginx", "-v").CombinedOutput(); err == nil {
		v = append(v, strings.TrimSpace(string(out)))
	}
	return v
}
