package main

import (
	"time"

	"github.com/devgate/devgate/pkg/config"
	"github.com/devgate/devgate/pkg/proxy"
)

// guardOptions sets the proxy's passive ejection, flapping-device hold and
// evict notice from the admission and evictNotice sections.
func guardOptions(cfg *config.Config, p *proxy.Proxy) {
	e, f := cfg.Admission.Eject, cfg.Admission.Flap
	p.Eject = proxy.Eject{Failures: e.Failures, MinBackoff: time.Duration(e.MinBackoff), MaxBackoff: time.Duration(e.MaxBackoff)}
	p.Flap = proxy.Flap{Max: f.MaxOr(), Window: time.Duration(f.Window), Delay: time.Duration(f.Delay), Devices: f.Devices}
	if n := cfg.EvictNotice; n != nil {
		lo, hi := n.AfterRange()
		p.EvictNotice = proxy.EvictNotice{Type: byte(*n.Type), Body: n.Body, AfterMin: lo, AfterMax: hi}
	}
}
