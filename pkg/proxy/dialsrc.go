package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/devgate/devgate/pkg/ring"
)

// Dialling from several source addresses, to several ports of a backend.
// One (source address, backend address) pair has about a port range of
// connections (28,000 by default); SourceAddrs and a backend's Addrs
// multiply that. A backend's dials take its paths (source x address) in
// turn, so its connections spread evenly. A path out of local ports
// (EADDRNOTAVAIL) passes to the next; when every path is out the device is
// refused with no_source_port: a local shortage, so the backend is not
// ejected and the device is not sent to another owner.

// ReasonNoSourcePort: refused, no source address had a local port left
// for the owner.
const ReasonNoSourcePort Reason = "no_source_port"

// ErrNoSourcePort: every source address (and backend port) was out of
// local ports.
var ErrNoSourcePort = errors.New("no local port left on any source address")

// noSourcePortLogEvery spaces the no_source_port log lines: the refusals
// in between are summed into the next one.
const noSourcePortLogEvery = 10 * time.Second

// maxPathCounters bounds the per-backend turn counters; past it they all
// start over (a churn of backend ids must not grow the map).
const maxPathCounters = 4096

// SourcePort is a (source address, backend id) pair of SourcePorts.
type SourcePort struct {
	Source  netip.Addr
	Backend string
}

// dialPath is one way to a backend: a source address (zero: the kernel
// picks it) and one of the backend's addresses.
type dialPath struct {
	src  netip.Addr
	addr string
}

// dialPaths hands out each backend's paths in turn.
type dialPaths struct {
	mu      sync.Mutex
	next    map[string]uint32 // backend id: its next path
	short   atomic.Uint64     // no_source_port refusals not logged yet
	loggedN atomic.Int64      // unix nanoseconds of the last log line
}

// backendAddrs is b's addresses: Addrs, or Addr alone.
func backendAddrs(b ring.Backend) []string {
	if len(b.Addrs) > 0 {
		return b.Addrs
	}
	return []string{b.Addr}
}

// pathStart counts b's paths and takes its next turn.
func (p *Proxy) pathStart(b ring.Backend) (n int, k uint32) {
	n = max(len(p.SourceAddrs), 1) * len(backendAddrs(b))
	if n == 1 {
		return 1, 0
	}
	d := &p.paths
	d.mu.Lock()
	if d.next == nil || len(d.next) >= maxPathCounters {
		d.next = make(map[string]uint32)
	}
	k = d.next[b.ID]
	d.next[b.ID] = k + 1
	d.mu.Unlock()
	return n, k
}

// pathAt is b's k-th path: addresses vary first, then sources.
func (p *Proxy) pathAt(b ring.Backend, k uint32) dialPath {
	addrs := backendAddrs(b)
	path := dialPath{addr: addrs[k%uint32(len(addrs))]}
	if ns := uint32(len(p.SourceAddrs)); ns > 0 {
		path.src = p.SourceAddrs[(k/uint32(len(addrs)))%ns]
	}
	return path
}

// noSourcePort is the error of a dial to b that found no local port on any
// path (last is the last path's error); it logs once per
// noSourcePortLogEvery with the refusals since the last line.
func (p *Proxy) noSourcePort(b ring.Backend, last error) error {
	d := &p.paths
	d.short.Add(1)
	now := time.Now().UnixNano()
	if at := d.loggedN.Load(); now-at >= int64(noSourcePortLogEvery) && d.loggedN.CompareAndSwap(at, now) {
		p.log.Warn("no local port left to dial backend: add dial.sourceAddrs or backend ports",
			zap.String("backend", b.ID), zap.Strings("addrs", backendAddrs(b)),
			zap.Int("sources", len(p.SourceAddrs)), zap.Uint64("refused", d.short.Swap(0)), zap.Error(last))
	}
	return fmt.Errorf("dial %s: %w: %w", b.ID, ErrNoSourcePort, last)
}

// outOfPorts: the dial found no local port for its path.
func outOfPorts(err error) bool { return errors.Is(err, syscall.EADDRNOTAVAIL) }

// dialBackend dials b on its next path, passing to the following paths
// while they are out of ports (connSource tells the source it took).
func (p *Proxy) dialBackend(ctx context.Context, b ring.Backend) (net.Conn, error) {
	n, k := p.pathStart(b)
	var err error
	for i := range n {
		var c net.Conn
		if c, err = p.dialFrom(ctx, p.pathAt(b, k+uint32(i))); !outOfPorts(err) {
			return c, err
		}
	}
	return nil, p.noSourcePort(b, err)
}

// dialFrom dials path.addr from path.src (bound with
// IP_BIND_ADDRESS_NO_PORT where the system has it).
func (p *Proxy) dialFrom(ctx context.Context, path dialPath) (net.Conn, error) {
	if p.Dial != nil || !path.src.IsValid() {
		return p.dialer(ctx, "tcp", path.addr)
	}
	d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(path.src, 0)), Control: bindNoPort}
	if p.BackendTLS != nil {
		td := tls.Dialer{NetDialer: &d, Config: p.BackendTLS}
		return td.DialContext(ctx, "tcp", path.addr)
	}
	return d.DialContext(ctx, "tcp", path.addr)
}

// SourcePorts counts the proxied connections per source address and
// backend: the local ports each pair holds. Only with SourceAddrs.
func (p *Proxy) SourcePorts() map[SourcePort]int { return p.table.sourceCounts(p.SourceAddrs) }

// srcIndex is a's place in SourceAddrs plus one (0: none): a conn keeps
// two bytes instead of a netip.Addr (24), which kept it in its size class.
func (p *Proxy) srcIndex(a netip.Addr) uint16 {
	if !a.IsValid() {
		return 0
	}
	a = a.Unmap()
	for i, s := range p.SourceAddrs {
		if s.Unmap() == a {
			return uint16(i + 1)
		}
	}
	return 0
}

// connSource is the source address of backend connection c when
// SourceAddrs are configured (the zero Addr otherwise).
func (p *Proxy) connSource(c net.Conn) netip.Addr {
	if len(p.SourceAddrs) == 0 || c == nil {
		return netip.Addr{}
	}
	if a, ok := c.LocalAddr().(*net.TCPAddr); ok {
		return a.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}
