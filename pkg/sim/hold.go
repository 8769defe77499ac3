package sim

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"time"
)

// Hold mode: devices that stay connected and come back when a connection
// ends, the way real ones do, so a drain or a rebalance can be watched.

// Defaults of HoldConfig.
const (
	DefaultHoldInterval = 10 * time.Second // heartbeat period
	DefaultBackoffMin   = time.Second      // first wait before a reconnect
	DefaultBackoffMax   = 30 * time.Second // longest wait between attempts
)

// HoldConfig says how Hold keeps devices connected. Zero values take the
// defaults given per field.
type HoldConfig struct {
	// Config gives Target, Devices, Prefix, Timeout and Dialer as for Run.
	// Concurrency bounds the devices dialling and logging in at once (the
	// ramp). Interval is the heartbeat period; if zero, DefaultHoldInterval.
	// Reconnects, Heartbeats and RecordBackends are not used.
	Config

	// BackoffMin is the wait before a device reconnects after its
	// connection ended; each failed attempt in a row doubles it, up to
	// BackoffMax. Every wait is drawn at random from [d/2, d), so devices
	// evicted together do not come back together. If zero,
	// DefaultBackoffMin and DefaultBackoffMax.
	BackoffMin, BackoffMax time.Duration

	// OnEvent, if set, is called from the device's goroutine for each
	// login, each end of a logged-in connection and each failed attempt.
	OnEvent func(Event)
}

func (c HoldConfig) withDefaults() HoldConfig {
	c.Config = c.Config.withDefaults()
	if c.Interval <= 0 {
		c.Interval = DefaultHoldInterval
	}
	if c.BackoffMin <= 0 {
		c.BackoffMin = DefaultBackoffMin
	}
	if c.BackoffMax <= 0 {
		c.BackoffMax = max(DefaultBackoffMax, c.BackoffMin)
	}
	c.BackoffMax = max(c.BackoffMax, c.BackoffMin)
	return c
}

// backoff is the wait before an attempt that follows fails failed ones in
// a row (0: the connection before it had logged in): BackoffMin doubled
// per failure up to BackoffMax, drawn from [d/2, d).
func (c *HoldConfig) backoff(fails int) time.Duration {
	d := c.BackoffMax
	if fails < 32 && c.BackoffMin<<fails < c.BackoffMax && c.BackoffMin<<fails > 0 {
		d = c.BackoffMin << fails
	}
	if half := d / 2; half > 0 {
		return half + rand.N(half)
	}
	return d
}

// EventKind says what an Event reports.
type EventKind uint8

// Kinds of Event.
const (
	EventLogin  EventKind = iota + 1 // a connection logged in at Backend
	EventDown                        // a logged-in connection to Backend ended, for Reason
	EventFailed                      // an attempt failed before login, for Reason
)

// Event is one change of a device's connection.
type Event struct {
	Kind    EventKind
	Device  int           // index: Config.DeviceID(Device)
	Backend string        // EventLogin, EventDown: the backend of the connection
	Prev    string        // EventLogin: the backend of the device's previous connection; "" for its first
	Reason  string        // EventDown, EventFailed: as in Report.Errors
	Wait    time.Duration // EventLogin, EventFailed: the backoff waited before this attempt
	Time    time.Time
}

// HoldStatus is where the devices of a Hold are.
type HoldStatus struct {
	Devices   int // configured
	Connected int // logged in now; the rest are waiting to reconnect or connecting

	// PerBackend counts the devices logged in now, per backend; a backend
	// that had devices before shows with 0.
	PerBackend map[string]int

	Logins     int // successful logins, first ones included
	Reconnects int // logins after a device's first

	// Moved counts reconnects that reached another backend than the
	// device's previous connection; Moves splits them by "from>to".
	Moved int
	Moves map[string]int

	// Drops counts logged-in connections that ended, by reason: an
	// eviction reads as "conn_closed".
	Drops map[string]int

	// Errors counts attempts that failed before login, by reason.
	Errors map[string]int

	Elapsed time.Duration
}

// Disconnected is the number of devices not logged in now.
func (s HoldStatus) Disconnected() int { return s.Devices - s.Connected }

func (s HoldStatus) clone() HoldStatus {
	s.PerBackend = cloneMap(s.PerBackend)
	s.Moves = cloneMap(s.Moves)
	s.Drops = cloneMap(s.Drops)
	s.Errors = cloneMap(s.Errors)
	return s
}

func cloneMap(m map[string]int) map[string]int {
	out := make(map[string]int, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// Holder keeps devices connected until its Run ends; Status may be read
// meanwhile.
type Holder struct {
	cfg   HoldConfig
	start time.Time

	mu sync.Mutex
	st HoldStatus
}

// NewHolder checks cfg and returns a Holder ready to Run.
func NewHolder(cfg HoldConfig) (*Holder, error) {
	if err := checkHeld(cfg.Config, cfg.BackoffMin, cfg.BackoffMax); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	return &Holder{cfg: cfg, start: time.Now(), st: HoldStatus{
		Devices:    cfg.Devices,
		PerBackend: map[string]int{},
		Moves:      map[string]int{},
		Drops:      map[string]int{},
		Errors:     map[string]int{},
	}}, nil
}

// Status returns a copy of the current status.
func (h *Holder) Status() HoldStatus {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.st.clone()
	s.Elapsed = time.Since(h.start)
	return s
}

// Run connects every device and keeps it connected until ctx ends, then
// closes them all and returns the status as it was when ctx ended. Every
// goroutine Run starts has finished when it returns. Call it once.
func (h *Holder) Run(ctx context.Context) HoldStatus {
	h.mu.Lock()
	h.start = time.Now()
	h.mu.Unlock()
	sem := make(chan struct{}, h.cfg.Concurrency)
	var wg sync.WaitGroup
	for i := range h.cfg.Devices {
		wg.Go(func() { h.device(ctx, i, sem) })
	}
	<-ctx.Done()
	final := h.Status() // before the teardown: devices stop counting once ctx ended
	wg.Wait()
	return final
}

// Hold is NewHolder and Run.
func Hold(ctx context.Context, cfg HoldConfig) (HoldStatus, error) {
	h, err := NewHolder(cfg)
	if err != nil {
		return HoldStatus{}, err
	}
	return h.Run(ctx), nil
}

func (h *Holder) emit(ev Event) {
	if h.cfg.OnEvent != nil {
		ev.Time = time.Now()
		h.cfg.OnEvent(ev)
	}
}

// device connects device i again and again until ctx ends.
func (h *Holder) device(ctx context.Context, i int, sem chan struct{}) {
	id := h.cfg.DeviceID(i)
	d := &holdConn{cfg: &h.cfg, login: loginBody(id)}
	var (
		prev  string
		fails int
		wait  time.Duration
		timer *time.Timer
	)
	defer stopTimer(&timer)
	for {
		if !sleepThenAcquire(ctx, &timer, wait, sem) {
			return
		}
		conn, backend, reason := d.dialLogin(ctx, id)
		<-sem
		if ctx.Err() != nil {
			if conn != nil {
				conn.Close()
			}
			return
		}
		if reason != "" {
			h.failed(i, reason, wait)
			wait = h.cfg.backoff(fails)
			fails++
			continue
		}
		h.loggedIn(i, backend, prev, wait)
		reason = d.hold(ctx, conn)
		if ctx.Err() != nil {
			return
		}
		h.down(i, backend, reason)
		prev = backend
		wait, fails = h.cfg.backoff(0), 1 // a failure after this waits longer
	}
}

func (h *Holder) loggedIn(i int, backend, prev string, wait time.Duration) {
	h.mu.Lock()
	h.st.Connected++
	h.st.PerBackend[backend]++
	h.st.Logins++
	if prev != "" {
		h.st.Reconnects++
		if prev != backend {
			h.st.Moved++
			h.st.Moves[prev+">"+backend]++
		}
	}
	h.mu.Unlock()
	h.emit(Event{Kind: EventLogin, Device: i, Backend: backend, Prev: prev, Wait: wait})
}

func (h *Holder) down(i int, backend, reason string) {
	h.mu.Lock()
	h.st.Connected--
	h.st.PerBackend[backend]--
	h.st.Drops[reason]++
	h.mu.Unlock()
	h.emit(Event{Kind: EventDown, Device: i, Backend: backend, Reason: reason})
}

func (h *Holder) failed(i int, reason string, wait time.Duration) {
	h.mu.Lock()
	h.st.Errors[reason]++
	h.mu.Unlock()
	h.emit(Event{Kind: EventFailed, Device: i, Reason: reason, Wait: wait})
}

// holdConn is one device's connection state, reused across connections.
type holdConn struct {
	cfg   *HoldConfig
	login []byte
	r     frameReader
	wbuf  []byte
	hb    []byte
	seq   int64
}

// dialLogin dials and logs in; it returns the connection and the backend
// that answered, or a failure reason.
func (d *holdConn) dialLogin(ctx context.Context, id string) (net.Conn, string, string) {
	dctx, cancel := context.WithTimeout(ctx, d.cfg.Timeout)
	conn, err := d.cfg.Dialer.DialContext(dctx, "tcp", d.cfg.Target)
	cancel()
	if err != nil {
		return nil, "", failure(ctx, "dial", err)
	}
	defer closeOnCancel(ctx, conn)()
	d.r.reset()
	if err := d.write(conn, TypeLogin, d.login); err != nil {
		conn.Close()
		return nil, "", failure(ctx, "login", err)
	}
	conn.SetReadDeadline(time.Now().Add(d.cfg.Timeout))
	typ, body, err := d.r.next(conn)
	if err == nil && typ != TypeLogin {
		err = errWrongType
	}
	if err != nil {
		conn.Close()
		return nil, "", failure(ctx, "login", err)
	}
	backend, reason := loginReply(body, id)
	if reason != "" {
		conn.Close()
		return nil, "", reason
	}
	return conn, backend, ""
}

// hold keeps conn open with a heartbeat every Interval until it ends or
// ctx does, closes it, and returns why it ended. It reads all the time, so
// an eviction is seen at once, as a real device sees it.
func (d *holdConn) hold(ctx context.Context, conn net.Conn) string {
	defer conn.Close()
	defer closeOnCancel(ctx, conn)()
	next := time.Now().Add(d.cfg.Interval)
	var echoBy time.Time // zero: no heartbeat awaits its echo
	for {
		dl := next
		if !echoBy.IsZero() && echoBy.Before(dl) {
			dl = echoBy
		}
		conn.SetReadDeadline(dl)
		typ, _, err := d.r.next(conn)
		if err == nil {
			if typ == TypeHeartbeat {
				echoBy = time.Time{}
			}
			continue // anything else is a push the device does not care about
		}
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			return failure(ctx, "conn", err)
		}
		now := time.Now()
		if !echoBy.IsZero() && !now.Before(echoBy) {
			return "heartbeat_timeout"
		}
		if now.Before(next) {
			continue
		}
		d.seq++
		d.hb = strconv.AppendInt(append(d.hb[:0], `{"hb":`...), d.seq, 10)
		d.hb = append(d.hb, '}')
		if err := d.write(conn, TypeHeartbeat, d.hb); err != nil {
			return failure(ctx, "heartbeat", err)
		}
		if echoBy.IsZero() {
			echoBy = now.Add(d.cfg.Timeout)
		}
		next = now.Add(d.cfg.Interval)
	}
}

func (d *holdConn) write(conn net.Conn, typ byte, body []byte) error {
	var err error
	if d.wbuf, err = TryAppendFrame(d.wbuf[:0], typ, version, uint16(time.Now().Unix()), body); err != nil {
		return err
	}
	conn.SetWriteDeadline(time.Now().Add(d.cfg.Timeout))
	_, err = conn.Write(d.wbuf)
	return err
}

// closeOnCancel closes conn when ctx ends, so a blocked read returns; call
// the returned func when done with conn: it waits for a close under way,
// so no goroutine outlives the device.
func closeOnCancel(ctx context.Context, conn net.Conn) func() {
	done := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		conn.Close()
		close(done)
	})
	return func() {
		if !stop() {
			<-done
		}
	}
}

// frameReader reads frames from a connection through a buffer that keeps
// a partial frame across a read deadline.
type frameReader struct {
	buf        []byte
	start, end int
}

func (r *frameReader) reset() { r.start, r.end = 0, 0 }

// next returns the next whole frame; its body aliases the buffer until the
// next call. A frame is at most HeaderLen+MaxBody bytes.
func (r *frameReader) next(c net.Conn) (byte, []byte, error) {
	if r.buf == nil {
		r.buf = make([]byte, 512)
	}
	for {
		need := HeaderLen
		if avail := r.end - r.start; avail >= HeaderLen {
			need += int(binary.BigEndian.Uint16(r.buf[r.start+4:]))
			if avail >= need {
				f := r.buf[r.start : r.start+need]
				r.start += need
				return f[0], f[HeaderLen:], nil
			}
		}
		if r.start > 0 { // make room at the end
			r.end = copy(r.buf, r.buf[r.start:r.end])
			r.start = 0
		}
		if need > len(r.buf) {
			nb := make([]byte, need)
			copy(nb, r.buf[:r.end])
			r.buf = nb
		}
		n, err := c.Read(r.buf[r.end:])
		r.end += n
		if err != nil {
			if errors.Is(err, io.EOF) && r.end > r.start {
				err = io.ErrUnexpectedEOF
			}
			return 0, nil, err
		}
	}
}

// sleepThenAcquire waits wait (reusing *timer) and then a slot of sem, the
// cap on devices logging in at once; false if ctx ended first.
func sleepThenAcquire(ctx context.Context, timer **time.Timer, wait time.Duration, sem chan struct{}) bool {
	if wait > 0 {
		if *timer == nil {
			*timer = time.NewTimer(wait)
		} else {
			(*timer).Reset(wait)
		}
		select {
		case <-ctx.Done():
			return false
		case <-(*timer).C:
		}
	}
	select {
	case <-ctx.Done():
		return false
	case sem <- struct{}{}:
		return true
	}
}

// stopTimer stops *timer if sleepThenAcquire made one.
func stopTimer(timer **time.Timer) {
	if *timer != nil {
		(*timer).Stop()
	}
}

// checkHeld checks what holding and checking devices share: a target, some
// devices and a backoff that is not negative.
func checkHeld(cfg Config, backoffMin, backoffMax time.Duration) error {
	switch {
	case cfg.Target == "":
		return errors.New("sim: no target")
	case cfg.Devices <= 0:
		return fmt.Errorf("sim: devices must be positive, got %d", cfg.Devices)
	case backoffMin < 0 || backoffMax < 0:
		return errors.New("sim: backoff must not be negative")
	}
	return nil
}
