//go:build linux

package proxy

import (
	"net"
	"sync/atomic"
	"syscall"
)

// spliceMax is the most one splice(2) moves, and the pipe's size (as
// io.Copy's splice uses).
const spliceMax = 1 << 20

// copyCounted copies src to dst until EOF or an error, adding to n as each
// chunk is written. Between two *net.TCPConn it splices through a pipe in
// the kernel as io.Copy does (same system calls, same pipe size), but it
// counts after each chunk instead of once at the end. It honours deadlines
// and returns when either socket is closed.
func copyCounted(dst, src net.Conn, n *atomic.Uint64) (int64, error) {
	sc, ok1 := src.(*net.TCPConn)
	dc, ok2 := dst.(*net.TCPConn)
	if !ok1 || !ok2 {
		return copyBuffered(dst, src, n)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return copyBuffered(dst, src, n)
	}
	wc, err := dc.SyscallConn()
	if err != nil {
		return copyBuffered(dst, src, n)
	}
	var pipe [2]int
	if syscall.Pipe2(pipe[:], syscall.O_CLOEXEC|syscall.O_NONBLOCK) != nil {
		return copyBuffered(dst, src, n) // out of fds: still copies, with a buffer
	}
	defer syscall.Close(pipe[0])
	defer syscall.Close(pipe[1])
	// A smaller pipe works too, with more system calls.
	_, _, _ = syscall.Syscall(syscall.SYS_FCNTL, uintptr(pipe[0]), syscall.F_SETPIPE_SZ, spliceMax)

	const flags = 0x1 | 0x2 // SPLICE_F_MOVE | SPLICE_F_NONBLOCK
	var total int64
	for {
		// The pipe is empty here, so EAGAIN means the socket has nothing.
		var got int64
		var serr error
		err := rc.Read(func(fd uintptr) bool {
			got, serr = spliceRetry(int(fd), pipe[1], spliceMax, flags)
			return serr != syscall.EAGAIN
		})
		if err == nil {
			err = serr
		}
		if err != nil {
			return total, err
		}
		if got == 0 {
			return total, nil // EOF
		}
		for got > 0 {
			var put int64
			err := wc.Write(func(fd uintptr) bool {
				put, serr = spliceRetry(pipe[0], int(fd), int(got), flags)
				return serr != syscall.EAGAIN
			})
			if err == nil {
				err = serr
			}
			if err != nil {
				return total, err
			}
			got -= put
			total += put
			n.Add(uint64(put))
		}
	}
}

func spliceRetry(from, to, max, flags int) (int64, error) {
	for {
		n, err := syscall.Splice(from, nil, to, nil, max, flags)
		if err != syscall.EINTR {
			return n, err
		}
	}
}
