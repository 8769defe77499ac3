package config

import (
	"fmt"
	"time"
)

// Admission paces new connections per backend, fleet-wide (docs/limits.md,
// "Login pacing"): a backend takes at most loginsPerSecond new connections
// (its registration meta loginsPerSecond wins), split over the live
// gateway replicas; a device over the pace waits in the gateway up to
// maxWait, then is refused (admission_timeout). A backend that joins ramps
// from 10% to 100% of its pace over slowStart (meta slowStart wins).
//
//	admission: {loginsPerSecond: 100, maxWait: 30s, slowStart: 60s}
type Admission struct {
	LoginsPerSecond float64          `yaml:"loginsPerSecond"` // fleet-wide, per backend; default 0: none (unpaced)
	MaxWait         Duration         `yaml:"maxWait"`         // default 30s
	SlowStart       *Duration        `yaml:"slowStart"`       // default 60s; 0s: none
	AdmissionGuard  `yaml:",inline"` // eject, flap (admission_eject.go)
}

// Defaults and bounds of the admission section (the proxy's defaults).
const (
	DefaultAdmissionMaxWait   = 30 * time.Second
	DefaultAdmissionSlowStart = 60 * time.Second
	MaxLoginsPerSecond        = 1e6
	// MaxAdmissionMaxWait bounds maxWait: a device waiting longer has
	// given up long before.
	MaxAdmissionMaxWait = 10 * time.Minute
	// MaxAdmissionSlowStart is the longest ramp, as for the meta.
	MaxAdmissionSlowStart = time.Hour
)

// MaxWaitOr is MaxWait or its default.
func (a Admission) MaxWaitOr() time.Duration { return orDuration(a.MaxWait, DefaultAdmissionMaxWait) }

// SlowStartOr is SlowStart or its default; 0 means none.
func (a Admission) SlowStartOr() time.Duration {
	if a.SlowStart == nil {
		return DefaultAdmissionSlowStart
	}
	return time.Duration(*a.SlowStart)
}

func (c *Config) validateAdmission() error {
	a := c.Admission
	switch {
	case a.LoginsPerSecond < 0 || a.LoginsPerSecond > MaxLoginsPerSecond:
		return fmt.Errorf("admission.loginsPerSecond %v: want 0 (none) up to %g", a.LoginsPerSecond, float64(MaxLoginsPerSecond))
	case a.MaxWaitOr() > MaxAdmissionMaxWait:
		return fmt.Errorf("admission.maxWait %s: want at most %s", a.MaxWaitOr(), MaxAdmissionMaxWait)
	case a.SlowStartOr() > MaxAdmissionSlowStart:
		return fmt.Errorf("admission.slowStart %s: want 0s (none) up to %s", a.SlowStartOr(), MaxAdmissionSlowStart)
	}
	return nil
}
