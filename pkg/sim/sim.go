package sim

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Config says what to simulate. Zero values take the defaults given per field.
type Config struct {
	// Target is the gateway's host:port. Required.
	Target string

	// Devices is how many devices run; device i has the id DeviceID(i). Required.
	Devices int

	// Prefix starts every device id. If empty, "dev-".
	Prefix string

	// Concurrency is how many devices run at once; each holds one connection
	// at a time. If zero, 64.
	Concurrency int

	// Reconnects is how many times each device connects again after its first
	// connection. If zero, 1. If negative, none.
	Reconnects int

	// Heartbeats is how many heartbeats each connection sends after login,
	// each awaiting its reply. If zero, 1. If negative, none.
	Heartbeats int

	// Interval is waited before each heartbeat. Zero sends them back to back.
	Interval time.Duration

	// Timeout bounds each dial and each request/reply exchange. If zero, 5s.
	Timeout time.Duration

	// Dialer dials the target, e.g. with a LocalAddr. If nil, a zero Dialer.
	Dialer *net.Dialer

	// RecordBackends fills Report.Backends: per device, the backend of each
	// connection. Off by default (it costs a slice per device).
	RecordBackends bool
}

// version is the protocol version byte the simulator sends.
const version = 1

func (c Config) withDefaults() Config {
	if c.Prefix == "" {
		c.Prefix = "dev-"
	}
	if c.Concurrency <= 0 {
		c.Concurrency = 64
	}
	c.Reconnects = orDefault(c.Reconnects, 1)
	c.Heartbeats = orDefault(c.Heartbeats, 1)
	if c.Timeout <= 0 {
		c.Timeout = 5 * time.Second
	}
	if c.Dialer == nil {
		c.Dialer = &net.Dialer{}
	}
	return c
}

// orDefault maps zero to def and negative to zero.
func orDefault(v, def int) int {
	switch {
	case v == 0:
		return def
	case v < 0:
		return 0
	}
	return v
}

// DeviceID returns the id of device i: Prefix and i zero-padded to at least
// six digits, so a device keeps its id whatever Devices is.
func (c Config) DeviceID(i int) string {
	c = c.withDefaults()
	width := max(6, len(strconv.Itoa(c.Devices-1)))
	s := strconv.Itoa(i)
	for len(s) < width {
		s = "0" + s
	}
	return c.Prefix + s
}

// Run simulates cfg.Devices devices against cfg.Target and reports where they
// landed. Failures are counted in the Report, not returned; the error is
// non-nil only for a bad Config or when ctx ended before every device ran.
// Every goroutine Run starts has finished when it returns.
func Run(ctx context.Context, cfg Config) (Report, error) {
	start := time.Now()
	if cfg.Target == "" {
		return Report{}, errors.New("sim: no target")
	}
	if cfg.Devices <= 0 {
		return Report{}, fmt.Errorf("sim: devices must be positive, got %d", cfg.Devices)
	}
	cfg = cfg.withDefaults()

	// Each device writes only its own slot; errors are merged after Wait.
	devs := make([]deviceResult, cfg.Devices)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make([]map[string]int, min(cfg.Concurrency, cfg.Devices))
	for w := range errs {
		errs[w] = map[string]int{}
		wg.Go(func() {
			dw := worker{cfg: &cfg, errs: errs[w]}
			for {
				i := int(next.Add(1) - 1)
				if i >= cfg.Devices || ctx.Err() != nil {
					return
				}
				devs[i] = dw.device(ctx, cfg.DeviceID(i))
			}
		})
	}
	wg.Wait()

	rep := summarize(devs, errs)
	if cfg.RecordBackends {
		rep.Backends = make([][]string, len(devs))
		for i, d := range devs {
			rep.Backends[i] = d.conns
		}
	}
	rep.Elapsed = time.Since(start)
	return rep, ctx.Err()
}

// deviceResult is what one device saw over all its connections.
type deviceResult struct {
	conns  []string // backend of each connection, "" if it failed (RecordBackends only)
	first  string   // backend of the first successful connection
	moved  bool     // a later connection landed elsewhere
	ok     int
	failed int
}

// worker runs devices one after another, reusing its buffers.
type worker struct {
	cfg  *Config
	errs map[string]int
	wbuf []byte // outgoing frame
	rbuf []byte // incoming frame
	hb   []byte // heartbeat body
}

func (w *worker) device(ctx context.Context, id string) deviceResult {
	var res deviceResult
	login := loginBody(id)
	for range 1 + w.cfg.Reconnects {
		if ctx.Err() != nil {
			break
		}
		backend, reason := w.session(ctx, id, login)
		if w.cfg.RecordBackends {
			res.conns = append(res.conns, backend)
		}
		if reason != "" {
			res.failed++
			w.errs[reason]++
			continue
		}
		res.ok++
		if res.first == "" {
			res.first = backend
		} else if backend != res.first {
			res.moved = true
		}
	}
	return res
}

// loginBody is a realistic login body (~120 bytes); the token is derived from
// the id so runs are reproducible.
func loginBody(id string) []byte {
	sum := sha256.Sum256([]byte(id))
	b, _ := json.Marshal(struct {
		Devid string `json:"devid"`
		Token string `json:"token"`
		OS    string `json:"os"`
		Ver   string `json:"ver"`
	}{id, hex.EncodeToString(sum[:]), "android", "1.0"})
	return b
}

// session makes one connection: login, heartbeats, close. It returns the
// backend that answered the login, or a failure reason.
func (w *worker) session(ctx context.Context, id string, login []byte) (backend, reason string) {
	dctx, cancel := context.WithTimeout(ctx, w.cfg.Timeout)
	conn, err := w.cfg.Dialer.DialContext(dctx, "tcp", w.cfg.Target)
	cancel()
	if err != nil {
		return "", failure(ctx, "dial", err)
	}
	defer conn.Close()
	// Cancelling ctx must unblock a read; wait for the callback so no
	// goroutine outlives Run.
	done := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		conn.Close()
		close(done)
	})
	defer func() {
		if !stop() {
			<-done
		}
	}()

	body, err := w.exchange(conn, TypeLogin, login)
	if err != nil {
		return "", failure(ctx, "login", err)
	}
	backend, reason = loginReply(body, id)
	if reason != "" {
		return "", reason
	}

	var timer *time.Timer
	for h := range w.cfg.Heartbeats {
		if w.cfg.Interval > 0 {
			if timer == nil {
				timer = time.NewTimer(w.cfg.Interval)
				defer timer.Stop()
			} else {
				timer.Reset(w.cfg.Interval)
			}
			select {
			case <-ctx.Done():
				return "", failure(ctx, "heartbeat", ctx.Err())
			case <-timer.C:
			}
		}
		w.hb = strconv.AppendInt(append(w.hb[:0], `{"hb":`...), int64(h), 10)
		w.hb = append(w.hb, '}')
		if _, err := w.exchange(conn, TypeHeartbeat, w.hb); err != nil {
			return "", failure(ctx, "heartbeat", err)
		}
	}
	return backend, ""
}

// loginReply returns the backend named by a login reply body, or a
// failure reason.
func loginReply(body []byte, id string) (backend, reason string) {
	var reply struct {
		Backend string `json:"backend"`
		Devid   string `json:"devid"`
	}
	if err := json.Unmarshal(body, &reply); err != nil {
		return "", "login_bad_json"
	}
	if reply.Backend == "" {
		return "", "login_no_backend"
	}
	if reply.Devid != "" && reply.Devid != id {
		return "", "login_wrong_device"
	}
	return reply.Backend, ""
}

// errWrongType is a reply whose type differs from the request's.
var errWrongType = errors.New("reply of another type")

// exchange writes one frame and reads one reply of the same type, within one
// Timeout. The returned body aliases the worker's read buffer.
func (w *worker) exchange(conn net.Conn, typ byte, body []byte) ([]byte, error) {
	if err := conn.SetDeadline(time.Now().Add(w.cfg.Timeout)); err != nil {
		return nil, err
	}
	var err error
	w.wbuf, err = TryAppendFrame(w.wbuf[:0], typ, version, uint16(time.Now().Unix()), body)
	if err != nil {
		return nil, err
	}
	if _, err := conn.Write(w.wbuf); err != nil {
		return nil, err
	}
	rtyp, rbody, buf, err := readFrame(conn, w.rbuf)
	w.rbuf = buf[:0]
	if err != nil {
		return nil, err
	}
	if rtyp != typ {
		return nil, errWrongType
	}
	return rbody, nil
}
