package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/devgate/devgate/internal/opt"
	"github.com/devgate/devgate/pkg/frame"
)

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = errors.New("proxy: server closed")

// Proxy routes device connections to the backend that owns their key.
// Options are fields; set them before the first Serve.
type Proxy struct {
	// Source gives the ring each new connection is routed on. Required.
	Source RingSource

	// Matcher finds the key in the first frame(s). If nil, the zero
	// Matcher: the DESIGN.md 6-byte header and the JSON field "devid".
	Matcher *frame.Matcher

	// Logger receives one line per event; bad-input lines are sampled.
	// If nil, nothing is logged.
	Logger *zap.Logger

	// PrereadTimeout bounds the time a client has to send its key frame.
	// If zero, 10s.
	PrereadTimeout time.Duration

	// DialTimeout bounds each dial to a backend. If zero, 3s.
	DialTimeout time.Duration

	// MaxTries is how many distinct owners are dialled, in ring order,
	// before the connection is refused. If zero, 3.
	MaxTries int

	// MaxConns caps open connections; more are accepted and closed at once.
	// If zero, 100000. If negative, no limit. Either way it is lowered at
	// start when RLIMIT_NOFILE cannot hold that many and FDReserve more.
	MaxConns int

	// FDReserve is how many file descriptors connections must leave free
	// for the admin port, etcd and logs (fdbudget.go). If zero, 128. If
	// negative, none.
	FDReserve int

	// KeepAlive is the TCP keepalive idle time on both sides. If zero, 30s.
	// If negative, keepalive is left as the system has it.
	KeepAlive time.Duration

	// DeviceCacheSize bounds the devices remembered for the stickiness
	// metric, duplicate-login replacement and flap counts (at least
	// Flap.Devices while Flap is on). If zero, 100000.
	DeviceCacheSize int

	// MaxConnsPerIP caps open connections from one source address (the
	// device's, from the PROXY header when there is one). If zero, 10000:
	// loose enough for carrier NAT and for a balancer that hides device
	// addresses; tighten it when the gateway sees real ones. If negative,
	// no limit.
	MaxConnsPerIP int

	// AcceptRatePerIP caps new connections per second from one source
	// address, with bursts of AcceptBurstPerIP (if zero, twice the rate).
	// If zero, 1000. If negative, no limit.
	AcceptRatePerIP  float64
	AcceptBurstPerIP int

	// IdleTimeout closes a proxied connection when nothing flowed either
	// way for this long. If zero, none: heartbeats are the backend's
	// business, and TCP keepalive finds dead peers.
	IdleTimeout time.Duration

	// ClientFinTimeout bounds a half-closed pair after the device's FIN
	// (HAProxy's timeout client-fin): once nothing has moved for this long
	// (checked every period, so within twice it), both sides are closed
	// and counted as client_fin_timeout, so a backend that never closes
	// does not keep it in CLOSE-WAIT for good. ServerFinTimeout is the
	// same after the backend's FIN (server_fin_timeout). If zero, 30s. If
	// negative, none.
	ClientFinTimeout time.Duration
	ServerFinTimeout time.Duration

	// TrustedProxies are the networks (the L4 balancer) allowed to send a
	// PROXY protocol v1/v2 header; their connections must start with one
	// unless ProxyProtocolOptional. A header from any other address is
	// refused. If empty, no header is accepted or looked for.
	TrustedProxies        []netip.Prefix
	ProxyProtocolOptional bool

	// SendProxyV2 writes a PROXY v2 header with the device's address to
	// every backend before any other byte (Netty: HAProxyMessageDecoder).
	// A backend whose registration has meta "proxy": "v2" gets one anyway.
	SendProxyV2 bool

	// TLS, if set, terminates TLS on device connections before the
	// preread; the handshake counts against PrereadTimeout. See
	// CertReloader for rotation without restart.
	TLS *tls.Config

	// BackendTLS, if set, dials backends over TLS.
	BackendTLS *tls.Config

	// KeepDuplicates keeps a device's older connection open when it logs in
	// again through this replica. By default the older one is closed.
	KeepDuplicates bool

	// Goroutines runs every connection on goroutines (splicing between
	// TCP sockets) instead of the event loops. By default, on Linux,
	// connections run on a few epoll loops (one per GOMAXPROCS), so an
	// idle device costs under 1 KB and its two sockets (17 KB and 6 fds
	// with goroutines and splice). The loops also read the key frame and
	// dial the backend unless a PROXY header, TLS or a custom Dial is
	// configured (those steps then run in a goroutine). The loops are not
	// used with TLS, BackendTLS, IdleTimeout, a Dial that does not return a
	// *net.TCPConn, or off Linux. Bulk transfers on the loops go through a
	// 64 KiB buffer per loop instead of splice.
	Goroutines bool

	// OnPreread, if set, is called with the time each client took to send
	// its key frame (or to fail to).
	OnPreread func(time.Duration)

	// Rehome moves live devices to their new owner instead of closing
	// them (rehome.go). Off by default.
	Rehome Rehome

	// OnMove, if set, is called as each move ends, with how long the
	// device was paused (from the request to the end). It runs on an event
	// loop: it must not block.
	OnMove func(cause Cause, result MoveResult, pause time.Duration)

	// Admission paces new connections per backend, fleet-wide, with slow
	// start (pacing.go). Off by default.
	Admission Admission

	// OnAdmissionWait, if set, is called with how long each connection
	// that had to wait for its backend's turn waited (turn or timeout).
	// It may run on an event loop: it must not block.
	OnAdmissionWait func(time.Duration)

	// Eject skips a backend whose dials keep failing (eject.go).
	Eject Eject

	// Flap holds, then refuses, devices that log in too often (flap.go).
	Flap Flap

	// EvictNotice, if set, is written to a device before it is evicted
	// (notice.go).
	EvictNotice EvictNotice

	// Access writes a line per connection that ends (access.go); nil: none.
	Access *AccessLog

	// Dial opens a connection to a backend. If nil, a net.Dialer is used.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)

	// SourceAddrs are the local addresses backend dials bind, in turn per
	// backend (dialsrc.go): each adds a port range per backend address.
	// If empty, the kernel picks the source. Ignored by a custom Dial.
	SourceAddrs []netip.Addr

	initOnce sync.Once
	log      *zap.Logger
	badLog   *zap.Logger // sampled: hostile clients must not flood the log
	devices  *deviceCache
	perIP    *ipLimiter
	table    connTable
	stats    counters
	loops    evLoops
	connCap  int64 // MaxConns within the descriptor budget (-1: none)

	rehomeFraming [2]frame.Config // by direction, when moves are on (initRehome)
	probes        lostProbes
	pace          pacers
	ejects        ejector
	paths         dialPaths
	flaps         flapCounter
	notices       noticeCounts
	acceptLog

	mu       sync.Mutex
	closing  bool // Shutdown or Close: for good
	stopped  bool // StopAccepting until ResumeAccepting; also when closing
	serves   map[*serving]struct{}
	inherit  map[net.Listener]bool // made by Listen: accepted sockets have keepalive set
	prereads map[net.Conn]struct{}
	stopCh   chan struct{} // closed by StopAccepting; a new one after ResumeAccepting
	closeCh  chan struct{} // closed by Shutdown
	resumeMu sync.Mutex    // one ResumeAccepting at a time
	wg       sync.WaitGroup
}

func (p *Proxy) init() {
	p.initOnce.Do(func() {
		p.log = p.Logger
		if p.log == nil {
			p.log = zap.NewNop()
		}
		p.badLog = p.log.WithOptions(zap.WrapCore(func(c zapcore.Core) zapcore.Core {
			return zapcore.NewSamplerWithOptions(c, time.Second, 5, 1000)
		}))
		if p.Matcher == nil {
			p.Matcher = &frame.Matcher{} // DESIGN.md defaults: 6-byte header, "devid"
		}
		p.devices = newDeviceCache(p.deviceCacheSize())
		p.perIP = newIPLimiter(opt.OrNone(p.MaxConnsPerIP, DefaultMaxConnsPerIP),
			opt.OrNone(p.AcceptRatePerIP, DefaultAcceptRatePerIP), p.AcceptBurstPerIP, maxTrackedIPs)
		p.serves = make(map[*serving]struct{})
		p.prereads = make(map[net.Conn]struct{})
		p.stopCh = make(chan struct{})
		p.connCap = p.connCapFor(nofileLimit())
		p.closeCh = make(chan struct{})
		p.initRehome()
	})
}

// deviceCacheSize is DeviceCacheSize, grown to Flap.Devices when flapping
// devices are counted: their counts live in the same entries.
func (p *Proxy) deviceCacheSize() int {
	n := opt.Or(p.DeviceCacheSize, DefaultDeviceCacheSize)
	if p.Flap.Max > 0 {
		n = max(n, opt.Or(p.Flap.Devices, DefaultFlapDevices))
	}
	return n
}

// Defaults of the options (a zero field means its default).
const (
	DefaultPrereadTimeout  = 10 * time.Second
	DefaultDialTimeout     = 3 * time.Second
	DefaultMaxTries        = 3
	DefaultMaxConns        = 100000
	DefaultKeepAlive       = 30 * time.Second
	DefaultDeviceCacheSize = 100000
	DefaultMaxConnsPerIP   = 10000
	DefaultAcceptRatePerIP = 1000
	DefaultFinTimeout      = 30 * time.Second // ClientFinTimeout's and ServerFinTimeout's
)

// maxTrackedIPs bounds the addresses the per-address limits remember.
const maxTrackedIPs = 1 << 20

// finTimeouts are the FIN timeouts by the direction that ended (0: the
// device's FIN, 1: the backend's); 0 means none.
func (p *Proxy) finTimeouts() [2]time.Duration {
	f := func(d time.Duration) time.Duration {
		if d < 0 {
			return 0
		}
		return opt.Or(d, DefaultFinTimeout)
	}
	return [2]time.Duration{f(p.ClientFinTimeout), f(p.ServerFinTimeout)}
}

func (p *Proxy) prereadTimeout() time.Duration {
	return opt.Or(p.PrereadTimeout, DefaultPrereadTimeout)
}

func (p *Proxy) dialTimeout() time.Duration { return opt.Or(p.DialTimeout, DefaultDialTimeout) }

func (p *Proxy) maxTries() int { return opt.Or(p.MaxTries, DefaultMaxTries) }

func (p *Proxy) maxConns() int64 {
	switch {
	case p.MaxConns < 0:
		return -1
	case p.MaxConns == 0:
		return DefaultMaxConns
	}
	return int64(p.MaxConns)
}

// keepAliveIdle is the keepalive idle time for KeepAlive k (negative:
// leave keepalive as the system has it).
func keepAliveIdle(k time.Duration) time.Duration {
	if k < 0 {
		return -1
	}
	return opt.Or(k, DefaultKeepAlive)
}

func (p *Proxy) isClosing() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closing
}

// Shutdown stops accepting, then waits for open connections to end. When
// ctx expires first, it closes the rest and returns ctx.Err().
func (p *Proxy) Shutdown(ctx context.Context) error {
	p.init()
	p.mu.Lock()
	p.stopLocked()
	if !p.closing {
		p.closing = true
		close(p.closeCh)
	}
	p.mu.Unlock()
	done := make(chan struct{})
	go func() { p.wg.Wait(); close(done) }()
	select {
	case <-done:
		p.loops.stop() // no connection is left for them
		return nil
	case <-ctx.Done():
	}
	p.cutAll(ReasonShutdown)
	<-done
	p.loops.stop()
	return ctx.Err()
}

// Close stops accepting and closes every connection at once.
func (p *Proxy) Close() error {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := p.Shutdown(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// cutAll closes every connection: Shutdown's deadline passed.
func (p *Proxy) cutAll(reason Reason) {
	p.mu.Lock()
	for c := range p.prereads {
		c.Close()
	}
	p.mu.Unlock()
	p.loops.refuseUnrouted()
	for _, c := range p.table.all() { // moving ones too: byID leaves them out
		c.close(reason)
	}
}

// Stats returns a copy of the counters. The byte counts include open
// connections (it walks them: call it at scrape rates, not per packet).
func (p *Proxy) Stats() Stats {
	s := p.stats.snapshot()
	in, out := p.bytesCopied()
	s.BytesIn += in
	s.BytesOut += out
	return s
}

// Conns returns the number of proxied connections per backend id.
func (p *Proxy) Conns() map[string]int { return p.table.counts() }

// Evict closes up to n proxied connections to backend id (n <= 0: all of
// them; an empty id: of any backend), counted as closed with reason
// "evicted_<cause>", and returns how many it closed.
func (p *Proxy) Evict(id string, n int, cause Cause) int {
	return p.evict(p.table.byID(id, n), cause)
}

// EvictMisplaced closes up to n connections (n <= 0: all) whose device the
// current ring now gives to another backend, as after a scale-out.
func (p *Proxy) EvictMisplaced(n int, cause Cause) int {
	return p.evict(p.misplaced(n), cause)
}

// CountMisplaced counts the connections EvictMisplaced would close.
func (p *Proxy) CountMisplaced() int { return len(p.misplaced(0)) }

func (p *Proxy) misplaced(n int) []*conn {
	r := p.Source.Ring()
	if r == nil || r.Len() == 0 {
		return nil
	}
	bs := r.Backends()
	return p.table.filter(n, func(c *conn) bool {
		return bs[r.Lookup([]byte(c.device))].ID != c.backendID
	})
}

// Relocate moves up to n connections of backend id (n <= 0: all; an empty
// id: of any backend) to the owner the ring gives each device now, where
// Rehome is enabled and that owner opts in, and evicts the others for
// cause. It returns how many it began to move or evicted (what a pace
// counts); tally, if not nil, counts how each ends.
func (p *Proxy) Relocate(id string, n int, cause Cause, tally *MoveTally) int {
	return p.relocate(p.table.byID(id, n), cause, tally)
}

// RelocateMisplaced is Relocate for the connections whose device the ring
// now gives to another backend (EvictMisplaced's).
func (p *Proxy) RelocateMisplaced(n int, cause Cause, tally *MoveTally) int {
	return p.relocate(p.misplaced(n), cause, tally)
}

// Moving is the number of moves in progress.
func (p *Proxy) Moving() int64 { return p.stats.moving.Load() }

// evict closes cs and counts only the ones it closed first: a connection
// already closing (evicted, replaced, gone) is neither closed nor counted
// twice, so a paced eviction's count and pace are real.
func (p *Proxy) evict(cs []*conn, cause Cause) int {
	n := 0
	for _, c := range cs {
		if c.close(Evicted(cause)) {
			n++
		}
	}
	return n
}

// Proxied is the number of connections routed to a backend and open now.
func (p *Proxy) Proxied() int64 { return p.stats.proxied.Load() }

func (p *Proxy) String() string {
	return fmt.Sprintf("proxy(active=%d)", p.stats.active.Load())
}
