package config

import (
	"errors"
	"fmt"
	"time"

	"github.com/devgate/devgate/pkg/frame"
)

// Rehome moves live devices to their new backend on drain, rebalance and
// backend loss instead of closing their connection (docs/DESIGN.md,
// "Moving a live device"). Only a new owner registered with the meta
// rehome=login receives moved devices; others are evicted as without it.
//
//	rehome: {enabled: true, timeout: 5s, maxBuffered: 65536, swallowReply: true, drainGrace: 1s}
type Rehome struct {
	Enabled      *bool    `yaml:"enabled"`      // default false (serve), true (devgate dev)
	Timeout      Duration `yaml:"timeout"`      // longest pause of one move; default 5s
	MaxBuffered  int      `yaml:"maxBuffered"`  // device bytes held during a move; default 65536
	SwallowReply *bool    `yaml:"swallowReply"` // drop the new owner's answer to the replayed login; default true
	DrainGrace   Duration `yaml:"drainGrace"`   // the old owner may answer this long after its half-close; default 1s
	// ReplyFrame is the framing of backend to device frames, when it
	// differs from frame (the device to backend one). Default: frame.
	ReplyFrame *ReplyFrame `yaml:"replyFrame"`
}

// ReplyFrame has the fields of Frame; a type of its own so that an unknown
// key in it is reported under rehome.replyFrame.
type ReplyFrame Frame

// Defaults and bounds of the rehome section (the proxy's own defaults).
const (
	DefaultRehomeTimeout     = 5 * time.Second
	DefaultRehomeMaxBuffered = 64 << 10
	DefaultRehomeDrainGrace  = time.Second
	// MaxRehomeBuffered bounds maxBuffered: it is held per device in a
	// move, and a fleet-wide drain moves many at once.
	MaxRehomeBuffered = 64 << 20
)

// Rebalance is the automatic rebalance: after a backend joins the ring or
// comes back, each replica moves (or evicts) its misplaced devices to their
// owner at its share of perSecond, so the fleet converges without an
// operator's `ctl rebalance`.
type Rebalance struct {
	Auto      *bool   `yaml:"auto"`      // default false (serve), true (devgate dev)
	PerSecond float64 `yaml:"perSecond"` // fleet-wide pace; default DefaultRebalancePerSecond
}

// DefaultRebalancePerSecond is rebalance.perSecond's default, the admin
// API's default pace (admin.DefaultPace).
const DefaultRebalancePerSecond = 50

// MaxRebalancePerSecond is the highest pace accepted, as for a drain.
const MaxRebalancePerSecond = 1e6

// On reports whether moves are enabled.
func (r Rehome) On() bool { return r.Enabled != nil && *r.Enabled }

// SwallowOn is SwallowReply or its default (true).
func (r Rehome) SwallowOn() bool { return r.SwallowReply == nil || *r.SwallowReply }

// TimeoutOr is Timeout or its default.
func (r Rehome) TimeoutOr() time.Duration { return orDuration(r.Timeout, DefaultRehomeTimeout) }

// DrainGraceOr is DrainGrace or its default.
func (r Rehome) DrainGraceOr() time.Duration {
	return orDuration(r.DrainGrace, DefaultRehomeDrainGrace)
}

// MaxBufferedOr is MaxBuffered or its default.
func (r Rehome) MaxBufferedOr() int {
	if r.MaxBuffered == 0 {
		return DefaultRehomeMaxBuffered
	}
	return r.MaxBuffered
}

func orDuration(d Duration, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return time.Duration(d)
}

// ReplyFrameConfig is the framing of the backend to device direction: the
// replyFrame section, else the device's (frame).
func (c *Config) ReplyFrameConfig() (frame.Config, error) {
	if c.Rehome.ReplyFrame == nil {
		return c.Frame.FrameConfig()
	}
	return Frame(*c.Rehome.ReplyFrame).frameConfig("rehome.replyFrame")
}

// AutoOn reports whether the automatic rebalance is on.
func (r Rebalance) AutoOn() bool { return r.Auto != nil && *r.Auto }

// PerSecondOr is PerSecond or its default.
func (r Rebalance) PerSecondOr() float64 {
	if r.PerSecond == 0 {
		return DefaultRebalancePerSecond
	}
	return r.PerSecond
}

func (c *Config) validateRehome() error {
	r := c.Rehome
	switch {
	case r.Timeout < 0 || r.DrainGrace < 0:
		return errors.New("rehome: timeout and drainGrace must not be negative")
	case r.DrainGraceOr() >= r.TimeoutOr():
		return fmt.Errorf("rehome.drainGrace %s must be shorter than rehome.timeout %s: the grace is part of a move's pause",
			r.DrainGraceOr(), r.TimeoutOr())
	case r.MaxBuffered < 0 || r.MaxBuffered > MaxRehomeBuffered:
		return fmt.Errorf("rehome.maxBuffered %d: want 0 (default %d) up to %d bytes", r.MaxBuffered, DefaultRehomeMaxBuffered, MaxRehomeBuffered)
	}
	fc, err := c.Frame.FrameConfig()
	if err != nil {
		return err
	}
	if n := r.MaxBufferedOr(); n < fc.MaxFrameLength {
		return fmt.Errorf("rehome.maxBuffered %d is less than frame.maxFrameLength %d: a whole device frame must fit", n, fc.MaxFrameLength)
	}
	if _, err := c.ReplyFrameConfig(); err != nil {
		return err
	}
	if p := c.Rebalance.PerSecond; p < 0 || p > MaxRebalancePerSecond {
		return fmt.Errorf("rebalance.perSecond %v: want 0 (default %d) up to %g", p, DefaultRebalancePerSecond, float64(MaxRebalancePerSecond))
	}
	return nil
}
