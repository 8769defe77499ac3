package proxy

import "net/netip"

// packedAddr is a netip.AddrPort in 18 bytes instead of 32 (no zone),
// so a connection's address costs the table no size class.
type packedAddr struct {
	ip   [16]byte
	port uint16
}

func packAddr(a netip.AddrPort) packedAddr {
	return packedAddr{ip: a.Addr().As16(), port: a.Port()}
}

func (a packedAddr) addrPort() netip.AddrPort {
	if a == (packedAddr{}) {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(netip.AddrFrom16(a.ip).Unmap(), a.port)
}
