package proxy

import (
	"net"
	"net/netip"
	"sync"
	"time"
)

// ipLimiter bounds, per source address, the open connections and the rate
// of new ones (a token bucket), so one address cannot take the gateway's
// capacity from everyone else. Its memory is bounded: an address is
// forgotten once it has no connection and a full bucket, and at most
// maxTracked addresses are tracked (new ones beyond that are refused).
type ipLimiter struct {
	maxConns   int     // per address; <= 0 no limit
	rate       float64 // new connections per second per address; <= 0 no limit
	burst      float64
	maxTracked int

	mu    sync.Mutex
	ips   map[netip.Addr]*ipState
	sweep time.Time
}

type ipState struct {
	conns  int
	tokens float64
	last   time.Time
}

// defaultBurstFactor sizes the per-address burst when none is set: a
// device fleet behind one NAT reconnects in waves twice the steady rate.
const defaultBurstFactor = 2

func newIPLimiter(maxConns int, rate float64, burst int, maxTracked int) *ipLimiter {
	if burst <= 0 {
		burst = max(int(defaultBurstFactor*rate), 1)
	}
	return &ipLimiter{maxConns: maxConns, rate: rate, burst: float64(burst), maxTracked: maxTracked,
		ips: make(map[netip.Addr]*ipState)}
}

// acquireIP takes a slot for a new connection from ip under the
// per-address limits: the release to call when it ends (nil when no limit
// is on), or a limitError with the reason it is refused.
func (p *Proxy) acquireIP(ip netip.Addr) (release func(), err error) {
	if !p.perIP.enabled() {
		return nil, nil
	}
	if ok, reason := p.perIP.acquire(ip, time.Now()); !ok {
		return nil, limitError(reason)
	}
	return func() { p.perIP.release(ip) }, nil
}

func (l *ipLimiter) enabled() bool { return l != nil && (l.maxConns > 0 || l.rate > 0) }

// acquire admits a new connection from ip, or says which limit refused it.
func (l *ipLimiter) acquire(ip netip.Addr, now time.Time) (ok bool, reason Reason) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.sweep) > 10*time.Second {
		l.gc(now)
	}
	s := l.ips[ip]
	if s == nil {
		if len(l.ips) >= l.maxTracked {
			l.gc(now)
			if len(l.ips) >= l.maxTracked {
				return false, ReasonRateLimited
			}
		}
		s = &ipState{tokens: l.burst, last: now}
		l.ips[ip] = s
	}
	if l.rate > 0 {
		s.tokens = min(l.burst, s.tokens+now.Sub(s.last).Seconds()*l.rate)
		s.last = now
		if s.tokens < 1 {
			return false, ReasonRateLimited
		}
	}
	if l.maxConns > 0 && s.conns >= l.maxConns {
		return false, ReasonMaxConnsPerIP
	}
	if l.rate > 0 {
		s.tokens--
	}
	s.conns++
	return true, ""
}

func (l *ipLimiter) release(ip netip.Addr) {
	l.mu.Lock()
	if s := l.ips[ip]; s != nil && s.conns > 0 {
		s.conns--
	}
	l.mu.Unlock()
}

// gc forgets addresses with no connection whose bucket has refilled.
func (l *ipLimiter) gc(now time.Time) {
	l.sweep = now
	for ip, s := range l.ips {
		full := l.rate <= 0 || s.tokens+now.Sub(s.last).Seconds()*l.rate >= l.burst
		if s.conns == 0 && full {
			delete(l.ips, ip)
		}
	}
}

// addrIP is the IP of a TCP address; the zero Addr for anything else.
func addrIP(a net.Addr) netip.Addr {
	if ta, ok := a.(*net.TCPAddr); ok {
		if ip, ok := netip.AddrFromSlice(ta.IP); ok {
			return ip.Unmap()
		}
	}
	if ap, err := netip.ParseAddrPort(a.String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}
