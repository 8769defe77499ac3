package loadgen

import (
	"context"
	"sync"
	"time"
)

// Storm holds Devices like Hold, then watches them: a device whose
// connection ends (the gateway closed it, e.g. because its backend
// restarted) re-dials and logs in again at once, without backoff; a failed
// attempt is retried after stormRetryPause. Result.AwaitStorm reports when
// every device is back.
const Storm = "storm"

// DefaultStormWait is how long AwaitStorm waits, from the first drop, for
// every device to be back.
const DefaultStormWait = 60 * time.Second

// stormRetryPause spaces a device's failed re-login attempts (a constant,
// not a backoff: the storm's devices do not back off), so that a gateway
// refusing at once does not make the load generator spin.
const stormRetryPause = 10 * time.Millisecond

// storm watches the devices of a Storm run.
type storm struct {
	cfg      *Config
	ctx      context.Context // ends on release: a re-login in flight gives up
	cancel   context.CancelFunc
	mu       sync.Mutex
	conns    []*device // current connection of each device; nil while away
	dropAt   []time.Time
	backAt   []time.Time
	attempts []int // failed re-login attempts
	errs     errSet
	released bool
	changed  chan struct{} // closed and remade on every drop or return
	wg       sync.WaitGroup
}

// runStorm holds cfg.Devices, then starts one watcher per held device.
func runStorm(ctx context.Context, cfg *Config) (*Result, error) {
	r, conns, err := holdAll(ctx, cfg)
	if err != nil {
		return r, err
	}
	s := &storm{cfg: cfg, conns: conns, dropAt: make([]time.Time, cfg.Devices),
		backAt: make([]time.Time, cfg.Devices), attempts: make([]int, cfg.Devices), changed: make(chan struct{})}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	r.storm = s
	for i, d := range s.conns {
		if d != nil {
			s.wg.Go(func() { s.watch(i, d) })
		}
	}
	return r, nil
}

// watch blocks on device i's connection until it ends, then logs the
// device in again, over and over until Release.
func (s *storm) watch(i int, d *device) {
	var buf [512]byte
	for {
		for {
			if _, err := d.c.Read(buf[:]); err != nil {
				break
			}
		}
		d.c.Close()
		now := time.Now()
		s.mu.Lock()
		if s.released {
			s.mu.Unlock()
			return
		}
		s.conns[i] = nil
		if s.dropAt[i].IsZero() {
			s.dropAt[i] = now
		}
		s.notifyLocked()
		s.mu.Unlock()
		for {
			nd, err := connect(s.ctx, s.cfg, i)
			s.mu.Lock()
			if s.released {
				s.mu.Unlock()
				if nd != nil {
					nd.c.Close()
				}
				return
			}
			if err == nil {
				nd.c.SetDeadline(time.Time{})
				s.conns[i], s.backAt[i] = nd, time.Now()
				s.notifyLocked()
				s.mu.Unlock()
				d = nd
				break
			}
			s.attempts[i]++
			s.errs.add(err)
			s.mu.Unlock()
			time.Sleep(stormRetryPause)
		}
	}
}

func (s *storm) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// StormResult is what a Storm run saw from the first drop on. Times are
// Unix nanoseconds, so that the runs of several load processes on one
// host can be merged.
type StormResult struct {
	Held        int      `json:"held"`          // devices held when the storm began
	Dropped     int      `json:"dropped"`       // devices whose connection ended
	Back        int      `json:"back"`          // of those, logged in again
	FailedTries int      `json:"failed_tries"`  // failed re-login attempts, all devices
	FailedDevs  int      `json:"failed_devs"`   // devices with at least one failed attempt
	FirstDropNs int64    `json:"first_drop_ns"` // first connection that ended
	LastBackNs  int64    `json:"last_back_ns"`  // last device back
	Seconds     float64  `json:"seconds"`       // first drop to last back (or to giving up)
	P50ms       float64  `json:"p50_ms"`        // each device's drop to its login reply
	P99ms       float64  `json:"p99_ms"`
	MaxMs       float64  `json:"max_ms"`
	Errors      []string `json:"errors,omitempty"`
}

// AwaitStorm waits until every held device has dropped and logged in
// again, or until cfg.StormWait after the first drop, or ctx's end, and
// reports. Only a Storm run's Result has a storm to wait for.
func (r *Result) AwaitStorm(ctx context.Context) StormResult {
	s := r.storm
	if s == nil {
		return StormResult{}
	}
	var giveUp <-chan time.Time
	for {
		s.mu.Lock()
		st := s.resultLocked()
		ch := s.changed
		s.mu.Unlock()
		if st.Held > 0 && st.Back == st.Held {
			return st
		}
		if giveUp == nil && st.FirstDropNs != 0 {
			t := time.NewTimer(time.Until(time.Unix(0, st.FirstDropNs).Add(s.cfg.StormWait)))
			defer t.Stop()
			giveUp = t.C
		}
		select {
		case <-ch:
		case <-giveUp:
			s.mu.Lock()
			st = s.resultLocked()
			s.mu.Unlock()
			st.Seconds = time.Since(time.Unix(0, st.FirstDropNs)).Seconds()
			return st
		case <-ctx.Done():
			return st
		}
	}
}

func (s *storm) resultLocked() StormResult {
	var st StormResult
	var first, last time.Time
	var lat []time.Duration
	for i := range s.conns {
		if s.conns[i] == nil && s.dropAt[i].IsZero() {
			continue // never held
		}
		st.Held++
		st.FailedTries += s.attempts[i]
		if s.attempts[i] > 0 {
			st.FailedDevs++
		}
		if s.dropAt[i].IsZero() {
			continue
		}
		st.Dropped++
		if first.IsZero() || s.dropAt[i].Before(first) {
			first = s.dropAt[i]
		}
		if s.backAt[i].After(s.dropAt[i]) {
			st.Back++
			lat = append(lat, s.backAt[i].Sub(s.dropAt[i]))
			if s.backAt[i].After(last) {
				last = s.backAt[i]
			}
		}
	}
	if !first.IsZero() {
		st.FirstDropNs = first.UnixNano()
	}
	if !last.IsZero() {
		st.LastBackNs = last.UnixNano()
		st.Seconds = last.Sub(first).Seconds()
	}
	var p Result
	p.setPercentiles(lat)
	st.P50ms, st.P99ms = p.P50us/1e3, p.P99us/1e3
	if len(lat) > 0 {
		st.MaxMs = float64(lat[len(lat)-1].Microseconds()) / 1e3
	}
	st.Errors = append([]string(nil), s.errs...)
	return st
}

// release closes every device's connection and waits for the watchers.
func (s *storm) release() {
	s.cancel()
	s.mu.Lock()
	s.released = true
	for _, d := range s.conns {
		if d != nil {
			d.c.Close()
		}
	}
	s.mu.Unlock()
	s.wg.Wait()
}
