// Package loadgen drives benchmark load at a device gateway (or straight at
// a backend) and reports one result per run. It owns the load modes of the
// benchmark suite (test/bench): hold, churn, pingpong, bulk and storm. It speaks the
// original protocol through pkg/sim's frame helpers and knows nothing of the
// gateway under test, so the same load runs against devgate, HAProxy, nginx
// or a backend directly.
//
//	res, err := loadgen.Run(ctx, loadgen.Config{
//		Mode:        loadgen.Pingpong,
//		Targets:     []string{"127.0.0.1:9000"},
//		Concurrency: 64,
//		Duration:    5 * time.Second,
//	})
//	json.NewEncoder(os.Stdout).Encode(res)
//
// Every connection logs in first (a type-1 frame with {"devid":…}) and
// awaits the reply, so a gateway can route it.
package loadgen

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"syscall"
	"time"
)

// Modes.
const (
	Hold     = "hold"     // Devices idle connections after login + one heartbeat
	Churn    = "churn"    // connect, login, await reply, close; Concurrency at once
	Pingpong = "pingpong" // Concurrency devices: small frame, await echo, repeat
	Bulk     = "bulk"     // Concurrency connections: large frames both ways
)

// Config says what load to run. Zero values take the defaults given per
// field.
type Config struct {
	// Mode is Hold, Churn, Pingpong or Bulk. Required.
	Mode string

	// Targets are host:port addresses; device i dials Targets[i%len]. With
	// one gateway there is one target; straight at backends, one per backend.
	Targets []string

	// Devices is how many connections Hold opens. If zero, 1000.
	Devices int

	// Concurrency is how many connections run at once (Hold: dials in
	// flight). If zero, 64.
	Concurrency int

	// Duration is how long Churn, Pingpong and Bulk measure. If zero, 5s.
	Duration time.Duration

	// Interval paces Pingpong: each device sends a frame every Interval
	// (open loop, so RTT is the added delay rather than queueing at
	// saturation). If zero, back to back.
	Interval time.Duration

	// Sources is how many loopback source addresses the dials spread over
	// (127.S.x.y from SourceBase on); 1 means one address. If zero, the OS
	// picks (127.0.0.1 for a loopback target).
	Sources int

	// SourceBase is the second octet of the source addresses. If zero, 10.
	// Separate load processes should use separate bases.
	SourceBase int

	// FirstDevice is the index of the first device id, so several load
	// processes use distinct ids.
	FirstDevice int

	// Prefix starts every device id. If empty, "dev-".
	Prefix string

	// FrameSize is the body size of Bulk frames. If zero, 4090 (the demo
	// backend's default cap of 4096 bytes a frame, header included).
	FrameSize int

	// Timeout bounds each dial and each request/reply exchange. If zero, 5s.
	Timeout time.Duration

	// StormWait bounds Result.AwaitStorm of a Storm run: how long after
	// the first drop to wait for every device to be back. If zero,
	// DefaultStormWait.
	StormWait time.Duration

	// MaxFailures stops Hold from dialling after this many failed devices.
	// If zero, 1000. If negative, never.
	MaxFailures int
}

func (c Config) withDefaults() Config {
	if c.Devices <= 0 {
		c.Devices = 1000
	}
	if c.Concurrency <= 0 {
		c.Concurrency = 64
	}
	if c.Duration <= 0 {
		c.Duration = 5 * time.Second
	}
	if c.SourceBase <= 0 {
		c.SourceBase = 10
	}
	if c.Prefix == "" {
		c.Prefix = "dev-"
	}
	if c.FrameSize <= 0 {
		c.FrameSize = 4090
	}
	if c.Timeout <= 0 {
		c.Timeout = 5 * time.Second
	}
	if c.StormWait <= 0 {
		c.StormWait = DefaultStormWait
	}
	if c.MaxFailures == 0 {
		c.MaxFailures = 1000
	}
	return c
}

// Validate reports the first unusable setting.
func (c Config) Validate() error {
	switch {
	case c.Mode != Hold && c.Mode != Churn && c.Mode != Pingpong && c.Mode != Bulk && c.Mode != Storm:
		return fmt.Errorf("loadgen: mode %q: want hold, churn, pingpong, bulk or storm", c.Mode)
	case len(c.Targets) == 0:
		return errors.New("loadgen: no target")
	case c.FrameSize > 0xFFFF:
		return fmt.Errorf("loadgen: frame size %d over the u16 length field", c.FrameSize)
	case c.Sources < 0 || c.Sources > 250*250:
		return fmt.Errorf("loadgen: sources %d out of range 0..62500", c.Sources)
	case c.SourceBase < 0 || c.SourceBase > 255:
		return fmt.Errorf("loadgen: source base %d out of range 1..255", c.SourceBase)
	}
	return nil
}

// deviceID is the id of device i.
func (c *Config) deviceID(i int) string {
	s := strconv.Itoa(c.FirstDevice + i)
	for len(s) < 6 {
		s = "0" + s
	}
	return c.Prefix + s
}

// target is the address device i dials.
func (c *Config) target(i int) string { return c.Targets[i%len(c.Targets)] }

// dialer returns the dialer of device i: bound to its source address when
// Sources is set.
func (c *Config) dialer(i int) *net.Dialer {
	d := &net.Dialer{Timeout: c.Timeout}
	if c.Sources > 0 {
		s := i % c.Sources
		ip := net.IPv4(127, byte(c.SourceBase), byte(s/250), byte(s%250+1))
		d.LocalAddr = &net.TCPAddr{IP: ip}
		d.Control = bindNoPort
	}
	return d
}

// ipBindAddressNoPort is Linux's IP_BIND_ADDRESS_NO_PORT (not in package
// syscall): bind picks the address only and connect picks the port, so
// ports are shared across destinations and TIME_WAIT ports are reused as
// for an unbound dial. Without it, churn from bound addresses stalls on
// ports held in TIME_WAIT.
const ipBindAddressNoPort = 24

func bindNoPort(_, _ string, rc syscall.RawConn) error {
	var serr error
	err := rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, ipBindAddressNoPort, 1)
	})
	if err != nil {
		return err
	}
	return serr
}

// Run runs cfg.Mode and returns its result. Failures are counted in the
// Result; the error is non-nil for a bad Config, or when ctx ends first.
// For Hold and Storm, Run returns with the connections open: call
// Result.Release (Storm: after Result.AwaitStorm).
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	var (
		r   *Result
		err error
	)
	switch cfg.Mode {
	case Hold:
		r, err = runHold(ctx, &cfg)
	case Storm:
		r, err = runStorm(ctx, &cfg)
	case Churn:
		r, err = runChurn(ctx, &cfg)
	case Pingpong:
		r, err = runPingpong(ctx, &cfg)
	case Bulk:
		r, err = runBulk(ctx, &cfg)
	}
	if r != nil {
		r.Mode = cfg.Mode
		r.Targets = cfg.Targets
		r.Concurrency = cfg.Concurrency
	}
	return r, err
}
