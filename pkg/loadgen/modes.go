package loadgen

import (
	"bytes"
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/devgate/devgate/pkg/sim"
)

// runHold opens cfg.Devices connections, each after login and one heartbeat,
// and returns with them open.
func runHold(ctx context.Context, cfg *Config) (*Result, error) {
	r, conns, err := holdAll(ctx, cfg)
	for _, d := range conns {
		if d != nil {
			r.held = append(r.held, d.c)
		}
	}
	if err != nil {
		r.Release()
	}
	return r, err
}

// holdAll opens the held connections: device i's at conns[i], nil if it
// failed. On ctx's end it closes them and returns ctx's error.
func holdAll(ctx context.Context, cfg *Config) (*Result, []*device, error) {
	start := time.Now()
	conns := make([]*device, cfg.Devices)
	var (
		next, failed atomic.Int64
		mu           sync.Mutex
		errs         errSet
		wg           sync.WaitGroup
	)
	for range min(cfg.Concurrency, cfg.Devices) {
		wg.Go(func() {
			for ctx.Err() == nil {
				if cfg.MaxFailures > 0 && failed.Load() >= int64(cfg.MaxFailures) {
					return
				}
				i := int(next.Add(1) - 1)
				if i >= cfg.Devices {
					return
				}
				d, err := connect(ctx, cfg, i)
				if err == nil {
					if err = d.heartbeat(cfg.Timeout, 1); err != nil {
						d.c.Close()
					}
				}
				if err != nil {
					failed.Add(1)
					mu.Lock()
					errs.add(err)
					mu.Unlock()
					continue
				}
				d.c.SetDeadline(time.Time{})
				d.in, d.out = nil, nil
				conns[i] = d
			}
		})
	}
	wg.Wait()
	r := &Result{Devices: cfg.Devices, Failed: int(failed.Load()), Errors: errs}
	for _, d := range conns {
		if d != nil {
			r.Ok++
		}
	}
	r.Seconds = time.Since(start).Seconds()
	if err := ctx.Err(); err != nil {
		for i, d := range conns {
			if d != nil {
				d.c.Close()
				conns[i] = nil
			}
		}
		return r, conns, err
	}
	return r, conns, nil
}

// worker is one goroutine's share of a timed run.
type worker struct {
	ok, failed int
	samples    []time.Duration
	errs       errSet
	tx, rx     int64
}

// merge sums the workers into r.
func merge(r *Result, ws []worker) []time.Duration {
	var all []time.Duration
	for i := range ws {
		w := &ws[i]
		r.Ok += w.ok
		r.Failed += w.failed
		r.TxBytes += w.tx
		r.RxBytes += w.rx
		all = append(all, w.samples...)
		for _, e := range w.errs {
			if len(r.Errors) < 5 {
				r.Errors = append(r.Errors, e)
			}
		}
	}
	return all
}

// runChurn connects, logs in, awaits the reply and closes, with
// cfg.Concurrency at once, for cfg.Duration.
func runChurn(ctx context.Context, cfg *Config) (*Result, error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.Duration+time.Second)
	defer cancel()
	ws := make([]worker, cfg.Concurrency)
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	end := start.Add(cfg.Duration)
	for k := range ws {
		w := &ws[k]
		wg.Go(func() {
			// The clock, not ctx.Err, ends the loop: dials fail on ctx's
			// deadline a moment before ctx reports it.
			for time.Now().Before(end) {
				i := int(next.Add(1) - 1)
				t0 := time.Now()
				d, err := connect(ctx, cfg, i)
				if err != nil {
					if time.Now().Before(end) {
						w.failed++
						w.errs.add(err)
					}
					continue
				}
				w.samples = append(w.samples, time.Since(t0))
				w.ok++
				d.c.Close()
			}
		})
	}
	wg.Wait()
	r := &Result{Seconds: time.Since(start).Seconds()}
	r.setPercentiles(merge(r, ws))
	r.ConnsPerSec = float64(r.Ok) / r.Seconds
	return r, nil
}

// connectAll logs cfg.Concurrency devices in; failures are counted in r.
func connectAll(ctx context.Context, cfg *Config, r *Result) []*device {
	var devs []*device
	for i := range cfg.Concurrency {
		d, err := connect(ctx, cfg, i)
		if err != nil {
			r.Failed++
			(*errSet)(&r.Errors).add(err)
			continue
		}
		devs = append(devs, d)
	}
	return devs
}

// runPingpong logs cfg.Concurrency devices in, then each sends a small frame
// and awaits its echo, back to back or every cfg.Interval, for cfg.Duration.
func runPingpong(ctx context.Context, cfg *Config) (*Result, error) {
	r := &Result{}
	devs := connectAll(ctx, cfg, r)
	defer func() {
		for _, d := range devs {
			d.c.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(ctx, cfg.Duration)
	defer cancel()
	ws := make([]worker, len(devs))
	var wg sync.WaitGroup
	start := time.Now()
	for k, d := range devs {
		w := &ws[k]
		w.samples = make([]time.Duration, 0, 1<<14)
		wg.Go(func() {
			next := time.Now().Add(time.Duration(k) * cfg.Interval / time.Duration(len(devs)))
			for seq := uint16(0); ctx.Err() == nil; seq++ {
				if cfg.Interval > 0 {
					time.Sleep(time.Until(next))
					next = next.Add(cfg.Interval)
					if ctx.Err() != nil {
						return
					}
				}
				t0 := time.Now()
				if err := d.heartbeat(cfg.Timeout, seq); err != nil {
					w.failed++
					w.errs.add(err)
					return
				}
				w.samples = append(w.samples, time.Since(t0))
				w.ok++
			}
		})
	}
	wg.Wait()
	r.Seconds = time.Since(start).Seconds()
	r.setPercentiles(merge(r, ws))
	r.OpsPerSec = float64(r.Ok) / r.Seconds
	return r, nil
}

// runBulk logs cfg.Concurrency connections in, then each sends frames of
// cfg.FrameSize bytes as fast as it can while reading the echoes, for
// cfg.Duration. Bytes both ways count.
func runBulk(ctx context.Context, cfg *Config) (*Result, error) {
	r := &Result{}
	devs := connectAll(ctx, cfg, r)
	defer func() {
		for _, d := range devs {
			d.c.Close()
		}
	}()
	body := bytes.Repeat([]byte{'x'}, cfg.FrameSize)
	var batch []byte
	for range max(1, 65536/(cfg.FrameSize+sim.HeaderLen)) {
		batch = sim.AppendFrame(batch, sim.TypeHeartbeat, 1, 0, body)
	}
	ws := make([]worker, len(devs))
	txs := make([]int64, len(devs)) // each written by its writer only
	var wg sync.WaitGroup
	start := time.Now()
	end := start.Add(cfg.Duration)
	for k, d := range devs {
		w, tx := &ws[k], &txs[k]
		d.c.SetDeadline(end)
		wg.Go(func() {
			for time.Now().Before(end) {
				n, err := d.c.Write(batch)
				*tx += int64(n)
				if err != nil {
					return
				}
			}
		})
		wg.Go(func() {
			buf := make([]byte, 64<<10)
			for {
				n, err := d.c.Read(buf)
				w.rx += int64(n)
				if err != nil {
					return
				}
			}
		})
	}
	wg.Wait()
	r.Seconds = time.Since(start).Seconds()
	for i := range ws {
		r.TxBytes += txs[i]
		r.RxBytes += ws[i].rx
	}
	r.Ok = len(devs)
	r.MBPerSec = float64(r.TxBytes+r.RxBytes) / 1e6 / r.Seconds
	return r, nil
}
