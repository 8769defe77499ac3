//go:build linux

package proxy

import (
	"net"
	"syscall"
)

// rawConnOf is src's raw connection when idleReader can wait on it (a
// *net.TCPConn), else nil.
func rawConnOf(src net.Conn) syscall.RawConn {
	tc, ok := src.(*net.TCPConn)
	if !ok {
		return nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}

// peekReady reports whether fd has a byte, an EOF or an error to read
// (a read would not block). RawConn.Read waits for readiness while it is
// false.
func peekReady(fd uintptr) bool {
	var one [1]byte
	for {
		_, _, err := syscall.Recvfrom(int(fd), one[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		if err != syscall.EINTR {
			return err != syscall.EAGAIN
		}
	}
}
