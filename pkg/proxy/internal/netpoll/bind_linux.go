//go:build linux

package netpoll

import (
	"net/netip"
	"os"
	"syscall"
)

// ipBindAddressNoPort is IP_BIND_ADDRESS_NO_PORT (linux/in.h, every arch):
// a bind to port 0 then reserves no port; connect picks one for the whole
// 4-tuple, so one source address serves about a port range per backend
// address instead of a port range in all.
const ipBindAddressNoPort = 24

// BindNoPort binds fd to the address of lsa (port 0) with
// IP_BIND_ADDRESS_NO_PORT set, as net.Dialer's Control does on the
// goroutine path.
func BindNoPort(fd int, lsa syscall.Sockaddr) error {
	if err := syscall.SetsockoptInt(fd, syscall.IPPROTO_IP, ipBindAddressNoPort, 1); err != nil {
		return os.NewSyscallError("setsockopt", err)
	}
	if err := syscall.Bind(fd, lsa); err != nil {
		return os.NewSyscallError("bind", err)
	}
	return nil
}

// SetBindNoPort sets IP_BIND_ADDRESS_NO_PORT on fd (net.Dialer.Control
// binds LocalAddr after it).
func SetBindNoPort(fd int) error {
	if err := syscall.SetsockoptInt(fd, syscall.IPPROTO_IP, ipBindAddressNoPort, 1); err != nil {
		return os.NewSyscallError("setsockopt", err)
	}
	return nil
}

// sockaddr is ap as a syscall address and its family (IPv4-mapped
// addresses as IPv4, no zones: source addresses are configured literals).
func sockaddr(ap netip.AddrPort) (syscall.Sockaddr, int, error) {
	ip := ap.Addr().Unmap()
	switch {
	case ip.Is4():
		return &syscall.SockaddrInet4{Port: int(ap.Port()), Addr: ip.As4()}, syscall.AF_INET, nil
	case ip.Is6() && ip.Zone() == "":
		return &syscall.SockaddrInet6{Port: int(ap.Port()), Addr: ip.As16()}, syscall.AF_INET6, nil
	}
	return nil, 0, os.NewSyscallError("connect", syscall.EAFNOSUPPORT)
}

// CheckSource binds a throwaway socket to src (no port): an error says src
// is not an address of this host (EADDRNOTAVAIL) or not usable.
func CheckSource(src netip.Addr) error {
	lsa, family, err := sockaddr(netip.AddrPortFrom(src, 0))
	if err != nil {
		return err
	}
	fd, err := syscall.Socket(family, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, syscall.IPPROTO_TCP)
	if err != nil {
		return os.NewSyscallError("socket", err)
	}
	defer syscall.Close(fd)
	return BindNoPort(fd, lsa)
}
