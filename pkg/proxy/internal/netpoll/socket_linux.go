//go:build linux

package netpoll

import (
	"net"
	"net/netip"
	"os"
	"syscall"
	"time"
)

// The socket system calls of the loops: raw non-blocking connects, socket
// options, writes until the socket is full, addresses.

// Connect starts a non-blocking connect to ap with TCP_NODELAY and
// keepalive (idle; none when negative); the loop learns the outcome from
// Out (ConnectError).
func Connect(ap netip.AddrPort, idle time.Duration) (int, error) {
	return ConnectFrom(netip.Addr{}, ap, idle)
}

// ConnectFrom is Connect from the source address src, bound with
// IP_BIND_ADDRESS_NO_PORT (Connect when src is the zero Addr). A source
// with no port left for ap fails with EADDRNOTAVAIL, at bind or connect.
func ConnectFrom(src netip.Addr, ap netip.AddrPort, idle time.Duration) (int, error) {
	var sa, lsa rawSockaddr
	family := syscall.AF_INET
	var scope uint32
	if ip := ap.Addr().Unmap(); !ip.Is4() {
		family = syscall.AF_INET6
		if z := ip.Zone(); z != "" {
			ifi, err := net.InterfaceByName(z)
			if err != nil {
				return -1, err
			}
			scope = uint32(ifi.Index)
		}
	}
	sa.set(ap, scope)
	if src.IsValid() {
		if src.Unmap().Is4() != (family == syscall.AF_INET) {
			return -1, os.NewSyscallError("bind", syscall.EAFNOSUPPORT)
		}
		lsa.set(netip.AddrPortFrom(src, 0), 0)
	}
	fd, err := syscall.Socket(family, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, syscall.IPPROTO_TCP)
	if err != nil {
		return -1, os.NewSyscallError("socket", err)
	}
	if src.IsValid() {
		err = bindNoPort(fd, &lsa)
	}
	if err == nil {
		err = SetSockOpts(fd, idle)
	}
	if err == nil {
		err = connect(fd, &sa)
		if err == syscall.EINPROGRESS || err == syscall.EINTR {
			err = nil
		}
		if err != nil {
			err = os.NewSyscallError("connect", err)
		}
	}
	if err != nil {
		Close(fd)
		return -1, err
	}
	return fd, nil
}

// ConnectError is the outcome of a connect once fd reported events. Out
// without an error or hang-up is a connect that succeeded (Linux raises
// EPOLLERR on a failed one), so only the other outcomes ask for SO_ERROR.
func ConnectError(fd int, events uint32) error {
	if events&Hup == 0 && events&Out != 0 {
		return nil
	}
	soerr, err := getsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_ERROR)
	switch {
	case err != nil:
		return err
	case soerr != 0:
		return syscall.Errno(soerr)
	case events&Hup != 0:
		return syscall.ECONNRESET
	}
	return nil
}

// SetSockOpts sets TCP_NODELAY and keepalive: idle, idle/3 between probes,
// 3 probes; none when idle < 0.
func SetSockOpts(fd int, idle time.Duration) error {
	if err := setsockoptInt(fd, syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1); err != nil {
		return os.NewSyscallError("setsockopt", err)
	}
	if idle < 0 {
		return nil
	}
	secs := func(d time.Duration) int { return max(int((d+time.Second-1)/time.Second), 1) }
	for _, o := range [...][3]int{
		{syscall.SOL_SOCKET, syscall.SO_KEEPALIVE, 1},
		{syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE, secs(idle)},
		{syscall.IPPROTO_TCP, syscall.TCP_KEEPINTVL, secs(idle / 3)},
		{syscall.IPPROTO_TCP, syscall.TCP_KEEPCNT, 3},
	} {
		if err := setsockoptInt(fd, o[0], o[1], o[2]); err != nil {
			return os.NewSyscallError("setsockopt", err)
		}
	}
	return nil
}

// Accept takes one connection waiting on listening fd, non-blocking.
func Accept(fd int) (int, netip.AddrPort, error) {
	return accept4(fd, syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC)
}

// WriteSome writes b to fd until it would block and returns the rest (on
// an error, what was not written).
func WriteSome(fd int, b []byte) ([]byte, error) {
	for len(b) > 0 {
		n, err := Write(fd, b)
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			return b, nil
		case err != nil:
			return b, err
		}
		b = b[n:]
	}
	return nil, nil
}

// RawFD is c's file descriptor; c keeps it open.
func RawFD(c syscall.Conn) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	if err := rc.Control(func(f uintptr) { fd = int(f) }); err != nil {
		return -1, err
	}
	return fd, nil
}

// LocalAddr is fd's local address (the zero address if unknown).
func LocalAddr(fd int) netip.AddrPort {
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		return netip.AddrPort{}
	}
	return sockaddrAddrPort(sa)
}

func sockaddrAddrPort(sa syscall.Sockaddr) netip.AddrPort {
	switch sa := sa.(type) {
	case *syscall.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port))
	case *syscall.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), uint16(sa.Port))
	}
	return netip.AddrPort{}
}
