package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/devgate/devgate/pkg/loadgen"
)

// mode is one kind of run: a load mode at a concurrency.
type mode struct {
	label    string // hold, churn, pingpong, pingpong-paced, bulk-1, bulk-16
	mode     string
	conc     int
	interval time.Duration // pingpong: pace of each device
}

func (b *bench) modes() []mode {
	m := []mode{
		{"hold", loadgen.Hold, 200, 0},
		{"churn", loadgen.Churn, b.o.churnConc, 0},
		{"pingpong", loadgen.Pingpong, b.o.pingConc, 0},
		{"pingpong-paced", loadgen.Pingpong, b.o.pingConc, b.o.pingInterval},
	}
	for _, c := range b.o.bulkConc {
		m = append(m, mode{fmt.Sprintf("bulk-%d", c), loadgen.Bulk, c, 0})
	}
	m = append(m, mode{"storm", loadgen.Storm, 200, 0})
	return slices.DeleteFunc(m, func(m mode) bool { return !b.wants(m.label) })
}

// wants says whether run label is to be run (--modes).
func (b *bench) wants(label string) bool {
	return len(b.o.modes) == 0 || slices.Contains(b.o.modes, label)
}

// record is one run: a raw JSON line of results.jsonl.
type record struct {
	Rep    int            `json:"rep"`
	Run    string         `json:"run"`
	Target string         `json:"target"`
	Load   loadgen.Result `json:"load"`
	// Hold through a proxy: the proxy's processes before and after.
	Before       *procStats `json:"proxy_before,omitempty"`
	After        *procStats `json:"proxy_after,omitempty"`
	KBPerDevice  float64    `json:"kb_per_device,omitempty"`
	FDsPerDevice float64    `json:"fds_per_device,omitempty"`
	// ProxyCPUms is the CPU time (user + system, every thread and child
	// process) the proxy spent during a churn, pingpong or bulk run: its
	// cost per connection, exchange or MB, whatever the other processes
	// on the machine got.
	ProxyCPUms float64 `json:"proxy_cpu_ms,omitempty"`
	// Storm: the herd's return after the backends restarted (storm.go).
	Storm *stormStats `json:"storm,omitempty"`
	// LoadAvg is the 1-minute load average when the run ended: other work
	// on the machine shows here.
	LoadAvg float64 `json:"loadavg1"`
}

func loadAvg() float64 {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

func (r record) summary() string {
	l := r.Load
	switch {
	case r.Storm != nil:
		s := r.Storm
		return fmt.Sprintf("held %d; back %d of %d in %.2fs (backends %.2fs); peak logins/s per backend %.0f (100ms) %.0f (1s); per backend %v; failed tries %d (%d devices); RSS %d -> peak %d KB",
			l.Ok, s.Back, s.Devices, s.AllBackSec, s.BackendsSec, s.Peak100msPS, s.Peak1sPS, s.PerBackend, s.FailedTries, s.FailedDevs, s.RSSBeforeKB, s.PeakRSSKB)
	case r.Run == "hold":
		return fmt.Sprintf("ok %d failed %d in %.1fs; %.1f KB %.2f fds a device", l.Ok, l.Failed, l.Seconds, r.KBPerDevice, r.FDsPerDevice)
	case l.MBPerSec > 0:
		return fmt.Sprintf("%.0f MB/s failed %d", l.MBPerSec, l.Failed)
	case l.ConnsPerSec > 0:
		return fmt.Sprintf("%.0f conns/s p50 %.0fus p99 %.0fus failed %d", l.ConnsPerSec, l.P50us, l.P99us, l.Failed)
	}
	return fmt.Sprintf("%.0f ops/s p50 %.0fus p99 %.0fus p999 %.0fus failed %d", l.OpsPerSec, l.P50us, l.P99us, l.P999us, l.Failed)
}

func writeJSONLine(w io.Writer, r record) error {
	return json.NewEncoder(w).Encode(r)
}

func (b *bench) runOne(ctx context.Context, rep int, m mode, t string) (record, error) {
	r := record{Rep: rep, Run: m.label, Target: t}
	if m.mode == loadgen.Hold {
		return b.runHold(ctx, r, m)
	}
	if m.mode == loadgen.Storm {
		return b.runStorm(ctx, r)
	}
	args := []string{"load", "--mode", m.mode, "--target", b.addrs(t), "--concurrency", strconv.Itoa(m.conc),
		"--duration", b.o.duration.String()}
	if m.interval > 0 {
		args = append(args, "--interval", m.interval.String())
	}
	if m.mode == loadgen.Churn {
		args = append(args, "--sources", "250", "--source-base", "40")
	}
	var wg sync.WaitGroup
	if t == "devgate" && rep == 1 && (m.label == "churn" || m.label == "pingpong") {
		// A CPU profile of the gateway while it carries this load.
		wg.Go(func() {
			time.Sleep(500 * time.Millisecond)
			secs := max(1, int(b.o.duration.Seconds())-1)
			b.fetch(fmt.Sprintf("/debug/pprof/profile?seconds=%d", secs), "devgate-"+m.label+"-cpu.pprof")
		})
	}
	var pid int
	if cmd := b.proxies[t]; cmd != nil {
		pid = cmd.Process.Pid
	}
	cpu0 := cpuTree(pid)
	out, err := exec.CommandContext(ctx, b.o.devgate, args...).Output()
	if pid != 0 {
		r.ProxyCPUms = cpuTree(pid) - cpu0
	}
	wg.Wait()
	if err != nil {
		return r, fmt.Errorf("load: %w", err)
	}
	return r, json.Unmarshal(out, &r.Load)
}

// runHold restarts the proxy, holds the devices from several load processes
// and reads the proxy's memory and files before and after.
func (b *bench) runHold(ctx context.Context, r record, m mode) (record, error) {
	var pid int
	if r.Target != "direct" {
		if err := b.startProxy(ctx, r.Target); err != nil {
			return r, err
		}
		pid = b.proxies[r.Target].Process.Pid
		time.Sleep(500 * time.Millisecond)
		s := statsTree(pid)
		r.Before = &s
	}
	n := b.o.holdDevices
	shares := loadShares(n, b.o.perLoadProc)
	procs := len(shares)
	type loadProc struct {
		cmd   *exec.Cmd
		stdin io.WriteCloser
		out   *bufio.Reader
	}
	var lps []loadProc
	defer func() {
		for _, lp := range lps {
			lp.stdin.Close()
			lp.cmd.Wait()
		}
	}()
	for k, share := range shares {
		cmd := exec.CommandContext(ctx, b.o.devgate, "load", "--mode", "hold", "--target", b.addrs(r.Target),
			"--devices", strconv.Itoa(share), "--first-device", strconv.Itoa(k*b.o.perLoadProc),
			"--concurrency", strconv.Itoa(m.conc/procs), "--sources", "100", "--source-base", strconv.Itoa(10+k),
			"--timeout", "3s", "--max-failures", "300", "--until-eof")
		stdin, err := cmd.StdinPipe()
		if err != nil {
			return r, err
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			return r, err
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			return r, err
		}
		lps = append(lps, loadProc{cmd, stdin, bufio.NewReader(stdout)})
	}
	for _, lp := range lps {
		line, err := lp.out.ReadBytes('\n')
		if err != nil {
			return r, fmt.Errorf("hold load: %w", err)
		}
		var res loadgen.Result
		if err := json.Unmarshal(line, &res); err != nil {
			return r, err
		}
		r.Load.Mode, r.Load.Targets = res.Mode, res.Targets
		r.Load.Concurrency += res.Concurrency
		r.Load.Devices += res.Devices
		r.Load.Ok += res.Ok
		r.Load.Failed += res.Failed
		r.Load.Errors = append(r.Load.Errors, res.Errors...)
		r.Load.Seconds = max(r.Load.Seconds, res.Seconds)
	}
	if pid != 0 {
		time.Sleep(time.Second) // let the proxy settle
		s := statsTree(pid)
		r.After = &s
		if r.Load.Ok > 0 {
			r.KBPerDevice = float64(s.RSSKB-r.Before.RSSKB) / float64(r.Load.Ok)
			r.FDsPerDevice = float64(s.FDs-r.Before.FDs) / float64(r.Load.Ok)
		}
		if r.Target == "devgate" && r.Rep == 1 {
			b.fetch("/debug/pprof/heap", "devgate-hold-heap.pprof")
			b.fetch("/debug/pprof/goroutine?debug=1", "devgate-hold-goroutines.txt")
			// The text form ends with runtime.MemStats: StackInuse vs HeapInuse.
			b.fetch("/debug/pprof/heap?debug=1", "devgate-hold-heap.txt")
		}
	}
	return r, nil
}

// fetch saves a devgate admin HTTP path under out/profiles.
func (b *bench) fetch(path, name string) {
	cl := &http.Client{Timeout: 30 * time.Second}
	resp, err := cl.Get("http://" + adminHTTP + path)
	if err != nil {
		fmt.Fprintf(os.Stderr, "fetch %s: %v\n", path, err)
		return
	}
	defer resp.Body.Close()
	f, err := os.Create(filepath.Join(b.o.out, "profiles", name))
	if err != nil {
		return
	}
	defer f.Close()
	io.Copy(f, resp.Body)
}

// loadShares splits n devices over load processes of at most per devices
// each (the per-process file limit), as evenly as they go.
func loadShares(n, per int) []int {
	procs := (n + per - 1) / per
	shares := make([]int, procs)
	for k := range shares {
		shares[k] = n / procs
		if k < n%procs {
			shares[k]++
		}
	}
	return shares
}
