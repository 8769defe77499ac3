package proxy

import (
	"sync/atomic"
	"time"

	"github.com/devgate/devgate/internal/opt"
)

// Flapping devices: a device (firmware bug, a reconnect loop) that logs in
// through this replica more than Flap.Max times within Flap.Window is held
// in the gateway for Flap.Delay before its dial. The window is fixed: it
// starts at the device's first counted login and the count starts again
// once it has passed. The first login over the limit in a window is held,
// then dialled (a device a little too eager is only slowed down); every
// later one in the same window is held, then refused with ReasonFlapping
// (the device goes on). Holding costs no goroutine and no backend socket on
// the loops (on the goroutine path it is a timer in the connection's own
// goroutine, which Shutdown ends), and paces a tight loop to one login per Delay without a
// backend ever seeing it. The counts live in the device cache's entries
// (devices.go), which holds at least Flap.Devices devices, so memory is
// bounded at no extra entry per device; a device pushed out simply starts
// counting again.

// Flap configures the hold of flapping devices. The zero value is off
// (the config's admission.flap.max defaults to DefaultFlapMax).
type Flap struct {
	// Max is how many logins of one device a window lets through at once.
	// If zero or negative, devices are never held.
	Max int
	// Window is the counting window; if zero, 60s.
	Window time.Duration
	// Delay is how long a login over Max is held; if zero, 5s.
	Delay time.Duration
	// Devices is the least number of devices counted (the device cache
	// grows to it); if zero, 100000.
	Devices int
}

// Defaults of Flap.
const (
	DefaultFlapMax     = 10 // the config's default for Max
	DefaultFlapWindow  = time.Minute
	DefaultFlapDelay   = 5 * time.Second
	DefaultFlapDevices = 100000
)

// ReasonFlapping: refused; the device logged in too often (Flap).
const ReasonFlapping Reason = "flapping"

// flapVerdict is what a login of a device gets.
type flapVerdict uint8

const (
	flapPass   flapVerdict = iota // dial at once
	flapHold                      // held for Flap.Delay, then dialled
	flapRefuse                    // held for Flap.Delay, then refused
)

type flapCounter struct {
	held     atomic.Uint64 // logins held so far
	holding  atomic.Int64  // logins held now
	refusals atomic.Uint64
}

func (p *Proxy) flapDelay() time.Duration { return opt.Or(p.Flap.Delay, DefaultFlapDelay) }

// flapCheck counts a login of device and says what it gets.
func (p *Proxy) flapCheck(device string) flapVerdict {
	if p.Flap.Max <= 0 {
		return flapPass
	}
	max := int32(p.Flap.Max)
	n := p.devices.countLogin(device, time.Now().UnixNano(), int64(opt.Or(p.Flap.Window, DefaultFlapWindow)), max+2)
	switch {
	case n <= max:
		return flapPass
	case n == max+1:
		return flapHold
	}
	return flapRefuse
}

// flapWait holds a goroutine-path login as flapCheck says: "" to dial,
// else the reason to refuse it with.
func (p *Proxy) flapWait(device string) Reason {
	v := p.flapCheck(device)
	if v == flapPass {
		return ""
	}
	p.flapHeld()
	t := time.NewTimer(p.flapDelay())
	defer t.Stop()
	select {
	case <-t.C:
	case <-p.closeCh:
		p.flaps.holding.Add(-1)
		return ReasonShutdown
	}
	return p.flapRelease(v)
}

func (p *Proxy) flapHeld() {
	p.flaps.held.Add(1)
	p.flaps.holding.Add(1)
}

// flapRelease ends a hold: "" to dial, or ReasonFlapping.
func (p *Proxy) flapRelease(v flapVerdict) Reason {
	p.flaps.holding.Add(-1)
	if v == flapRefuse {
		p.flaps.refusals.Add(1)
		return ReasonFlapping
	}
	return ""
}

// GuardStats counts what ejection and the hold of flapping devices did.
type GuardStats struct {
	FlapHeld      uint64 // logins held so far
	FlapHolding   int64  // logins held now
	FlapRefused   uint64 // logins refused as flapping (also in Stats.Closed)
	EjectedSkips  uint64 // dials skipped because the owner was ejected
	NoticeSent    uint64 // evict notices written (notice.go)
	NoticeSkipped uint64 // evictions without the notice: not at a frame boundary, or not on a loop
}

// GuardStats returns the counters of ejection and flapping devices.
func (p *Proxy) GuardStats() GuardStats {
	return GuardStats{FlapHeld: p.flaps.held.Load(), FlapHolding: p.flaps.holding.Load(),
		FlapRefused: p.flaps.refusals.Load(), EjectedSkips: p.ejects.skips.Load(),
		NoticeSent: p.notices.sent.Load(), NoticeSkipped: p.notices.skipped.Load()}
}
