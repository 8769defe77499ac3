//go:build linux

package netpoll

import (
	"net/netip"
	"os"
	"syscall"
	"unsafe"
)

// ipBindAddressNoPort is IP_BIND_ADDRESS_NO_PORT (linux/in.h, every arch):
// a bind to port 0 then reserves no port; connect picks one for the whole
// 4-tuple, so one source address serves about a port range per backend
// address instead of a port range in all.
const ipBindAddressNoPort = 24

// SetBindNoPort sets IP_BIND_ADDRESS_NO_PORT on fd (net.Dialer.Control
// binds LocalAddr after it).
func SetBindNoPort(fd int) error {
	if err := setsockoptInt(fd, syscall.IPPROTO_IP, ipBindAddressNoPort, 1); err != nil {
		return os.NewSyscallError("setsockopt", err)
	}
	return nil
}

// bindNoPort binds fd to lsa's address with IP_BIND_ADDRESS_NO_PORT, so
// the port is chosen at connect for the whole 4-tuple.
func bindNoPort(fd int, lsa *rawSockaddr) error {
	if err := SetBindNoPort(fd); err != nil {
		return err
	}
	_, _, e := syscall.RawSyscall(syscall.SYS_BIND, uintptr(fd), uintptr(unsafe.Pointer(&lsa.v6)), uintptr(lsa.len))
	if e != 0 {
		return os.NewSyscallError("bind", e)
	}
	return nil
}

// CheckSource binds a throwaway socket to src (no port): an error says src
// is not an address of this host (EADDRNOTAVAIL) or not usable. Source
// addresses are configured literals: no zones.
func CheckSource(src netip.Addr) error {
	ip := src.Unmap()
	family := syscall.AF_INET
	switch {
	case ip.Is4():
	case ip.Is6() && ip.Zone() == "":
		family = syscall.AF_INET6
	default:
		return os.NewSyscallError("connect", syscall.EAFNOSUPPORT)
	}
	var lsa rawSockaddr
	lsa.set(netip.AddrPortFrom(ip, 0), 0)
	fd, err := syscall.Socket(family, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, syscall.IPPROTO_TCP)
	if err != nil {
		return os.NewSyscallError("socket", err)
	}
	defer Close(fd)
	return bindNoPort(fd, &lsa)
}
