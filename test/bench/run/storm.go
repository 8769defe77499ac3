package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/devgate/devgate/pkg/loadgen"
)

// The storm run (issue 16): stormDevices held through a proxy, then the
// backends restart (stormBackend.restart) and every device logs in again
// at once, without backoff. Variants of the proxies for it, each started
// fresh on its own port in front of the storm backends:
var stormAddr = map[string]string{
	"devgate":           "127.0.0.1:19010",
	"devgate-paced":     "127.0.0.1:19013", // admission: {loginsPerSecond: --storm-pace}
	"haproxy":           "127.0.0.1:19011", // server maxconn + timeout queue
	"haproxy-ratelimit": "127.0.0.1:19014", // and rate-limit sessions on the frontend
	"nginx":             "127.0.0.1:19012",
}

const (
	stormAdminHTTP = "127.0.0.1:19095" // the storm devgate's admin HTTP
	// stormQueue is HAProxy's timeout queue and devgate's maxWait: how long
	// a proxy may hold a device before its backend takes it.
	stormQueue = 30 * time.Second
	// stormRSSEvery is how often the proxy's RSS is read during the storm.
	stormRSSEvery = 20 * time.Millisecond
)

// stormVariants are the storm's targets for the proxies that started.
func stormVariants(started []string) []string {
	var v []string
	for _, t := range started {
		switch t {
		case "devgate":
			v = append(v, "devgate", "devgate-paced")
		case "haproxy":
			v = append(v, "haproxy", "haproxy-ratelimit")
		case "nginx":
			v = append(v, "nginx")
		}
	}
	return v
}

// stormStats are a storm run's figures (record.Storm).
type stormStats struct {
	Devices int `json:"devices"` // held when the backends restarted
	// Logins at the backends from the restart on: all, and the most any
	// one backend took within 100 ms and within 1 s (as per second).
	Logins      int     `json:"logins"`
	Peak100msPS float64 `json:"peak_100ms_per_s"`
	Peak1sPS    float64 `json:"peak_1s_per_s"`
	PerBackend  []int   `json:"per_backend"`
	// Each backend's logins and accepts per 100 ms from the restart, and
	// the accepts' peak: a login lands after its accept.
	Logins100ms    [][]int `json:"logins_100ms"`
	Accepts100ms   [][]int `json:"accepts_100ms"`
	AcceptPeak1sPS float64 `json:"accept_peak_1s_per_s"`
	// SecondMax is the most logins a backend took in one of the whole
	// seconds counted from the restart (fixed windows, not sliding).
	SecondMax    int     `json:"second_max"`
	AllBackSec   float64 `json:"all_back_s"`     // restart to the last device's login reply
	BackendsSec  float64 `json:"backends_s"`     // restart to the last login at a backend
	Back         int     `json:"back"`           // devices logged in again
	FailedTries  int     `json:"failed_tries"`   // re-login attempts that failed
	FailedDevs   int     `json:"failed_devices"` // devices with a failed attempt
	RSSBeforeKB  int     `json:"rss_before_kb"`  // proxy, holding every device
	PeakRSSKB    int     `json:"peak_rss_kb"`    // proxy's peak during the storm
	ReloginP50ms float64 `json:"relogin_p50_ms"` // a device's drop to its login reply
	ReloginP99ms float64 `json:"relogin_p99_ms"`
	Settings     string  `json:"settings,omitempty"`
}

// stormSettings names what meters the herd in each variant.
func (b *bench) stormSettings(v string) string {
	switch v {
	case "devgate-paced":
		return fmt.Sprintf("admission: {loginsPerSecond: %d, maxWait: %s, slowStart: 0s}", b.o.stormPace, stormQueue)
	case "haproxy":
		return fmt.Sprintf("server maxconn %d, timeout queue %s", stormBackendMaxConns, stormQueue)
	case "haproxy-ratelimit":
		return fmt.Sprintf("server maxconn %d, timeout queue %s, frontend rate-limit sessions %d", stormBackendMaxConns, stormQueue, numBackends*b.o.stormPace)
	}
	return "none"
}

// startStormProxy starts variant v fresh in front of the storm backends.
func (b *bench) startStormProxy(ctx context.Context, v string) (*exec.Cmd, error) {
	dir := filepath.Join(b.dir, "storm-"+v)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var bl []backendAddr
	for _, s := range b.storm {
		bl = append(bl, backendAddr{s.id, s.addr()})
	}
	data := []any{"Dir", dir, "Backends", bl}
	switch v {
	case "devgate-paced":
		data = append(data, "Pace", b.o.stormPace, "MaxWait", stormQueue.String())
	case "haproxy", "haproxy-ratelimit":
		data = append(data, "ServerMaxconn", stormBackendMaxConns, "QueueTimeout", stormQueue.String())
		if v == "haproxy-ratelimit" {
			data = append(data, "RateLimit", numBackends*b.o.stormPace)
		}
	}
	kind := map[string]string{"devgate-paced": "devgate", "haproxy-ratelimit": "haproxy"}[v]
	if kind == "" {
		kind = v
	}
	return b.launch(ctx, "storm-"+v, kind, stormAddr[v], stormAdminHTTP, data...)
}

// runStorm holds the devices through variant v, restarts the backends and
// measures the herd's return.
func (b *bench) runStorm(ctx context.Context, r record) (record, error) {
	cmd, err := b.startStormProxy(ctx, r.Target)
	if err != nil {
		return r, err
	}
	defer stop(cmd)
	pid := cmd.Process.Pid
	st := &stormStats{Settings: b.stormSettings(r.Target)}
	r.Storm = st

	n := b.o.stormDevices
	shares := loadShares(n, b.o.perLoadProc)
	procs := len(shares)
	type loadProc struct {
		cmd   *exec.Cmd
		stdin io.WriteCloser
		lines chan []byte
	}
	var lps []loadProc
	defer func() {
		for _, lp := range lps {
			lp.stdin.Close()
			lp.cmd.Wait()
		}
	}()
	for k, share := range shares {
		cmd := exec.CommandContext(ctx, b.o.devgate, "load", "--mode", loadgen.Storm, "--target", stormAddr[r.Target],
			"--devices", strconv.Itoa(share), "--first-device", strconv.Itoa(k*b.o.perLoadProc),
			"--concurrency", strconv.Itoa(200/procs), "--sources", "100", "--source-base", strconv.Itoa(60+k),
			"--timeout", (stormQueue + 5*time.Second).String(), "--max-failures", "300",
			"--storm-wait", b.o.stormWait.String(), "--until-eof")
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
		lines := make(chan []byte, 2)
		go func() {
			defer close(lines)
			br := bufio.NewReader(stdout)
			for {
				l, err := br.ReadBytes('\n')
				if err != nil {
					return
				}
				lines <- l
			}
		}()
		lps = append(lps, loadProc{cmd, stdin, lines})
	}
	// Each process's first line: its devices are held.
	timeout := time.After(5 * time.Minute)
	for _, lp := range lps {
		var res loadgen.Result
		if err := readLine(lp.lines, timeout, &res); err != nil {
			return r, fmt.Errorf("storm hold: %w", err)
		}
		r.Load.Mode, r.Load.Targets = res.Mode, res.Targets
		r.Load.Devices += res.Devices
		r.Load.Ok += res.Ok
		r.Load.Failed += res.Failed
		r.Load.Errors = append(r.Load.Errors, res.Errors...)
		r.Load.Seconds = max(r.Load.Seconds, res.Seconds)
	}
	time.Sleep(time.Second) // let the proxy settle
	st.RSSBeforeKB = statsTree(pid).RSSKB
	for _, s := range b.storm {
		s.take()
	}

	// The storm: every backend restarts at once; the proxy's RSS is read
	// until every load process reports.
	stopRSS := make(chan struct{})
	var rssWG sync.WaitGroup
	pids := append([]int{pid}, children(pid)...) // nginx: its workers
	rssWG.Go(func() {
		t := time.NewTicker(stormRSSEvery)
		defer t.Stop()
		for {
			kb := 0
			for _, p := range pids {
				kb += vmRSS(p)
			}
			st.PeakRSSKB = max(st.PeakRSSKB, kb)
			select {
			case <-stopRSS:
				return
			case <-t.C:
			}
		}
	})
	trigger := time.Now()
	var restarts sync.WaitGroup
	for _, s := range b.storm {
		restarts.Go(func() {
			if err := s.restart(); err != nil {
				log.Printf("storm: restart %s: %v", s.id, err)
			}
		})
	}
	restarts.Wait()
	var lastBack int64
	var p50, p99 []float64
	timeout = time.After(b.o.stormWait + 2*time.Minute)
	for _, lp := range lps {
		var sr loadgen.StormResult
		if err := readLine(lp.lines, timeout, &sr); err != nil {
			close(stopRSS)
			rssWG.Wait()
			return r, fmt.Errorf("storm: %w", err)
		}
		st.Devices += sr.Held
		st.Back += sr.Back
		st.FailedTries += sr.FailedTries
		st.FailedDevs += sr.FailedDevs
		lastBack = max(lastBack, sr.LastBackNs)
		p50, p99 = append(p50, sr.P50ms), append(p99, sr.P99ms)
		r.Load.Errors = append(r.Load.Errors, sr.Errors...)
	}
	time.Sleep(200 * time.Millisecond)
	close(stopRSS)
	rssWG.Wait()
	if lastBack > 0 {
		st.AllBackSec = time.Unix(0, lastBack).Sub(trigger).Seconds()
	}
	st.ReloginP50ms, st.ReloginP99ms = median(p50), slicesMax(p99)
	var last time.Time
	for _, s := range b.storm {
		ls, as := s.take()
		sortTimes(ls)
		sortTimes(as)
		st.Logins100ms = append(st.Logins100ms, bins(ls, trigger, 100*time.Millisecond))
		for _, c := range bins(ls, trigger, time.Second) {
			st.SecondMax = max(st.SecondMax, c)
		}
		st.Accepts100ms = append(st.Accepts100ms, bins(as, trigger, 100*time.Millisecond))
		st.AcceptPeak1sPS = max(st.AcceptPeak1sPS, float64(peakIn(as, time.Second)))
		st.Logins += len(ls)
		st.PerBackend = append(st.PerBackend, len(ls))
		st.Peak100msPS = max(st.Peak100msPS, float64(peakIn(ls, 100*time.Millisecond))*10)
		st.Peak1sPS = max(st.Peak1sPS, float64(peakIn(ls, time.Second)))
		if len(ls) > 0 && ls[len(ls)-1].After(last) {
			last = ls[len(ls)-1]
		}
	}
	if !last.IsZero() {
		st.BackendsSec = last.Sub(trigger).Seconds()
	}
	return r, nil
}

// readLine decodes the next JSON line of a load process into v.
func readLine(lines <-chan []byte, timeout <-chan time.Time, v any) error {
	select {
	case l, ok := <-lines:
		if !ok {
			return fmt.Errorf("load process ended early")
		}
		return json.Unmarshal(l, v)
	case <-timeout:
		return fmt.Errorf("no answer from the load process")
	}
}

func slicesMax(vs []float64) float64 {
	m := 0.0
	for _, v := range vs {
		m = max(m, v)
	}
	return m
}
