package config

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// AdmissionGuard is the part of the admission section that guards
// backends and the fleet against reconnect storms on this replica:
// passive ejection of backends whose dials fail, and the hold of devices
// that log in too often (docs/limits.md).
//
//	admission:
//	  eject: {failures: 3, minBackoff: 1s, maxBackoff: 30s}
//	  flap: {max: 10, window: 60s, delay: 5s, devices: 100000}
type AdmissionGuard struct {
	Eject Eject `yaml:"eject"`
	Flap  Flap  `yaml:"flap"`
}

// Eject: consecutive failed dials that eject a backend on this replica,
// and the backoff (doubling from minBackoff to maxBackoff) it stays out.
type Eject struct {
	Failures   int      `yaml:"failures"`   // default 3; -1 turns ejection off
	MinBackoff Duration `yaml:"minBackoff"` // default 1s
	MaxBackoff Duration `yaml:"maxBackoff"` // default 30s
}

// Flap: a device logging in more than max times within window through this
// replica is held delay before its dial, then refused (flapping) if it
// goes on; devices bounds the devices counted.
type Flap struct {
	Max     int      `yaml:"max"`     // default 10; -1 turns the hold off
	Window  Duration `yaml:"window"`  // default 60s
	Delay   Duration `yaml:"delay"`   // default 5s
	Devices int      `yaml:"devices"` // default 100000
}

// EvictNotice is a frame written to a device just before it is evicted
// (drain, rebalance, gateway drain and shutdown), so that a device that
// understands it waits before reconnecting. {{.After}} in the body becomes
// a whole number of seconds drawn from afterMin..afterMax.
//
//	evictNotice: {type: 9, body: '{"reconnectAfter":{{.After}}}', afterMin: 5s, afterMax: 30s}
type EvictNotice struct {
	Type     *int     `yaml:"type"` // required: the message type, 0..255
	Body     string   `yaml:"body"` // required
	AfterMin Duration `yaml:"afterMin"`
	AfterMax Duration `yaml:"afterMax"`
}

// Defaults and bounds of the guard keys (the proxy's own defaults).
const (
	DefaultEjectFailures   = 3
	DefaultEjectMinBackoff = time.Second
	DefaultEjectMaxBackoff = 30 * time.Second
	DefaultFlapMax         = 10
	DefaultFlapWindow      = time.Minute
	DefaultFlapDelay       = 5 * time.Second
	DefaultFlapDevices     = 100000
	// MaxFlapDevices bounds flap.devices (the device cache grows to it, about 190 bytes each).
	MaxFlapDevices = 10_000_000
	// MaxFlapDelay bounds flap.delay: a held login keeps its device socket.
	MaxFlapDelay          = 5 * time.Minute
	DefaultNoticeAfterMin = 5 * time.Second
	DefaultNoticeAfterMax = 30 * time.Second
)

func (c *Config) validateGuard() error {
	e, f := c.Admission.Eject, c.Admission.Flap
	switch {
	case e.Failures < -1:
		return fmt.Errorf("admission.eject.failures %d: want -1 (off), 0 (default %d) or more", e.Failures, DefaultEjectFailures)
	case e.MinBackoff < 0 || e.MaxBackoff < 0:
		return errors.New("admission.eject: minBackoff and maxBackoff must not be negative")
	case orDuration(e.MaxBackoff, DefaultEjectMaxBackoff) < orDuration(e.MinBackoff, DefaultEjectMinBackoff):
		return fmt.Errorf("admission.eject.maxBackoff %s is less than minBackoff %s",
			orDuration(e.MaxBackoff, DefaultEjectMaxBackoff), orDuration(e.MinBackoff, DefaultEjectMinBackoff))
	case f.Max < -1:
		return fmt.Errorf("admission.flap.max %d: want -1 (off), 0 (default %d) or more", f.Max, DefaultFlapMax)
	case f.Window < 0 || f.Delay < 0 || time.Duration(f.Delay) > MaxFlapDelay:
		return fmt.Errorf("admission.flap: window must not be negative, delay 0..%s", MaxFlapDelay)
	case f.Devices < 0 || f.Devices > MaxFlapDevices:
		return fmt.Errorf("admission.flap.devices %d: want 0 (default %d) up to %d", f.Devices, DefaultFlapDevices, MaxFlapDevices)
	}
	return c.validateNotice()
}

func (c *Config) validateNotice() error {
	n := c.EvictNotice
	if n == nil {
		return nil
	}
	switch {
	case n.Type == nil || *n.Type < 0 || *n.Type > 255:
		return errors.New("evictNotice.type: required, 0..255")
	case n.Body == "":
		return errors.New("evictNotice.body: required")
	case strings.Contains(strings.ReplaceAll(n.Body, "{{.After}}", ""), "{{"):
		return errors.New("evictNotice.body: only {{.After}} may be substituted")
	case n.AfterMin < 0 || n.AfterMax < 0:
		return errors.New("evictNotice: afterMin and afterMax must not be negative")
	}
	lo, hi := n.AfterRange()
	if hi < lo {
		return fmt.Errorf("evictNotice.afterMax %s is less than afterMin %s", hi, lo)
	}
	fc, err := c.ReplyFrameConfig()
	if err != nil {
		return err
	}
	body := strings.ReplaceAll(n.Body, "{{.After}}", fmt.Sprint(int64(hi/time.Second)))
	if _, err := fc.Build(byte(*n.Type), []byte(body)); err != nil {
		return fmt.Errorf("evictNotice: %w", err)
	}
	return nil
}

// AfterRange is the notice's wait range with defaults filled in.
func (n EvictNotice) AfterRange() (lo, hi time.Duration) {
	return orDuration(n.AfterMin, DefaultNoticeAfterMin), orDuration(n.AfterMax, DefaultNoticeAfterMax)
}

// MaxOr is Max or its default; -1 when the hold is off.
func (f Flap) MaxOr() int {
	if f.Max == 0 {
		return DefaultFlapMax
	}
	return f.Max
}
