//go:build linux

package netpoll

import (
	"net/netip"
	"syscall"
	"unsafe"
)

// The loops' system calls go to the kernel directly (RawSyscall), without
// the runtime's entersyscall/exitsyscall. Every one is non-blocking, but on
// loopback a connect, write or close runs the peer's side inline and can
// take tens of microseconds: a P marked "in a system call" that long is
// retaken by sysmon, which then polls every 20 us and hands the P to
// another thread. Under churn that was 14% of the gateway's CPU and three
// context switches per connection (docs/benchmarks/analysis.md).

// errno turns a raw call's error number into an error (nil for 0). Small
// Errno values box without allocating.
func errno(e syscall.Errno) error {
	if e == 0 {
		return nil
	}
	return e
}

var zero byte

func bufPtr(b []byte) unsafe.Pointer {
	if len(b) == 0 {
		return unsafe.Pointer(&zero)
	}
	return unsafe.Pointer(&b[0])
}

// Read is read(2) on a non-blocking fd.
func Read(fd int, b []byte) (int, error) {
	n, _, e := syscall.RawSyscall(syscall.SYS_READ, uintptr(fd), uintptr(bufPtr(b)), uintptr(len(b)))
	return int(n), errno(e)
}

// Write is write(2) on a non-blocking fd.
func Write(fd int, b []byte) (int, error) {
	n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, uintptr(fd), uintptr(bufPtr(b)), uintptr(len(b)))
	return int(n), errno(e)
}

// Close is close(2); Linux releases fd even when it reports an error.
func Close(fd int) error {
	_, _, e := syscall.RawSyscall(syscall.SYS_CLOSE, uintptr(fd), 0, 0)
	return errno(e)
}

// Shutdown is shutdown(2).
func Shutdown(fd, how int) error {
	_, _, e := syscall.RawSyscall(syscall.SYS_SHUTDOWN, uintptr(fd), uintptr(how), 0)
	return errno(e)
}

func setsockoptInt(fd, level, name, v int) error {
	x := int32(v)
	_, _, e := syscall.RawSyscall6(syscall.SYS_SETSOCKOPT, uintptr(fd), uintptr(level), uintptr(name),
		uintptr(unsafe.Pointer(&x)), unsafe.Sizeof(x), 0)
	return errno(e)
}

func getsockoptInt(fd, level, name int) (int, error) {
	var x int32
	l := uint32(unsafe.Sizeof(x))
	_, _, e := syscall.RawSyscall6(syscall.SYS_GETSOCKOPT, uintptr(fd), uintptr(level), uintptr(name),
		uintptr(unsafe.Pointer(&x)), uintptr(unsafe.Pointer(&l)), 0)
	return int(x), errno(e)
}

// rawSockaddr is a sockaddr_in or sockaddr_in6 for connect(2).
type rawSockaddr struct {
	v6  syscall.RawSockaddrInet6 // large enough for either; v4 uses its head
	len uint32
}

func (s *rawSockaddr) set(ap netip.AddrPort, scope uint32) {
	port := ap.Port()
	if ip := ap.Addr().Unmap(); ip.Is4() {
		sa := (*syscall.RawSockaddrInet4)(unsafe.Pointer(&s.v6))
		*sa = syscall.RawSockaddrInet4{Family: syscall.AF_INET, Addr: ip.As4()}
		p := (*[2]byte)(unsafe.Pointer(&sa.Port))
		p[0], p[1] = byte(port>>8), byte(port)
		s.len = syscall.SizeofSockaddrInet4
		return
	}
	s.v6 = syscall.RawSockaddrInet6{Family: syscall.AF_INET6, Addr: ap.Addr().As16(), Scope_id: scope}
	p := (*[2]byte)(unsafe.Pointer(&s.v6.Port))
	p[0], p[1] = byte(port>>8), byte(port)
	s.len = syscall.SizeofSockaddrInet6
}

func connect(fd int, sa *rawSockaddr) error {
	_, _, e := syscall.RawSyscall(syscall.SYS_CONNECT, uintptr(fd), uintptr(unsafe.Pointer(&sa.v6)), uintptr(sa.len))
	return errno(e)
}

func accept4(fd, flags int) (int, netip.AddrPort, error) {
	var rsa syscall.RawSockaddrAny
	l := uint32(syscall.SizeofSockaddrAny)
	nfd, _, e := syscall.RawSyscall6(syscall.SYS_ACCEPT4, uintptr(fd), uintptr(unsafe.Pointer(&rsa)),
		uintptr(unsafe.Pointer(&l)), uintptr(flags), 0, 0)
	if e != 0 {
		return -1, netip.AddrPort{}, e
	}
	return int(nfd), rawAddrPort(&rsa), nil
}

func rawAddrPort(rsa *syscall.RawSockaddrAny) netip.AddrPort {
	switch rsa.Addr.Family {
	case syscall.AF_INET:
		sa := (*syscall.RawSockaddrInet4)(unsafe.Pointer(rsa))
		p := (*[2]byte)(unsafe.Pointer(&sa.Port))
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(p[0])<<8|uint16(p[1]))
	case syscall.AF_INET6:
		sa := (*syscall.RawSockaddrInet6)(unsafe.Pointer(rsa))
		p := (*[2]byte)(unsafe.Pointer(&sa.Port))
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), uint16(p[0])<<8|uint16(p[1]))
	}
	return netip.AddrPort{}
}

// epollWait is a non-blocking epoll_pwait (epoll_wait is missing on arm64).
func epollWait(epfd int, events []Event) (int, error) {
	if len(events) == 0 {
		return 0, nil
	}
	n, _, e := syscall.RawSyscall6(syscall.SYS_EPOLL_PWAIT, uintptr(epfd), uintptr(unsafe.Pointer(&events[0])),
		uintptr(len(events)), 0, 0, 0)
	return int(n), errno(e)
}
