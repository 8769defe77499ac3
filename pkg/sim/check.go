package sim

import (
	"context"
	"encoding/json"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Check mode: devices that stay connected and send numbered heartbeats
// ({"seq":N}), checking every answer, so a live move of devices between
// backends (the gateway's rehome) can be proven seamless: no disconnect,
// every heartbeat answered once and in order, and after a move every answer
// from the new backend, which saw the device's login on that connection.

// Defaults of CheckConfig.
const (
	DefaultCheckInterval = 100 * time.Millisecond // heartbeat period
	checkSlots           = 16                     // sender goroutines, each with one ticker, phases spread over Interval
	maxPauseSamples      = 1 << 16                // pauses kept for percentiles; beyond, a uniform sample
)

// CheckConfig says how Check runs its devices. Zero values take the
// defaults given per field.
type CheckConfig struct {
	// Config gives Target, Devices, Prefix, Timeout and Dialer as for Run.
	// Concurrency bounds the devices dialling and logging in at once.
	// Interval is the heartbeat period of every device; if zero,
	// DefaultCheckInterval. Timeout also bounds each heartbeat write and
	// the wait for the answers to the last heartbeats at the end.
	// Reconnects, Heartbeats and RecordBackends are not used.
	Config

	// BackoffMin and BackoffMax pace reconnects after a disconnect, as in
	// HoldConfig. A disconnect is a failure of the check; the device
	// reconnects so the run goes on measuring.
	BackoffMin, BackoffMax time.Duration
}

func (c CheckConfig) withDefaults() CheckConfig {
	if c.Interval <= 0 {
		c.Interval = DefaultCheckInterval
	}
	h := HoldConfig{Config: c.Config, BackoffMin: c.BackoffMin, BackoffMax: c.BackoffMax}.withDefaults()
	c.Config, c.BackoffMin, c.BackoffMax = h.Config, h.BackoffMin, h.BackoffMax
	return c
}

// Checker runs checking devices until its Run's context ends; Status may
// be read meanwhile.
type Checker struct {
	cfg  CheckConfig
	hold HoldConfig // for the login code shared with Hold
	devs []*checkDev

	start time.Time
	n     checkCounters

	mu         sync.Mutex // guards the maps and the pauses
	perBackend map[string]int
	moves      map[string]int
	drops      map[string]int
	errs       map[string]int
	pauses     pauseSample
}

// checkCounters are the totals, updated by the device goroutines.
type checkCounters struct {
	connected, logins, reconnects, disconnects          atomic.Int64
	sent, answered, missing, duplicate, outOfOrder      atomic.Int64
	badAnswers, devidEmpty, devidWrong, extra, switches atomic.Int64
	stale, inFlight                                     atomic.Int64
}

// NewChecker checks cfg and returns a Checker ready to Run.
func NewChecker(cfg CheckConfig) (*Checker, error) {
	if err := checkHeld(cfg.Config, cfg.BackoffMin, cfg.BackoffMax); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	c := &Checker{
		cfg:        cfg,
		hold:       HoldConfig{Config: cfg.Config, BackoffMin: cfg.BackoffMin, BackoffMax: cfg.BackoffMax},
		start:      time.Now(),
		perBackend: map[string]int{},
		moves:      map[string]int{},
		drops:      map[string]int{},
		errs:       map[string]int{},
	}
	c.devs = make([]*checkDev, cfg.Devices)
	for i := range c.devs {
		id := cfg.DeviceID(i)
		c.devs[i] = &checkDev{id: id, hc: holdConn{cfg: &c.hold, login: loginBody(id), r: frameReader{buf: make([]byte, 128)}}}
	}
	return c, nil
}

// Check is NewChecker and Run.
func Check(ctx context.Context, cfg CheckConfig) (CheckReport, error) {
	c, err := NewChecker(cfg)
	if err != nil {
		return CheckReport{}, err
	}
	return c.Run(ctx), nil
}

// checkDev is one device. The sender goroutine of its slot and its own
// goroutine share conn and sent under mu; the rest is its goroutine's.
type checkDev struct {
	id string
	hc holdConn // login and frame reading

	mu    sync.Mutex
	conn  net.Conn // nil while not logged in
	sent  atomic.Int64
	final int64 // seq of the heartbeat sent at the stop; 0: none

	last atomic.Int64 // highest seq answered (published for the final wait)
	win  uint64       // bit k: seq last-k was answered

	backend string    // backend of the answers now
	prev    string    // backend before the last switch on this connection
	lastAt  time.Time // time of the last answer (or of the login answer)
	movedAt time.Time // time of the last switch
}

// Run connects every device and checks its heartbeats until ctx ends; then
// it sends every connected device a last heartbeat, waits up to Timeout for
// the answers in flight, closes the devices and returns the report. Every
// goroutine Run starts has finished when it returns. Call it once.
func (c *Checker) Run(ctx context.Context) CheckReport {
	c.mu.Lock()
	c.start = time.Now()
	c.mu.Unlock()
	connCtx, closeConns := context.WithCancel(context.Background())
	defer closeConns()

	sem := make(chan struct{}, c.cfg.Concurrency)
	var devWG, sendWG sync.WaitGroup
	for i, d := range c.devs {
		devWG.Go(func() { c.device(ctx, connCtx, i, d, sem) })
	}
	for slot := range min(checkSlots, len(c.devs)) {
		sendWG.Go(func() { c.sender(ctx, slot) })
	}
	<-ctx.Done()
	sendWG.Wait()
	c.finish()
	closeConns()
	devWG.Wait()

	// Unanswered heartbeats: the last one is in flight, earlier ones had
	// at least Timeout and are missing.
	for _, d := range c.devs {
		last, sent := d.last.Load(), d.sent.Load()
		if d.final > 0 && last < d.final {
			c.n.inFlight.Add(1)
			sent = d.final - 1
		}
		if sent > last {
			c.n.missing.Add(sent - last)
		}
	}
	return c.report()
}

// sender writes the heartbeats of the devices of one slot every Interval,
// from one ticker, so N devices cost checkSlots timers, not N.
func (c *Checker) sender(ctx context.Context, slot int) {
	phase := time.Duration(slot) * c.cfg.Interval / checkSlots
	t := time.NewTimer(phase)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return
	case <-t.C:
	}
	tick := time.NewTicker(c.cfg.Interval)
	defer tick.Stop()
	var buf []byte
	for {
		for i := slot; i < len(c.devs); i += checkSlots {
			buf = c.heartbeat(c.devs[i], buf, false)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// heartbeat sends d its next numbered heartbeat if it is logged in; a
// failed write closes the connection, which d's goroutine reports.
func (c *Checker) heartbeat(d *checkDev, buf []byte, final bool) []byte {
	d.mu.Lock()
	conn := d.conn
	if conn == nil {
		d.mu.Unlock()
		return buf
	}
	seq := d.sent.Add(1)
	if final {
		d.final = seq
	}
	d.mu.Unlock()
	c.n.sent.Add(1)
	var hb [32]byte
	body := strconv.AppendInt(append(hb[:0], `{"seq":`...), seq, 10)
	buf = AppendFrame(buf[:0], TypeHeartbeat, version, uint16(time.Now().Unix()), append(body, '}'))
	conn.SetWriteDeadline(time.Now().Add(c.cfg.Timeout))
	if _, err := conn.Write(buf); err != nil {
		conn.Close()
	}
	return buf
}

// finish sends every logged-in device a last heartbeat and waits up to
// Timeout until each has been answered up to it.
func (c *Checker) finish() {
	var buf []byte
	for _, d := range c.devs {
		buf = c.heartbeat(d, buf, true)
	}
	deadline := time.Now().Add(c.cfg.Timeout)
	for time.Now().Before(deadline) {
		waiting := false
		for _, d := range c.devs {
			d.mu.Lock()
			f, up := d.final, d.conn != nil
			d.mu.Unlock()
			if f > 0 && up && d.last.Load() < f {
				waiting = true
				break
			}
		}
		if !waiting {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// device keeps device i connected: it logs in, reads and checks answers,
// and after a disconnect reconnects with backoff, until stop ends (no new
// connection) and conns ends (its connection is closed).
func (c *Checker) device(stop, conns context.Context, i int, d *checkDev, sem chan struct{}) {
	var (
		fails int
		wait  time.Duration
		timer *time.Timer
	)
	defer stopTimer(&timer)
	for stop.Err() == nil {
		if !sleepThenAcquire(stop, &timer, wait, sem) {
			return
		}
		conn, backend, reason := d.hc.dialLogin(conns, d.id)
		<-sem
		if stop.Err() != nil {
			if conn != nil {
				conn.Close()
			}
			return
		}
		if reason != "" {
			c.mu.Lock()
			c.errs[reason]++
			c.mu.Unlock()
			wait = c.hold.backoff(fails)
			fails++
			continue
		}
		reason = c.serve(conns, d, conn, backend)
		if conns.Err() != nil {
			return
		}
		c.mu.Lock()
		c.drops[reason]++
		c.mu.Unlock()
		wait, fails = c.hold.backoff(0), 1
	}
}

// serve checks the answers on a logged-in connection until it ends, and
// returns why it did.
func (c *Checker) serve(conns context.Context, d *checkDev, conn net.Conn, backend string) string {
	defer conn.Close()
	defer closeOnCancel(conns, conn)()
	conn.SetReadDeadline(time.Time{})

	// Heartbeats before this connection are settled: answers to them
	// cannot come on it.
	reconnect := d.backend != ""
	d.mu.Lock()
	d.conn = conn
	d.last.Store(d.sent.Load())
	d.mu.Unlock()
	d.win = ^uint64(0)
	d.backend, d.prev, d.lastAt = backend, "", time.Now()
	c.n.logins.Add(1)
	c.n.connected.Add(1)
	if reconnect {
		c.n.reconnects.Add(1)
	}
	c.mu.Lock()
	bump(c.perBackend, backend, 1)
	c.mu.Unlock()

	var ans answer
	var err error
	for {
		var typ byte
		var body []byte
		if typ, body, err = d.hc.r.next(conn); err != nil {
			break
		}
		if typ != TypeHeartbeat {
			c.n.extra.Add(1) // e.g. an answer to a replayed login the gateway should have swallowed
			continue
		}
		ans = answer{}
		if json.Unmarshal(body, &ans) != nil || ans.Backend == "" || ans.Seq == nil {
			c.n.badAnswers.Add(1)
			continue
		}
		c.check(d, &ans, time.Now())
	}

	d.mu.Lock()
	d.conn = nil
	sent := d.sent.Load()
	d.mu.Unlock()
	if conns.Err() != nil {
		return "" // the run ended; Run settles what is unanswered
	}
	// Heartbeats this connection took with it are missing.
	if last := d.last.Load(); sent > last {
		c.n.missing.Add(sent - last)
		d.last.Store(sent)
	}
	c.n.connected.Add(-1)
	c.n.disconnects.Add(1)
	c.mu.Lock()
	bump(c.perBackend, d.backend, -1)
	c.mu.Unlock()
	return failure(conns, "conn", err)
}

// maxNames bounds the keys of the per-backend and per-move counts: the
// names come from the answers, so a broken backend cannot grow them
// without bound. Beyond it, counts go to otherName.
const (
	maxNames  = 1024
	otherName = "(other)"
)

// bump adds n to m[k], or to m[otherName] once m is full.
func bump(m map[string]int, k string, n int) {
	if _, ok := m[k]; !ok && len(m) >= maxNames {
		k = otherName
	}
	m[k] += n
}

// answer is the body of the answer to a numbered heartbeat.
type answer struct {
	Backend string `json:"backend"`
	Devid   string `json:"devid"`
	Seq     *int64 `json:"seq"`
}

// check counts one answer of device d.
func (c *Checker) check(d *checkDev, a *answer, now time.Time) {
	s, last := *a.Seq, d.last.Load()
	if s > d.sent.Load() || s <= 0 {
		c.n.badAnswers.Add(1) // never sent
		return
	}
	switch {
	case a.Devid == "":
		c.n.devidEmpty.Add(1) // the backend did not see a login on this connection
	case a.Devid != d.id:
		c.n.devidWrong.Add(1)
	}
	switch {
	case s > last:
		if gap := s - last - 1; gap > 0 {
			c.n.missing.Add(gap) // until it comes late
		}
		if s-last >= 64 {
			d.win = 1
		} else {
			d.win = d.win<<(s-last) | 1
		}
		d.last.Store(s)
		c.n.answered.Add(1)
	default:
		k := last - s
		switch {
		case k >= 64 || d.win&(1<<k) != 0:
			c.n.duplicate.Add(1) // or too late to tell
			return
		default:
			d.win |= 1 << k
			c.n.outOfOrder.Add(1)
			c.n.missing.Add(-1)
			c.n.answered.Add(1)
		}
	}

	switch {
	case a.Backend == d.backend:
	case a.Backend == d.prev && now.Sub(d.movedAt) < c.staleWindow():
		c.n.stale.Add(1) // the backend it moved away from still answers
	default: // a move, or a move back a while later (a rebalance after an undrain)
		c.n.switches.Add(1)
		c.mu.Lock()
		bump(c.moves, d.backend+">"+a.Backend, 1)
		bump(c.perBackend, d.backend, -1)
		bump(c.perBackend, a.Backend, 1)
		c.pauses.add(now.Sub(d.lastAt))
		c.mu.Unlock()
		d.prev, d.backend, d.movedAt = d.backend, a.Backend, now
	}
	if a.Backend == d.backend {
		d.lastAt = now
	}
}

// staleWindow is how soon after a switch an answer from the backend left
// counts as stale rather than as the device moving back: three intervals,
// at least 100 ms. A stale answer comes right after the switch (the old
// backend answering frames sent before it); a move back takes longer (an
// undrain, then a rebalance), though it may come within a second.
func (c *Checker) staleWindow() time.Duration { return max(3*c.cfg.Interval, 100*time.Millisecond) }
