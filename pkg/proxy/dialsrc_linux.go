//go:build linux

package proxy

import (
	"errors"
	"fmt"
	"net/netip"
	"syscall"

	"github.com/devgate/devgate/pkg/proxy/internal/netpoll"
	"github.com/devgate/devgate/pkg/ring"
)

// errByName: the path's address is a host name, for a goroutine to dial.
var errByName = errors.New("backend address is a host name")

// connectRaw starts a non-blocking connect to b on its next path (the
// loops), passing to the following paths while they are out of ports. A
// source of the other family than the backend address is passed over; if
// all are, the kernel picks the source. errByName comes with the path to
// dial by name.
func (p *Proxy) connectRaw(b ring.Backend) (int, dialPath, error) {
	n, k := p.pathStart(b)
	var err error
	tried := 0
	for i := range n {
		path := p.pathAt(b, k+uint32(i))
		ap, perr := netip.ParseAddrPort(path.addr)
		if perr != nil {
			return -1, path, errByName
		}
		if path.src.IsValid() && path.src.Unmap().Is4() != ap.Addr().Unmap().Is4() {
			continue
		}
		tried++
		var fd int
		if fd, err = netpoll.ConnectFrom(path.src, ap, keepAliveIdle(p.KeepAlive)); !outOfPorts(err) {
			return fd, path, err
		}
	}
	if tried == 0 { // no source of the backend's family
		path := p.pathAt(b, k)
		path.src = netip.Addr{}
		ap, _ := netip.ParseAddrPort(path.addr)
		fd, err := netpoll.Connect(ap, keepAliveIdle(p.KeepAlive))
		if !outOfPorts(err) {
			return fd, path, err
		}
		return -1, dialPath{}, p.noSourcePort(b, err)
	}
	return -1, dialPath{}, p.noSourcePort(b, err)
}

// bindNoPort is net.Dialer.Control for a dial from a source address: the
// bind reserves no port, connect picks one for the 4-tuple.
func bindNoPort(_, _ string, c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) { serr = netpoll.SetBindNoPort(int(fd)) }); err != nil {
		return err
	}
	return serr
}

// CheckSourceAddrs says which of addrs this host cannot dial from (not one
// of its addresses): every dial from it would be refused as no_source_port.
func CheckSourceAddrs(addrs []netip.Addr) error {
	for _, a := range addrs {
		if err := netpoll.CheckSource(a); err != nil {
			return fmt.Errorf("source address %s is not usable on this host: %w", a, err)
		}
	}
	return nil
}
