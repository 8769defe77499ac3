package config

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
)

// Dial is how backends are dialled.
type Dial struct {
	// SourceAddrs are local addresses (on this host) backend dials bind,
	// in turn per backend; each adds about a port range of connections per
	// backend port. Default: none, the kernel picks the source. All of one
	// family, the family of the backends.
	SourceAddrs []string `yaml:"sourceAddrs"`
}

// MaxSourceAddrs bounds dial.sourceAddrs.
const MaxSourceAddrs = 256

// MaxBackendAddrs bounds a static backend's addrs (as the registry bounds
// a registered one's).
const MaxBackendAddrs = 64

// ErrSourceFamily: dial.sourceAddrs cannot reach a backend of the other
// family.
var ErrSourceFamily = errors.New("dial.sourceAddrs and the backend are of different address families")

// Sources parses dial.sourceAddrs.
func (d Dial) Sources() ([]netip.Addr, error) {
	if len(d.SourceAddrs) > MaxSourceAddrs {
		return nil, fmt.Errorf("dial.sourceAddrs: %d addresses, at most %d", len(d.SourceAddrs), MaxSourceAddrs)
	}
	out := make([]netip.Addr, 0, len(d.SourceAddrs))
	for i, s := range d.SourceAddrs {
		a, err := netip.ParseAddr(s)
		switch {
		case err != nil:
			return nil, fmt.Errorf("dial.sourceAddrs[%d] %q: not an IP address", i, s)
		case a.Zone() != "":
			return nil, fmt.Errorf("dial.sourceAddrs[%d] %q: no zone, please", i, s)
		case a.IsUnspecified() || a.IsMulticast():
			return nil, fmt.Errorf("dial.sourceAddrs[%d] %q: not a unicast address of this host", i, s)
		case slices.Contains(out, a.Unmap()):
			return nil, fmt.Errorf("dial.sourceAddrs[%d] %q: listed twice", i, s)
		case len(out) > 0 && out[0].Is4() != a.Unmap().Is4():
			return nil, fmt.Errorf("dial.sourceAddrs[%d] %q: mixes IPv4 and IPv6", i, s)
		}
		out = append(out, a.Unmap())
	}
	return out, nil
}

// validateDial checks dial.sourceAddrs, and their family against the
// static backends given as IP addresses (names and etcd backends are
// resolved or registered later: a dial of the other family passes the
// sources over and lets the kernel pick).
func (c *Config) validateDial() error {
	srcs, err := c.Dial.Sources()
	if err != nil || len(srcs) == 0 {
		return err
	}
	for i, b := range c.Backends {
		addr, addrs, err := b.addrs(i)
		if err != nil {
			return err
		}
		if addrs == nil {
			addrs = []string{addr}
		}
		for _, a := range addrs {
			ap, err := netip.ParseAddrPort(a)
			if err != nil {
				continue // a host name
			}
			if ap.Addr().Unmap().Is4() != srcs[0].Is4() {
				return fmt.Errorf("backends[%d] %s, dial.sourceAddrs %s: %w", i, a, srcs[0], ErrSourceFamily)
			}
		}
	}
	return nil
}

// addrs is the static backend's primary address (addr, or the first of
// addrs) and all of them (addr first, each once; nil for one), checked.
func (b Backend) addrs(i int) (string, []string, error) {
	if len(b.Addrs) == 0 {
		return b.Addr, nil, checkDial(fmt.Sprintf("backends[%d].addr", i), b.Addr)
	}
	if len(b.Addrs) > MaxBackendAddrs {
		return "", nil, fmt.Errorf("backends[%d].addrs: %d addresses, at most %d", i, len(b.Addrs), MaxBackendAddrs)
	}
	var all []string
	if b.Addr != "" {
		if err := checkDial(fmt.Sprintf("backends[%d].addr", i), b.Addr); err != nil {
			return "", nil, err
		}
		all = append(all, b.Addr)
	}
	for j, a := range b.Addrs {
		if err := checkDial(fmt.Sprintf("backends[%d].addrs[%d]", i, j), a); err != nil {
			return "", nil, err
		}
		if !slices.Contains(all, a) {
			all = append(all, a)
		}
	}
	if len(all) == 1 {
		return all[0], nil, nil
	}
	return all[0], all, nil
}
